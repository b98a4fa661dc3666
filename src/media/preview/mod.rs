//! URL previews (`/preview_url`, off unless `media.url_preview.enabled`):
//! the page fetched by [`spider::Spider`] (never from a blocked address),
//! its OpenGraph read by [`html`], its image fetched the same way and kept
//! as this server's media; a URL that is itself an image is previewed as
//! one. Previews are kept an hour (`media_url_previews`), one fetch per
//! URL at a time; `ts` asks for the one nearest that time.

mod html;
mod spider;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::StatusCode;
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Media, essence};
use crate::{
    Error, Result,
    config::{Outbound, UrlPreviewConfig},
    storage::{Batch, Db, decode_u64, maps, prefix},
};

/// How long a preview is served before the page is fetched again (ms).
const KEPT_FOR_MS: u64 = 3600 * 1000;
/// The types a previewed URL may have (pages, images).
const PAGE_TYPES: [&str; 3] = ["text/html", "application/xhtml+xml", "image/*"];

/// A preview as kept.
#[derive(Serialize, Deserialize)]
struct Kept {
    og: Map<String, Value>,
    expires_ts: u64,
}

/// One part of a `url_blacklist` entry.
enum Matcher {
    Regex(regex::Regex),
    Glob(glob::Pattern),
}

impl Matcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Regex(regex) => regex.is_match(value),
            Matcher::Glob(glob) => glob.matches(value),
        }
    }
}

