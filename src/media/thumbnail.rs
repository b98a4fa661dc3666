//! Thumbnails of images (the `image` crate), made off the async runtime.
//! The sizes offered are the configured ones (`media.thumbnail_sizes`,
//! the spec's list by default); a request gets the best of them (as
//! Synapse picks among its pre-generated thumbnails), made once and kept.
//! Nothing is ever scaled up; EXIF orientation is applied first; images
//! of more than `media.max_image_pixels` are not decoded.

use std::{io::Cursor, path::Path};

use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader, Limits,
    codecs::{gif::GifDecoder, jpeg::JpegEncoder, webp::WebPDecoder},
    imageops::FilterType,
};

pub use crate::config::{ThumbnailMethod as Method, ThumbnailSize as Size};

/// Why no thumbnail.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an image we read, or a broken one.
    Unsupported(String),
    /// More pixels than allowed.
    TooLarge,
}

/// The types thumbnails are made of.
pub fn thumbnailable(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    matches!(essence.as_str(), "image/jpeg" | "image/jpg" | "image/png" | "image/gif" | "image/webp")
}

/// The dimensions a thumbnail of `size` has for a `source`-sized image.
pub fn output_size(source: (u32, u32), size: Size) -> (u32, u32) {
    let (sw, sh) = (u64::from(source.0.max(1)), u64::from(source.1.max(1)));
    let (w, h) = (u64::from(size.width.max(1)), u64::from(size.height.max(1)));
    let (w, h) = match size.method {
        // The largest box of the source's aspect within the size.
        Method::Scale if w * sh < h * sw => (w, (w * sh / sw).max(1)),
        Method::Scale => ((h * sw / sh).max(1), h),
        // The size itself, or, from a smaller image, the largest box of
        // the size's aspect within it (never scaled up).
        Method::Crop if w <= sw && h <= sh => (w, h),
        Method::Crop if w * sh > h * sw => (sw, (sw * h / w).max(1)),
        Method::Crop => ((sh * w / h).max(1), sh),
    };
    (w.min(sw) as u32, h.min(sh) as u32)
}

/// Which configured size serves a request for `wanted` (Synapse's choice
/// among pre-generated thumbnails): of those of the method asked for, one
/// at least as large in a dimension if any, then the nearest in area
/// (and, for crop, in aspect); `None` when none has that method.
pub fn choose(sizes: &[Size], source: (u32, u32), wanted: Size) -> Option<Size> {
    let (dw, dh) = (i64::from(wanted.width), i64::from(wanted.height));
    let candidates: Vec<(Size, (i64, i64))> = sizes
        .iter()
        .filter(|s| s.method == wanted.method)
        .map(|s| {
            let (tw, th) = output_size(source, *s);
            (*s, (i64::from(tw), i64::from(th)))
        })
        .collect();
    let key = |(tw, th): (i64, i64)| {
        let size_q = ((dw - tw) * (dh - th)).abs();
        match wanted.method {
            Method::Crop => {
                let aspect_q = (dw * th - dh * tw).abs();
                let min_q = i64::from(!(dw <= tw && dh <= th));
                (aspect_q, min_q, size_q)
            }
            Method::Scale => (0, 0, size_q),
        }
    };
    let large_enough: Vec<&(Size, (i64, i64))> =
        candidates.iter().filter(|(_, (tw, th))| *tw >= dw || *th >= dh).collect();
    let pool: Vec<&(Size, (i64, i64))> =
        if large_enough.is_empty() { candidates.iter().collect() } else { large_enough };
    // The first of equals wins (min_by_key keeps the first).
    pool.into_iter().min_by_key(|(_, dims)| key(*dims)).map(|(size, _)| *size)
}

/// The dimensions of the image in `path` as shown (EXIF orientation
/// applied), if it is one thumbnails are made of and not too large.
pub fn dimensions(path: &Path, max_pixels: u64) -> Result<(u32, u32), Refusal> {
    let unsupported = |e: &dyn std::fmt::Display| Refusal::Unsupported(e.to_string());
    let reader = ImageReader::open(path)
        .map_err(|e| unsupported(&e))?
        .with_guessed_format()
        .map_err(|e| unsupported(&e))?;
    check_format(reader.format())?;
    let mut decoder = reader.into_decoder().map_err(|e| unsupported(&e))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(Refusal::TooLarge);
    }
    let turned = matches!(
        decoder.orientation().map_err(|e| unsupported(&e))?,
        image::metadata::Orientation::Rotate90
            | image::metadata::Orientation::Rotate270
            | image::metadata::Orientation::Rotate90FlipH
            | image::metadata::Orientation::Rotate270FlipH
    );
    Ok(if turned { (h, w) } else { (w, h) })
}

fn check_format(format: Option<ImageFormat>) -> Result<ImageFormat, Refusal> {
    match format {
        Some(format @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP)) => {
            Ok(format)
        }
        Some(other) => Err(Refusal::Unsupported(format!("{other:?} images are not thumbnailed"))),
        None => Err(Refusal::Unsupported("not an image".into())),
    }
}

