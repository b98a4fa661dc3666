//! What a web page says of itself, for a preview: its OpenGraph tags and,
//! where it has none, what Synapse falls back to (the title or first
//! heading, the largest image, the meta description or the first
//! paragraphs of its text).

use std::sync::LazyLock;

use regex::bytes::Regex;
use scraper::{ElementRef, Html, Selector, node::Node};
use serde_json::{Map, Value};

/// A page with more distinct tags of one prefix than this has none of it
/// taken (Synapse's guard against pages stuffed with tags).
const MAX_TAGS_PER_PREFIX: usize = 50;
/// A description built from the text runs to at least this many characters…
const DESCRIPTION_MIN: usize = 200;
/// …and is cut at a word below this many.
const DESCRIPTION_MAX: usize = 500;
/// Elements nested deeper than this are not read for the description.
const MAX_DEPTH: usize = 1024;
/// Keys and values longer than these are left out of a preview.
const KEY_MAX: usize = 50;
const VALUE_MAX: usize = 1000;

/// Elements whose text is no part of a page's description.
const NOT_TEXT: [&str; 14] = [
    "header", "nav", "aside", "footer", "script", "noscript", "style", "svg", "iframe", "video", "canvas",
    "img", "picture", "template",
];
const NOT_TEXT_ROLES: [&str; 4] = ["directory", "menu", "menubar", "toolbar"];

/// The page's text: in the charset a `<meta>` in its first 1024 bytes
/// names, else its XML declaration's, else the `Content-Type` header's,
/// else UTF-8, else windows-1252; the first that decodes it whole.
pub fn decode(body: &[u8], content_type: Option<&str>) -> Option<String> {
    static META: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?i)<\s*meta[^>]*charset\s*=\s*['"]?([a-z0-9_:.+-]+)"#).expect("a valid expression")
    });
    static XML: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?i)^\s*<\?xml[^>]*encoding\s*=\s*['"]([a-z0-9_:.+-]+)['"]"#)
            .expect("a valid expression")
    });
    let head = &body[..body.len().min(1024)];
    let mut labels: Vec<Vec<u8>> = Vec::new();
    for found in [META.captures(head), XML.captures(head)].into_iter().flatten() {
        labels.push(found[1].to_vec());
    }
    if let Some(charset) = content_type.and_then(|t| {
        t.split(';').skip(1).find_map(|p| p.trim().strip_prefix("charset=").map(|c| c.trim_matches('"')))
    }) {
        labels.push(charset.as_bytes().to_vec());
    }
    labels.extend([b"utf-8".to_vec(), b"windows-1252".to_vec()]);
    labels.iter().filter_map(|label| encoding_rs::Encoding::for_label(label)).find_map(|encoding| {
        encoding.decode_without_bom_handling_and_without_replacement(body).map(|text| text.into_owned())
    })
}

/// The preview of a page: its `og:`, `article:` and `profile:` tags as
/// they are, Twitter's where OpenGraph has none, then the fallbacks.
/// `og:image` is as the page writes it (maybe relative).
pub fn preview_of(text: &str) -> Map<String, Value> {
    let page = Html::parse_document(text);
    let mut og = Map::new();
    for prefix in ["og", "article", "profile"] {
        let mut tags = Map::new();
        for meta in page.select(&selector("meta[property][content]")) {
            let (Some(property), Some(content)) = (meta.attr("property"), meta.attr("content")) else {
                continue;
            };
            if property.starts_with(&format!("{prefix}:")) && !content.is_empty() {
                tags.insert(property.to_owned(), content.into());
            }
        }
        if tags.len() <= MAX_TAGS_PER_PREFIX {
            og.extend(tags);
        }
    }
    for meta in page.select(&selector("meta[name][content]")) {
        let (Some(name), Some(content)) = (meta.attr("name"), meta.attr("content")) else { continue };
        let Some(tag) = name.strip_prefix("twitter:") else { continue };
        let key = match tag {
            "card" | "creator" => continue,
            "site" => "og:site_name".to_owned(),
            other => format!("og:{other}"),
        };
        if !content.is_empty() && !og.contains_key(&key) {
            og.insert(key, content.into());
        }
    }
    if !og.contains_key("og:title") {
        let title = page
            .select(&selector("title, h1, h2, h3"))
            .map(|e| collapse(&e.text().collect::<String>()))
            .next();
        og.insert("og:title".into(), title.filter(|t| !t.is_empty()).map_or(Value::Null, Value::from));
    }
    if !og.contains_key("og:image")
        && let Some(image) = image_of(&page)
    {
        og.insert("og:image".into(), image.into());
    }
    let description = match og.get("og:description").and_then(Value::as_str) {
        Some(given) if !given.is_empty() => summarize([given.to_owned()]),
        Some(_) => None,
        None => page
            .select(&selector("meta[name][content]"))
            .find(|m| m.attr("name").is_some_and(|n| n.eq_ignore_ascii_case("description")))
            .and_then(|m| m.attr("content"))
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                let body = page.select(&selector("body")).next()?;
                let mut texts = Vec::new();
                texts_of(body, 0, &mut texts);
                summarize(texts)
            }),
    };
    og.insert("og:description".into(), description.map_or(Value::Null, Value::from));
    prune(&mut og);
    og
}

