//! The content repository: what users upload, stored once per content
//! (SHA-256) by [`store::LocalStore`], described in `media` (RocksDB).
//! An upload is acknowledged only once its file and its record are on
//! disk; a media ID reserved with `/create` waits for its upload.

mod fetch;
pub mod manage;
pub mod preview;
pub mod s3;
pub mod scan;
pub mod store;
pub mod thumbnail;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use http::StatusCode;
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    Error, Result,
    config::MediaConfig,
    storage::{Batch, Db, key, maps, prefix},
};
use store::{LocalStore, WriteError};

/// What is known of one media item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Who uploaded it (or reserved its ID); none for another server's
    /// media kept here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<OwnedUserId>,
    pub created_ts: u64,
    /// The content, once uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Served only by the authenticated endpoints (uploaded while
    /// `media.enable_authenticated_media` was on).
    #[serde(default)]
    pub authenticated: bool,
    /// The URL it was fetched from, for a preview (`/preview_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_cache: Option<String>,
    /// Who quarantined it (an admin's user ID, or `cli` for `hearth media
    /// quarantine`): served to nobody while set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_by: Option<String>,
    /// Kept out of quarantines of all of a user's or a room's media.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Content {
    /// As the uploader sent it (`application/octet-stream` when it sent none).
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_name: Option<String>,
    pub size: u64,
    /// Lower-case hex; names the file.
    pub sha256: String,
}

/// A thumbnail made and kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thumbnail {
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
}

/// What an uploader says of the bytes it sends.
pub struct Upload {
    pub content_type: Option<String>,
    pub upload_name: Option<String>,
    /// `Content-Length`, when sent: refused at once when over the limit.
    pub declared_size: Option<u64>,
}

pub struct Media {
    db: Db,
    server_name: OwnedServerName,
    store: LocalStore,
    pub config: MediaConfig,
    /// Reserved IDs being uploaded to right now.
    uploading: Mutex<HashSet<String>>,
    /// Woken whenever an upload completes (downloads waiting on a reserved ID).
    uploaded: Notify,
    /// clamd, when `media.scanner` names it.
    scanner: Option<scan::Scanner>,
    /// Other servers' media being fetched, one fetch per item at a time.
    fetching: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
    /// URL previews, when `media.url_preview.enabled`.
    pub previewer: Option<preview::Previewer>,
    /// The bucket behind the local store, when `media.s3` names one.
    pub s3: Option<s3::S3>,
    /// Held (read) from a file's commit to the write of the record naming
    /// it, and (write) while deleted media's files are removed: a file
    /// another record is about to name is never removed.
    files: tokio::sync::RwLock<()>,
}

/// A file committed and not yet named by a record (see `Media::files`).
type Committing<'a> = tokio::sync::RwLockReadGuard<'a, ()>;

/// A media ID is 24 letters and digits here; from elsewhere, `[A-Za-z0-9_-]+`.
pub fn valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `mxc://` URLs an event's content names (its file, its thumbnail).
pub fn mxc_urls(content: &serde_json::Value) -> Vec<String> {
    [
        &content["url"],
        &content["info"]["thumbnail_url"],
        &content["file"]["url"],
        &content["info"]["thumbnail_file"]["url"],
    ]
    .into_iter()
    .filter_map(serde_json::Value::as_str)
    .filter(|url| url.starts_with("mxc://"))
    .map(str::to_owned)
    .collect()
}

impl Media {
    /// The repository under `media.path`, or `default_root` when unset.
    pub fn open(
        db: Db,
        server_name: OwnedServerName,
        config: &MediaConfig,
        outbound: &crate::config::Outbound,
        default_root: PathBuf,
    ) -> Result<Self> {
        let root = config.path.clone().unwrap_or(default_root);
        Ok(Self {
            previewer: preview::Previewer::new(db.clone(), &config.url_preview, outbound)?,
            s3: config.s3.as_ref().map(s3::S3::new).transpose()?,
            files: tokio::sync::RwLock::new(()),
            db,
            server_name,
            store: LocalStore::open(&root)?,
            config: config.clone(),
            uploading: Mutex::default(),
            uploaded: Notify::new(),
            fetching: Mutex::default(),
            scanner: config.scanner.as_deref().map(scan::Scanner::new),
        })
    }