/// A made thumbnail.
pub struct Made {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The thumbnail of `size` of the image in `path` (blocking: run it off
/// the async runtime). `animated`: an animated GIF or WebP gives an
/// animated GIF; otherwise JPEG for JPEG and WebP sources, PNG for the
/// rest (transparency kept).
pub fn make(path: &Path, size: Size, animated: bool, max_pixels: u64) -> Result<Made, Refusal> {
    let unsupported = |e: &dyn std::fmt::Display| Refusal::Unsupported(e.to_string());
    let bytes = std::fs::read(path).map_err(|e| unsupported(&e))?;
    let mut reader =
        ImageReader::new(Cursor::new(&bytes)).with_guessed_format().map_err(|e| unsupported(&e))?;
    let format = check_format(reader.format())?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| unsupported(&e))?;
    let (sw, sh) = decoder.dimensions();
    if u64::from(sw) * u64::from(sh) > max_pixels {
        return Err(Refusal::TooLarge);
    }
    if animated && let Some(made) = animated_thumbnail(&bytes, format, size)? {
        return Ok(made);
    }
    let orientation = decoder.orientation().map_err(|e| unsupported(&e))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| unsupported(&e))?;
    image.apply_orientation(orientation);
    let image = fit(&image, size);
    let (width, height) = (image.width(), image.height());
    let mut out = Vec::new();
    let content_type =
        if matches!(format, ImageFormat::Jpeg | ImageFormat::WebP) && !image.color().has_alpha() {
            JpegEncoder::new_with_quality(&mut out, 80)
                .encode_image(&image.to_rgb8())
                .map_err(|e| unsupported(&e))?;
            "image/jpeg"
        } else {
            image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).map_err(|e| unsupported(&e))?;
            "image/png"
        };
    Ok(Made { bytes: out, content_type, width, height })
}

/// `image` resized (and cut, for crop) to what `size` gives it.
fn fit(image: &DynamicImage, size: Size) -> DynamicImage {
    let (sw, sh) = (image.width(), image.height());
    let (w, h) = output_size((sw, sh), size);
    if (w, h) == (sw, sh) {
        return image.clone();
    }
    match size.method {
        Method::Scale => image.resize_exact(w, h, FilterType::Lanczos3),
        Method::Crop => {
            // Scaled so the box covers it, then the middle cut out.
            let (sw64, sh64, w64, h64) = (u64::from(sw), u64::from(sh), u64::from(w), u64::from(h));
            let (rw, rh) = if w64 * sh64 > h64 * sw64 {
                (w, ((w64 * sh64).div_ceil(sw64)).max(h64) as u32)
            } else {
                (((h64 * sw64).div_ceil(sh64)).max(w64) as u32, h)
            };
            let resized = if (rw, rh) == (sw, sh) {
                image.clone()
            } else {
                image.resize_exact(rw, rh, FilterType::Lanczos3)
            };
            resized.crop_imm((rw - w) / 2, (rh - h) / 2, w, h)
        }
    }
}

/// An animated GIF thumbnail of an animated GIF or WebP; `None` for a
/// still image (which then gets a still thumbnail).
fn animated_thumbnail(bytes: &[u8], format: ImageFormat, size: Size) -> Result<Option<Made>, Refusal> {
    let unsupported = |e: &dyn std::fmt::Display| Refusal::Unsupported(e.to_string());
    let frames = match format {
        ImageFormat::Gif => GifDecoder::new(Cursor::new(bytes)).map_err(|e| unsupported(&e))?.into_frames(),
        ImageFormat::WebP => {
            let decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(|e| unsupported(&e))?;
            if !decoder.has_animation() {
                return Ok(None);
            }
            decoder.into_frames()
        }
        _ => return Ok(None),
    };
    let frames = frames.collect_frames().map_err(|e| unsupported(&e))?;
    if frames.len() < 2 {
        return Ok(None);
    }
    let mut resized = Vec::with_capacity(frames.len());
    let (mut width, mut height) = (0, 0);
    for frame in frames {
        let delay = frame.delay();
        let image = fit(&DynamicImage::ImageRgba8(frame.into_buffer()), size).to_rgba8();
        (width, height) = image.dimensions();
        resized.push(Frame::from_parts(image, 0, 0, delay));
    }
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 10);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite).map_err(|e| unsupported(&e))?;
        encoder.encode_frames(resized).map_err(|e| unsupported(&e))?;
    }
    Ok(Some(Made { bytes: out, content_type: "image/gif", width, height }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u32, height: u32, method: Method) -> Size {
        Size { width, height, method }
    }

    #[test]
    fn sizes_and_choices_follow_the_spec_and_synapse() {
        let hd = (1920, 1080);
        let sizes: Vec<Size> = [
            (32, 32, Method::Crop),
            (96, 96, Method::Crop),
            (320, 240, Method::Scale),
            (640, 480, Method::Scale),
            (800, 600, Method::Scale),
        ]
        .into_iter()
        .map(|(width, height, method)| size(width, height, method))
        .collect();
        assert_eq!(output_size(hd, size(320, 240, Method::Scale)), (320, 180));
        assert_eq!(output_size(hd, size(96, 96, Method::Crop)), (96, 96));
        // Synapse's worked examples.
        let pick = |w, h, m| output_size(hd, choose(&sizes, hd, size(w, h, m)).unwrap());
        assert_eq!(pick(100, 100, Method::Scale), (320, 180));
        assert_eq!(pick(64, 64, Method::Crop), (96, 96));
        assert_eq!(pick(800, 800, Method::Crop), (96, 96));
        assert_eq!(pick(1000, 1000, Method::Scale), (800, 450));
        // Never scaled up.
        let small = (100, 50);
        assert_eq!(output_size(small, size(640, 480, Method::Scale)), (100, 50));
        assert_eq!(output_size(small, size(96, 96, Method::Crop)), (50, 50));
        assert_eq!(output_size(small, size(32, 32, Method::Crop)), (32, 32));
    }
}