/// Leaves out keys and values too long to be anything but noise.
pub fn prune(og: &mut Map<String, Value>) {
    og.retain(|key, value| {
        let long = match value {
            Value::String(s) => s.chars().count() > VALUE_MAX,
            other => other.to_string().len() > VALUE_MAX,
        };
        key.chars().count() <= KEY_MAX && !long
    });
}

/// The page's image where OpenGraph names none: an `itemprop="image"`,
/// the largest `<img>` of a known size over 10×10, the first `<img>`,
/// the icon.
fn image_of(page: &Html) -> Option<String> {
    if let Some(image) = page
        .select(&selector("meta[itemprop][content]"))
        .find(|m| m.attr("itemprop").is_some_and(|p| p.eq_ignore_ascii_case("image")))
        .and_then(|m| m.attr("content"))
        .filter(|c| !c.is_empty())
    {
        return Some(image.to_owned());
    }
    let images: Vec<ElementRef> = page.select(&selector("img[src]")).collect();
    let size = |image: &ElementRef, name: &str| image.attr(name).and_then(|v| v.trim().parse::<u64>().ok());
    let largest = images
        .iter()
        .filter_map(|image| match (size(image, "width"), size(image, "height")) {
            (Some(w), Some(h)) if w > 10 && h > 10 => Some((w * h, image)),
            _ => None,
        })
        .max_by_key(|(area, _)| *area)
        .map(|(_, image)| image);
    if let Some(image) = largest.or(images.first()).and_then(|i| i.attr("src")).filter(|s| !s.is_empty()) {
        return Some(image.to_owned());
    }
    page.select(&selector("link[rel][href]"))
        .find(|l| {
            l.attr("rel").is_some_and(|rel| rel.split_whitespace().any(|r| r.eq_ignore_ascii_case("icon")))
        })
        .and_then(|l| l.attr("href"))
        .map(str::to_owned)
}

/// The runs of text under `element`, in order, leaving out what is no
/// part of the page's content (navigation, scripts, menus…).
fn texts_of(element: ElementRef, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    for child in element.children() {
        match child.value() {
            Node::Text(text) => {
                let text = collapse(text);
                if !text.is_empty() {
                    out.push(text);
                }
            }
            Node::Element(e) => {
                let role = e.attr("role").unwrap_or_default();
                if NOT_TEXT.contains(&e.name()) || NOT_TEXT_ROLES.iter().any(|r| r.eq_ignore_ascii_case(role))
                {
                    continue;
                }
                if let Some(child) = ElementRef::wrap(child) {
                    texts_of(child, depth + 1, out);
                }
            }
            _ => {}
        }
    }
}