    fn record_key(server: &ServerName, media_id: &str) -> Vec<u8> {
        key(&[server.as_bytes(), media_id.as_bytes()])
    }

    pub fn record(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self.db.get_json(&maps::MEDIA, &Self::record_key(server, media_id))?)
    }

    /// Where the content with this hash lies on disk: in the local store,
    /// else fetched back from the bucket (one fetch per file at a time, its
    /// hash checked); 404 when neither has it.
    pub async fn file(&self, sha256: &str) -> Result<PathBuf> {
        let path = self.store.path(sha256);
        async fn here(path: &std::path::Path) -> bool {
            tokio::fs::try_exists(path).await.unwrap_or(false)
        }
        if here(&path).await {
            return Ok(path);
        }
        let Some(s3) = &self.s3 else {
            tracing::error!("media: the file {} is missing", path.display());
            return Err(Error::not_found("Not found"));
        };
        let lock_key = [b"sha256:", sha256.as_bytes()].concat();
        let lock = self.fetching.lock().expect("fetching").entry(lock_key.clone()).or_default().clone();
        let fetched = async {
            let _one_at_a_time = lock.lock().await;
            if here(&path).await {
                return Ok(path.clone());
            }
            let body = s3.get(sha256).await?.ok_or_else(|| {
                tracing::error!("media: the file {sha256} is neither here nor in the bucket");
                Error::not_found("Not found")
            })?;
            let staged = self.store.stage(body, u64::MAX).await.map_err(|e| {
                Error::internal(format!("media: cannot fetch {sha256} from the bucket: {e:?}"))
            })?;
            if staged.stored.sha256 != sha256 {
                self.store.discard(staged).await;
                return Err(Error::internal(format!("media: the bucket's {sha256} has other bytes")));
            }
            self.store
                .commit(staged)
                .await
                .map_err(|e| Error::internal(format!("media: cannot keep {sha256}: {e:?}")))?;
            Ok(path.clone())
        }
        .await;
        self.fetching.lock().expect("fetching").remove(&lock_key);
        fetched
    }

    /// Puts a stored file in the bucket, when there is one (and, for other
    /// servers' media, `store_remote` says so).
    async fn to_bucket(&self, stored: &store::Stored, remote: bool) -> Result<()> {
        match &self.s3 {
            Some(s3) if !remote || s3.store_remote => {
                s3.put(&stored.sha256, &self.store.path(&stored.sha256), stored.size).await
            }
            _ => Ok(()),
        }
    }

    fn unused_expiry(&self) -> Duration {
        Duration::from_secs(self.config.unused_expiration_secs)
    }

    /// Reserves a media ID for `user` to upload to later (`/create`): the
    /// ID and when it expires unused (ms). Refused with 429 while the user
    /// holds `media.max_pending_uploads` unused ones.
    pub fn create(&self, user: &UserId) -> Result<(String, u64)> {
        let now = crate::util::now_ms();
        let expiry = self.unused_expiry().as_millis() as u64;
        let mut batch = Batch::new();
        let mut pending = Vec::new();
        for (k, created_ts) in self.db.scan_json::<u64>(&maps::MEDIA_PENDING, &prefix(&[user.as_bytes()]))? {
            if created_ts + expiry <= now {
                batch.delete(&maps::MEDIA_PENDING, k);
            } else {
                pending.push(created_ts);
            }
        }
        if pending.len() >= self.config.max_pending_uploads {
            self.db.write(batch)?;
            let earliest = pending.into_iter().min().unwrap_or(now);
            return Err(Error::limit_exceeded(Duration::from_millis(earliest + expiry - now)));
        }
        let media_id = crate::util::random_string(24);
        let record = MediaRecord {
            user_id: Some(user.to_owned()),
            created_ts: now,
            content: None,
            authenticated: self.config.enable_authenticated_media,
            url_cache: None,
            quarantined_by: None,
            protected: false,
        };
        batch.put_json(&maps::MEDIA, Self::record_key(&self.server_name, &media_id), &record);
        batch.put_json(&maps::MEDIA_PENDING, key(&[user.as_bytes(), media_id.as_bytes()]), &now);
        self.db.write(batch)?;
        Ok((media_id, now + expiry))
    }

    /// Stores `body` as new media of `user`; its media ID.
    pub async fn upload<E: std::fmt::Display>(
        &self,
        user: &UserId,
        upload: Upload,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<String> {
        let (content, _committing) = self.store_content(user, &upload, body).await?;
        let media_id = crate::util::random_string(24);
        let mut batch = Batch::new();
        self.count_usage(&mut batch, user, content.size)?;
        let record = MediaRecord {
            user_id: Some(user.to_owned()),
            created_ts: crate::util::now_ms(),
            content: Some(content),
            authenticated: self.config.enable_authenticated_media,
            url_cache: None,
            quarantined_by: None,
            protected: false,
        };
        batch.put_json(&maps::MEDIA, Self::record_key(&self.server_name, &media_id), &record);
        self.db.write(batch)?;
        Ok(media_id)
    }

    /// Stores `body` under the media ID `user` reserved (`PUT /upload`).
    pub async fn upload_to<E: std::fmt::Display>(
        &self,
        user: &UserId,
        media_id: &str,
        upload: Upload,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<()> {
        let cannot_overwrite =
            |why: &str| Error::custom(StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA", why);
        if !self.uploading.lock().expect("uploading").insert(media_id.to_owned()) {
            return Err(cannot_overwrite("Media ID is being uploaded to"));
        }
        let result = async {
            let record_key = Self::record_key(&self.server_name, media_id);
            let mut record = self
                .db
                .get_json::<MediaRecord>(&maps::MEDIA, &record_key)?
                .ok_or_else(|| Error::not_found("Unknown media ID"))?;
            if record.user_id.as_deref() != Some(user) {
                return Err(Error::forbidden("Only the creator of the media ID can upload to it"));
            }
            if record.content.is_some() {
                return Err(cannot_overwrite("Media ID already has content"));
            }
            if self.expired(&record) {
                return Err(Error::not_found("Media ID has expired"));
            }
            let (content, _committing) = self.store_content(user, &upload, body).await?;
            let mut batch = Batch::new();
            self.count_usage(&mut batch, user, content.size)?;
            record.content = Some(content);
            batch.put_json(&maps::MEDIA, record_key, &record);
            batch.delete(&maps::MEDIA_PENDING, key(&[user.as_bytes(), media_id.as_bytes()]));
            self.db.write(batch)?;
            self.uploaded.notify_waiters();
            Ok(())
        }
        .await;
        self.uploading.lock().expect("uploading").remove(media_id);
        result
    }

    /// A reserved ID never uploaded to within its time.
    fn expired(&self, record: &MediaRecord) -> bool {
        record.content.is_none()
            && record.created_ts + self.unused_expiry().as_millis() as u64 <= crate::util::now_ms()
    }

    /// Streams an upload of `user` to the store within the limits: the
    /// allowed types (403 before reading), `max_upload_size` (413) and the
    /// user's quota (403), by `Content-Length` when sent, else as it streams.
    async fn store_content<E: std::fmt::Display>(
        &self,
        user: &UserId,
        upload: &Upload,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<(Content, Committing<'_>)> {
        let content_type =
            upload.content_type.as_deref().filter(|t| !t.is_empty()).unwrap_or("application/octet-stream");
        if !self.allows_type(content_type) {
            return Err(Error::forbidden(format!("Files of type {content_type} may not be uploaded here")));
        }
        let max = self.config.max_upload_size;
        let room = match self.config.user_quota_bytes {
            Some(quota) => quota.saturating_sub(self.usage(user)?),
            None => u64::MAX,
        };
        let over_quota = || Error::forbidden("This upload would go over your storage quota");
        match upload.declared_size {
            Some(size) if size > max => return Err(too_large(max)),
            Some(size) if size > room => return Err(over_quota()),
            _ => {}
        }
        let staged = self.store.stage(body, max.min(room)).await.map_err(|e| match e {
            WriteError::TooLarge if room < max => over_quota(),
            WriteError::TooLarge => too_large(max),
            WriteError::Body(why) => {
                Error::custom(StatusCode::BAD_REQUEST, "M_UNKNOWN", format!("Upload broke off: {why}"))
            }
            WriteError::Io(e) => Error::internal(format!("media: cannot store an upload: {e}")),
        })?;
        let (stored, committing) = self.scanned(staged, &format!("an upload of {user}"), false).await?;
        let content = Content {
            content_type: content_type.to_owned(),
            upload_name: upload.upload_name.clone().filter(|n| !n.is_empty()),
            size: stored.size,
            sha256: stored.sha256,
        };
        Ok((content, committing))
    }

    /// A staged file, once clamd (if configured) finds it clean, under its
    /// content name; refused (403) and removed when infected, refused
    /// (503) when clamd cannot tell unless `media.scanner_fail_open`.
    /// Then it goes to the bucket, if there is one: an upload is not
    /// acknowledged before it is there (503 when the bucket fails); a file
    /// fetched from another server (`remote`) is kept all the same.
    pub(crate) async fn scanned(
        &self,
        staged: store::Staged,
        what: &str,
        remote: bool,
    ) -> Result<(store::Stored, Committing<'_>)> {
        if let Some(scanner) = &self.scanner {
            match scanner.scan(staged.path()).await {
                Ok(scan::Verdict::Clean) => {}
                Ok(scan::Verdict::Infected(name)) => {
                    self.store.discard(staged).await;
                    tracing::warn!("media: {what} was refused: clamd found {name}");
                    return Err(Error::forbidden(format!(
                        "This file contains malware ({name}) and was not stored"
                    )));
                }
                Err(e) if self.config.scanner_fail_open => {
                    tracing::warn!("media: {what} was not scanned (scanner_fail_open): {e}");
                }
                Err(e) => {
                    self.store.discard(staged).await;
                    tracing::error!("media: {what} was refused: the malware scanner did not answer: {e}");
                    return Err(Error::custom(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "M_UNKNOWN",
                        "The malware scanner is unavailable; try again later",
                    ));
                }
            }
        }
        let committing = self.files.read().await;
        let stored = self
            .store
            .commit(staged)
            .await
            .map_err(|e| Error::internal(format!("media: cannot store {what}: {e:?}")))?;
        match self.to_bucket(&stored, remote).await {
            Err(e) if remote => tracing::warn!("media: {what} is kept here only: {e}"),
            Err(e) => {
                tracing::error!("media: {what} was refused: {e}");
                return Err(Error::custom(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "M_UNKNOWN",
                    "The media store is unavailable; try again later",
                ));
            }
            Ok(()) => {}
        }
        Ok((stored, committing))
    }

    /// Whether `media.allowed_content_types` (empty: any) lets this type in.
    fn allows_type(&self, content_type: &str) -> bool {
        let allowed = &self.config.allowed_content_types;
        allowed.is_empty() || type_matches(content_type, allowed.iter().map(String::as_str))
    }

    /// Keeps a file this server fetched from `url` for `user` (a URL
    /// preview's): scanned like an upload, within `max_upload_size`, not
    /// counted against the user's quota.
    pub async fn keep_fetched(
        &self,
        user: &UserId,
        url: &str,
        content_type: &str,
        upload_name: Option<String>,
        body: Bytes,
    ) -> Result<(String, Content)> {
        let max = self.config.max_upload_size;
        let staged = self
            .store
            .stage(futures_util::stream::once(async { Ok::<_, std::convert::Infallible>(body) }), max)
            .await
            .map_err(|e| match e {
                WriteError::TooLarge => too_large(max),
                other => Error::internal(format!("media: cannot store a fetched file: {other:?}")),
            })?;
        let (stored, _committing) =
            self.scanned(staged, &format!("{url}, fetched for {user}"), false).await?;
        let content = Content {
            content_type: content_type.to_owned(),
            upload_name: upload_name.filter(|n| !n.is_empty()),
            size: stored.size,
            sha256: stored.sha256,
        };
        let media_id = crate::util::random_string(24);
        let record = MediaRecord {
            user_id: Some(user.to_owned()),
            created_ts: crate::util::now_ms(),
            content: Some(content.clone()),
            authenticated: self.config.enable_authenticated_media,
            url_cache: Some(url.to_owned()),
            quarantined_by: None,
            protected: false,
        };
        self.db.put_json(&maps::MEDIA, &Self::record_key(&self.server_name, &media_id), &record)?;
        Ok((media_id, content))
    }

    /// The width and height of an image (turned as its EXIF says), when it
    /// is one thumbnails are made of and within `max_image_pixels`.
    pub async fn dimensions(&self, content: &Content) -> Option<(u32, u32)> {
        if !thumbnail::thumbnailable(&content.content_type) {
            return None;
        }
        let (path, max) = (self.file(&content.sha256).await.ok()?, self.config.max_image_pixels);
        tokio::task::spawn_blocking(move || thumbnail::dimensions(&path, max).ok()).await.ok().flatten()
    }

    /// The bytes `user`'s uploads take, for the quota.
    pub fn usage(&self, user: &UserId) -> Result<u64> {
        Ok(self.db.get_json::<u64>(&maps::MEDIA_USAGE, user.as_bytes())?.unwrap_or(0))
    }

    /// The bytes all local users' uploads take.
    pub fn total_usage(&self) -> Result<u64> {
        let mut total = 0;
        for (_, value) in self.db.scan_prefix(&maps::MEDIA_USAGE, b"")? {
            total += serde_json::from_slice::<u64>(&value).unwrap_or(0);
        }
        Ok(total)
    }

    /// `batch` also counts `size` more bytes against `user`'s quota.
    fn count_usage(&self, batch: &mut Batch, user: &UserId, size: u64) -> Result<()> {
        batch.put_json(&maps::MEDIA_USAGE, user.as_bytes().to_vec(), &(self.usage(user)? + size));
        Ok(())
    }

    /// The content of local media `media_id`, waiting up to `timeout` for
    /// a reserved ID's upload: 404 when there is none (or it expired
    /// unused), 504 `M_NOT_YET_UPLOADED` when the wait ends first.
    pub async fn local_content(&self, media_id: &str, timeout: Duration) -> Result<(MediaRecord, Content)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let uploaded = self.uploaded.notified();
            let record = self
                .record(&self.server_name, media_id)?
                .filter(|record| !self.expired(record) && record.quarantined_by.is_none())
                .ok_or_else(|| Error::not_found("Not found"))?;
            if let Some(content) = record.content.clone() {
                return Ok((record, content));
            }
            if tokio::time::timeout_at(deadline, uploaded).await.is_err() {
                return Err(Error::custom(
                    StatusCode::GATEWAY_TIMEOUT,
                    "M_NOT_YET_UPLOADED",
                    "Media has not been uploaded yet",
                ));
            }
        }
    }

    /// Another server's media: kept here once fetched, else fetched (one
    /// fetch per item at a time; later askers wait for it) with
    /// `/_matrix/federation/v1/media/download` (the older
    /// `/_matrix/media/v3/download` for servers without it), streamed to
    /// the store, at most `media.max_upload_size`.
    pub async fn remote_content(
        &self,
        servers: &crate::servers::Servers,
        server: &ServerName,
        media_id: &str,
        wait: Duration,
    ) -> Result<Content> {
        let record_key = Self::record_key(server, media_id);
        let kept = || -> Result<Option<Content>> {
            match self.db.get_json::<MediaRecord>(&maps::MEDIA, &record_key)? {
                // Quarantined: served to nobody, and not fetched again.
                Some(record) if record.quarantined_by.is_some() => Err(Error::not_found("Not found")),
                record => Ok(record.and_then(|r| r.content)),
            }
        };
        if let Some(content) = kept()? {
            return Ok(content);
        }
        let lock = self.fetching.lock().expect("fetching").entry(record_key.clone()).or_default().clone();
        let fetched = async {
            let _one_at_a_time = lock.lock().await;
            if let Some(content) = kept()? {
                return Ok(content);
            }
            let (content, _committing) = fetch::fetch(self, servers, server, media_id, wait).await?;
            let record = MediaRecord {
                user_id: None,
                created_ts: crate::util::now_ms(),
                content: Some(content.clone()),
                authenticated: self.config.enable_authenticated_media,
                url_cache: None,
                quarantined_by: None,
                protected: false,
            };
            self.db.put_json(&maps::MEDIA, &record_key, &record)?;
            Ok(content)
        }
        .await;
        self.fetching.lock().expect("fetching").remove(&record_key);
        fetched
    }

    /// Another server's media as kept here, if it is.
    pub fn kept_remote(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self.record(server, media_id)?.filter(|r| r.content.is_some() && r.quarantined_by.is_none()))
    }

    /// The thumbnail of `content` (media `media_id` of `server`) that
    /// best fits `wanted` among the configured sizes, made the first time
    /// (off the async runtime) and kept: 400 `M_UNKNOWN` when the content
    /// is not an image thumbnails are made of, 413 `M_TOO_LARGE` past
    /// `media.max_image_pixels`, 404 when no size has the method.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        content: &Content,
        wanted: thumbnail::Size,
        animated: bool,
    ) -> Result<(Thumbnail, PathBuf)> {
        if !thumbnail::thumbnailable(&content.content_type) {
            return Err(refusal(thumbnail::Refusal::Unsupported(content.content_type.clone())));
        }
        let max = self.config.max_image_pixels;
        let path = self.file(&content.sha256).await?;
        let source = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || thumbnail::dimensions(&path, max))
                .await
                .map_err(Error::internal)?
                .map_err(refusal)?
        };
        let chosen = thumbnail::choose(&self.config.thumbnail_sizes, source, wanted)
            .ok_or_else(|| Error::not_found("No thumbnail of that method"))?;
        let size_key = format!("{}x{}-{}-{}", chosen.width, chosen.height, chosen.method.as_str(), animated);
        let record_key = key(&[server.as_bytes(), media_id.as_bytes(), size_key.as_bytes()]);
        if let Some(kept) = self.db.get_json::<Thumbnail>(&maps::MEDIA_THUMBNAILS, &record_key)? {
            // (Made again if the file is gone from here and the bucket.)
            if let Ok(file) = self.file(&kept.sha256).await {
                return Ok((kept, file));
            }
        }
        let made = tokio::task::spawn_blocking(move || thumbnail::make(&path, chosen, animated, max))
            .await
            .map_err(Error::internal)?
            .map_err(refusal)?;
        let bytes = Bytes::from(made.bytes);
        let _committing = self.files.read().await;
        // Deleted while this was made (deleting holds the lock the other
        // way): kept, the thumbnail would name its file forever.
        if self.record(server, media_id)?.is_none() {
            return Err(Error::not_found("Media not found"));
        }
        let stored = self
            .store
            .write(futures_util::stream::once(async { Ok::<_, std::convert::Infallible>(bytes) }), u64::MAX)
            .await
            .map_err(|e| Error::internal(format!("media: cannot store a thumbnail: {e:?}")))?;
        if let Err(e) = self.to_bucket(&stored, !self.is_local(server)).await {
            tracing::warn!("media: a thumbnail of {media_id} is kept here only: {e}");
        }
        let kept = Thumbnail {
            content_type: made.content_type.to_owned(),
            size: stored.size,
            sha256: stored.sha256,
            width: made.width,
            height: made.height,
        };
        self.db.put_json(&maps::MEDIA_THUMBNAILS, &record_key, &kept)?;
        let file = self.store.path(&kept.sha256);
        Ok((kept, file))
    }

    /// Makes the configured thumbnails of new media ahead of the first
    /// request for them (failures are the requests' to report).
    pub async fn pregenerate(&self, server: &ServerName, media_id: &str, content: &Content) {
        if !thumbnail::thumbnailable(&content.content_type) {
            return;
        }
        for size in self.config.thumbnail_sizes.clone() {
            if let Err(e) = self.thumbnail(server, media_id, content, size, false).await {
                tracing::debug!("media: no {size:?} thumbnail of {media_id}: {e}");
                return;
            }
        }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub fn is_local(&self, server: &ServerName) -> bool {
        server == self.server_name
    }
}

/// `type/subtype` of a `Content-Type`, lower case.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a `Content-Type` is one of `patterns` (`type/subtype` exactly or
/// `type/*`), parameters and case aside.
pub fn type_matches<'a>(content_type: &str, patterns: impl IntoIterator<Item = &'a str>) -> bool {
    let essence = essence(content_type);
    let main = essence.split('/').next().unwrap_or_default();
    patterns.into_iter().any(|pattern| {
        let pattern = pattern.trim().to_ascii_lowercase();
        pattern == essence || pattern.strip_suffix("/*").is_some_and(|p| p == main)
    })
}

fn refusal(why: thumbnail::Refusal) -> Error {
    match why {
        thumbnail::Refusal::Unsupported(why) => {
            tracing::debug!("media: no thumbnail: {why}");
            Error::custom(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Cannot generate thumbnails for the requested content",
            )
        }
        thumbnail::Refusal::TooLarge => Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ruma::api::error::ErrorKind::TooLarge,
            "The image has too many pixels to thumbnail",
        ),
    }
}

fn too_large(max: u64) -> Error {
    Error::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ruma::api::error::ErrorKind::TooLarge,
        format!("Upload is larger than the limit of {max} bytes"),
    )
}