pub struct Previewer {
    db: Db,
    spider: spider::Spider,
    url_blacklist: Vec<Vec<(String, Matcher)>>,
    /// URLs being previewed now; later askers wait for the first.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Previewer {
    /// The previewer `config` asks for (`None` when off). The patterns
    /// were checked when the configuration was loaded.
    pub fn new(db: Db, config: &UrlPreviewConfig, outbound: &Outbound) -> Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let mut url_blacklist = Vec::new();
        for entry in &config.url_blacklist {
            let mut parts = Vec::new();
            for (part, pattern) in entry {
                let matcher = match pattern.starts_with('^') {
                    true => Matcher::Regex(regex::Regex::new(pattern).map_err(Error::internal)?),
                    false => Matcher::Glob(glob::Pattern::new(pattern).map_err(Error::internal)?),
                };
                parts.push((part.clone(), matcher));
            }
            url_blacklist.push(parts);
        }
        Ok(Some(Self {
            db,
            spider: spider::Spider::new(config, outbound)?,
            url_blacklist,
            fetching: Mutex::default(),
        }))
    }

    /// The preview of `url` for `user` nearest the time `ts` (ms): kept,
    /// or made now.
    pub async fn preview(
        &self,
        media: &Media,
        user: &UserId,
        url: &str,
        ts: u64,
    ) -> Result<Map<String, Value>> {
        if let Some(og) = self.kept(url, ts)? {
            return Ok(og);
        }
        let lock = self.fetching.lock().expect("fetching").entry(url.to_owned()).or_default().clone();
        let made = async {
            let _one_at_a_time = lock.lock().await;
            if let Some(og) = self.kept(url, ts)? {
                return Ok(og);
            }
            let og = self.make(media, user, url).await?;
            let now = crate::util::now_ms();
            let kept = Kept { og: og.clone(), expires_ts: now + KEPT_FOR_MS };
            self.db.put_json(&maps::MEDIA_URL_PREVIEWS, &row_key(url, now), &kept)?;
            Ok(og)
        }
        .await;
        self.fetching.lock().expect("fetching").remove(url);
        made
    }

    /// The kept preview of `url` for the time `ts`: the latest made by
    /// then, else the first made after, if it had not expired at `ts`.
    fn kept(&self, url: &str, ts: u64) -> Result<Option<Map<String, Value>>> {
        let start = prefix(&[url.as_bytes()]);
        let mut rows = Vec::new();
        for (key, kept) in self.db.scan_json::<Kept>(&maps::MEDIA_URL_PREVIEWS, &start)? {
            rows.push((decode_u64(&key[start.len()..])?, kept));
        }
        let at = rows.iter().rposition(|(made, _)| *made <= ts).or((!rows.is_empty()).then_some(0));
        Ok(at.map(|i| rows.swap_remove(i).1).filter(|kept| kept.expires_ts > ts).map(|kept| kept.og))
    }

    /// Drops the previews that expired by `now` (ms); how many.
    pub fn forget_expired(&self, now: u64) -> Result<usize> {
        let mut batch = Batch::new();
        let mut dropped = 0;
        for (key, kept) in self.db.scan_json::<Kept>(&maps::MEDIA_URL_PREVIEWS, b"")? {
            if kept.expires_ts <= now {
                batch.delete(&maps::MEDIA_URL_PREVIEWS, key);
                dropped += 1;
            }
        }
        self.db.write(batch)?;
        Ok(dropped)
    }

    /// Fetches `url` and previews it: an image as itself, a page by its
    /// tags (its image fetched and kept as media; without it when that
    /// fails), anything else as nothing.
    async fn make(&self, media: &Media, user: &UserId, url: &str) -> Result<Map<String, Value>> {
        let url = url::Url::parse(url).map_err(|_| Error::invalid_param("url is not a valid URL"))?;
        self.check_listed(&url)?;
        let page = self.spider.get(&url, &PAGE_TYPES).await?;
        let kind = page.content_type.as_deref().map(essence).unwrap_or_default();
        let mut og = Map::new();
        if kind.starts_with("image/") {
            og.insert("og:description".into(), page.file_name.clone().map_or(Value::Null, Value::from));
            self.describe_image(media, user, page, &mut og).await?;
        } else if kind == "text/html" || kind == "application/xhtml+xml" {
            if let Some(text) = html::decode(&page.body, page.content_type.as_deref()) {
                og = html::preview_of(&text);
            }
            let image = og.remove("og:image").and_then(|i| i.as_str().and_then(|i| page.url.join(i).ok()));
            if let Some(image) = image {
                let fetched = async {
                    self.check_listed(&image)?;
                    let fetched = self.spider.get(&image, &["image/*"]).await?;
                    self.describe_image(media, user, fetched, &mut og).await
                };
                if let Err(e) = fetched.await {
                    tracing::debug!("URL preview of {url}: its image {image} left out: {e}");
                }
            }
        }
        html::prune(&mut og);
        Ok(og)
    }

    /// Keeps a fetched image as media of `user` and describes it: its
    /// `mxc://` URI, type, size and (when it decodes) dimensions.
    async fn describe_image(
        &self,
        media: &Media,
        user: &UserId,
        image: spider::Fetched,
        og: &mut Map<String, Value>,
    ) -> Result<()> {
        let content_type = image.content_type.clone().unwrap_or_else(|| "application/octet-stream".into());
        if !essence(&content_type).starts_with("image/") {
            return Err(Error::custom(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "Not an image"));
        }
        let (media_id, content) =
            media.keep_fetched(user, image.url.as_str(), &content_type, image.file_name, image.body).await?;
        og.insert("og:image".into(), format!("mxc://{}/{media_id}", media.server_name()).into());
        og.insert("og:image:type".into(), content_type.into());
        og.insert("matrix:image:size".into(), content.size.into());
        if let Some((width, height)) = media.dimensions(&content).await {
            og.insert("og:image:width".into(), width.into());
            og.insert("og:image:height".into(), height.into());
        }
        Ok(())
    }

    /// Refuses (403) a URL an entry of `url_blacklist` matches.
    fn check_listed(&self, url: &url::Url) -> Result<()> {
        let part = |name: &str| -> Option<String> {
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            match name {
                "scheme" => Some(url.scheme().to_owned()),
                "netloc" => non_empty(url.authority()),
                "hostname" => url.host_str().map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()),
                "port" => url.port().map(|p| p.to_string()),
                "path" => Some(url.path().to_owned()),
                "query" => url.query().map(str::to_owned),
                "fragment" => url.fragment().map(str::to_owned),
                "username" => non_empty(url.username()),
                "password" => url.password().map(str::to_owned),
                _ => None,
            }
        };
        let listed = self.url_blacklist.iter().any(|entry| {
            entry.iter().all(|(name, matcher)| part(name).is_some_and(|value| matcher.matches(&value)))
        });
        if listed {
            return Err(Error::custom(
                StatusCode::FORBIDDEN,
                "M_UNKNOWN",
                "URL blocked by url pattern blocklist entry",
            ));
        }
        Ok(())
    }
}

fn row_key(url: &str, made: u64) -> Vec<u8> {
    [prefix(&[url.as_bytes()]), made.to_be_bytes().to_vec()].concat()
}