/// Paragraphs joined until there are enough, cut at a word past the
/// most (with "…"); `None` when there is no text.
fn summarize(texts: impl IntoIterator<Item = String>) -> Option<String> {
    let mut description = String::new();
    for text in texts {
        let text = collapse(&text);
        if text.is_empty() {
            continue;
        }
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&text);
        if description.chars().count() >= DESCRIPTION_MIN {
            break;
        }
    }
    if description.chars().count() > DESCRIPTION_MAX {
        let cut: String = description.chars().take(DESCRIPTION_MAX).collect();
        let at_word = cut.rfind(char::is_whitespace).filter(|i| *i > 0).unwrap_or(cut.len());
        description = format!("{}…", cut[..at_word].trim_end());
    }
    Some(description).filter(|d| !d.is_empty())
}

/// Runs of whitespace as one space, none at the ends.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("a valid selector")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn opengraph_tags_are_taken_as_they_are() {
        let og = preview_of(
            r#"<html><head><meta property="og:title" content="The Rock">
            <meta property="og:type" content="video.movie">
            <meta property="og:image" content="rock.png"><meta property="og:empty" content="">
            <meta name="twitter:title" content="Not this"><meta name="twitter:site" content="@imdb">
            <title>Other</title></head><body><p>Some text</p></body></html>"#,
        );
        assert_eq!(og["og:title"], "The Rock");
        assert_eq!(og["og:type"], "video.movie");
        assert_eq!(og["og:image"], "rock.png");
        assert_eq!(og["og:site_name"], "@imdb");
        assert_eq!(og["og:description"], "Some text");
        assert!(!og.contains_key("og:empty"));
    }

    #[test]
    fn pages_without_opengraph_fall_back_as_synapse_does() {
        let og = preview_of(
            r#"<html><head><title>  A   page </title><meta name="Description" content="What it is">
            <link rel="shortcut icon" href="/favicon.ico"></head>
            <body><img src="small.png" width="5" height="5"><img src="big.png" width="300" height="200">
            <img src="mid.png" width="100" height="100"></body></html>"#,
        );
        assert_eq!(og["og:title"], "A page");
        assert_eq!(og["og:description"], "What it is");
        assert_eq!(og["og:image"], "big.png");
        let og = preview_of(r#"<html><head><link rel="icon" href="/i.ico"></head><body></body></html>"#);
        assert_eq!(og["og:title"], Value::Null);
        assert_eq!(og["og:image"], "/i.ico");
        assert_eq!(og["og:description"], Value::Null);
    }

    #[test]
    fn a_description_is_the_pages_text_without_its_navigation() {
        let long = "word ".repeat(150);
        let og = preview_of(&format!(
            "<html><body><nav>Menu</nav><script>var x;</script><div role=\"menu\">Also menu</div>\
             <p>First   paragraph.</p><p>{long}</p><footer>Footer</footer></body></html>"
        ));
        let description = og["og:description"].as_str().unwrap();
        assert!(description.starts_with("First paragraph.\n\nword word"), "{description}");
        assert!(description.ends_with("word…"), "{description}");
        assert!(description.chars().count() <= DESCRIPTION_MAX + 1);
        assert!(!description.contains("Menu") && !description.contains("Footer"));
    }

    #[test]
    fn long_keys_and_values_are_left_out() {
        let mut og = Map::new();
        og.insert(format!("og:{}", "k".repeat(60)), json!("v"));
        og.insert("og:long".into(), json!("v".repeat(1001)));
        og.insert("og:fine".into(), json!("v"));
        prune(&mut og);
        assert_eq!(Value::Object(og), json!({"og:fine": "v"}));
    }

    #[test]
    fn the_charset_comes_from_the_page_then_the_header() {
        let latin1 = b"<html><head><meta charset=\"iso-8859-1\"><title>caf\xe9</title></head></html>";
        assert!(decode(latin1, Some("text/html; charset=utf-8")).unwrap().contains("café"));
        let header = b"<html><title>caf\xe9</title></html>";
        assert!(decode(header, Some("text/html; charset=windows-1252")).unwrap().contains("café"));
        assert!(decode("<title>café</title>".as_bytes(), None).unwrap().contains("café"));
        // Not UTF-8 and nothing named: windows-1252.
        assert!(decode(header, None).unwrap().contains("café"));
    }
}
