//! What an operator does with media (the admin API and `hearth media`):
//! quarantine (served to nobody, spread to every item of the same
//! bytes, as Synapse), protection from quarantine, listing and deleting a
//! user's media, deleting old local media, purging other servers' media
//! kept here. Deleting removes the record and its thumbnails, then the
//! files no other record names (here and in the bucket), under the write
//! side of `Media::files`, so a file another record is about to name
//! stays.

use std::collections::HashSet;

use ruma::{OwnedServerName, ServerName, UserId};

use super::{Media, MediaRecord};
use crate::{
    Error, Result,
    storage::{Batch, SEP, key, maps, prefix},
};

/// One media item as kept: whose server, its ID, its record.
pub struct Item {
    pub server: OwnedServerName,
    pub media_id: String,
    pub record: MediaRecord,
}

impl Media {
    /// Every media item kept, local and other servers'.
    pub fn items(&self) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        for (k, record) in self.db.scan_json::<MediaRecord>(&maps::MEDIA, b"")? {
            let Some(at) = k.iter().position(|b| *b == SEP) else { continue };
            let (Ok(server), Ok(media_id)) =
                (std::str::from_utf8(&k[..at]), std::str::from_utf8(&k[at + 1..]))
            else {
                continue;
            };
            let Ok(server) = OwnedServerName::try_from(server) else { continue };
            items.push(Item { server, media_id: media_id.to_owned(), record });
        }
        Ok(items)
    }

    /// The local media `user` uploaded (or reserved, or had a URL preview
    /// keep), newest first.
    pub fn user_media(&self, user: &UserId) -> Result<Vec<Item>> {
        let mut items: Vec<Item> = self
            .items()?
            .into_iter()
            .filter(|i| self.is_local(&i.server) && i.record.user_id.as_deref() == Some(user))
            .collect();
        items.sort_by(|a, b| b.record.created_ts.cmp(&a.record.created_ts).then(a.media_id.cmp(&b.media_id)));
        Ok(items)
    }

    /// Quarantines (`by` an admin, or `cli`) or releases (`by` none) media
    /// `media_id` of `server` and every item of the same bytes (a protected
    /// local item is never quarantined); how many changed.
    pub fn set_quarantine(&self, server: &ServerName, media_id: &str, by: Option<&str>) -> Result<usize> {
        let Some(named) = self.record(server, media_id)? else { return Ok(0) };
        if by.is_some() && named.protected {
            return Ok(0);
        }
        let sha256 = named.content.as_ref().map(|c| c.sha256.clone());
        let items = self.items()?.into_iter().filter(|i| {
            (i.server == server && i.media_id == media_id)
                || (sha256.is_some() && i.record.content.as_ref().map(|c| &c.sha256) == sha256.as_ref())
        });
        self.quarantine_items(items, by)
    }

    /// Quarantines all of `user`'s local media but what is protected, as
    /// [`Media::set_quarantine`] does each; how many changed.
    pub fn quarantine_user_media(&self, user: &UserId, by: &str) -> Result<usize> {
        let hashes: HashSet<String> = self
            .user_media(user)?
            .into_iter()
            .filter(|i| !i.record.protected && i.record.quarantined_by.is_none())
            .filter_map(|i| i.record.content.map(|c| c.sha256))
            .collect();
        let items = self.items()?.into_iter().filter(|i| {
            (self.is_local(&i.server) && i.record.user_id.as_deref() == Some(user))
                || i.record.content.as_ref().is_some_and(|c| hashes.contains(&c.sha256))
        });
        self.quarantine_items(items, Some(by))
    }

    fn quarantine_items(&self, items: impl Iterator<Item = Item>, by: Option<&str>) -> Result<usize> {
        let mut batch = Batch::new();
        let mut changed = 0;
        for mut item in items {
            let protected = item.record.protected && self.is_local(&item.server);
            if (by.is_some() && protected) || item.record.quarantined_by.as_deref() == by {
                continue;
            }
            item.record.quarantined_by = by.map(str::to_owned);
            batch.put_json(
                &maps::MEDIA,
                key(&[item.server.as_bytes(), item.media_id.as_bytes()]),
                &item.record,
            );
            changed += 1;
        }
        self.db.write(batch)?;
        Ok(changed)
    }

    /// Protects local media from quarantine, or no more; `false` when
    /// there is no such media.
    pub fn set_protected(&self, media_id: &str, protected: bool) -> Result<bool> {
        let Some(mut record) = self.record(self.server_name(), media_id)? else { return Ok(false) };
        record.protected = protected;
        self.db.put_json(
            &maps::MEDIA,
            &key(&[self.server_name().as_bytes(), media_id.as_bytes()]),
            &record,
        )?;
        Ok(true)
    }

    /// The local media created before `before_ts` (ms) larger than
    /// `size_gt` bytes, neither quarantined nor protected nor in `keep`
    /// (`mxc://` URIs).
    pub fn old_local_media(
        &self,
        before_ts: u64,
        size_gt: u64,
        keep: &HashSet<String>,
    ) -> Result<Vec<String>> {
        Ok(self
            .items()?
            .into_iter()
            .filter(|i| self.is_local(&i.server) && i.record.created_ts < before_ts)
            .filter(|i| i.record.content.as_ref().is_some_and(|c| c.size > size_gt))
            .filter(|i| i.record.quarantined_by.is_none() && !i.record.protected)
            .filter(|i| !keep.contains(&format!("mxc://{}/{}", i.server, i.media_id)))
            .map(|i| i.media_id)
            .collect())
    }

    /// Deletes local media: the records, their thumbnails, and the files
    /// nothing else names; the IDs deleted. What a user uploaded no longer
    /// counts against their quota.
    pub async fn delete_local(&self, media_ids: &[String]) -> Result<Vec<String>> {
        let server = self.server_name().to_owned();
        let mut found = Vec::new();
        for media_id in media_ids {
            if let Some(record) = self.record(&server, media_id)? {
                found.push(Item { server: server.clone(), media_id: media_id.clone(), record });
            }
        }
        let deleted = found.iter().map(|i| i.media_id.clone()).collect();
        self.delete_items(found).await?;
        Ok(deleted)
    }

    /// Deletes other servers' media kept here since before `before_ts`
    /// (ms), but what is quarantined (it would be fetched again); how many.
    pub async fn purge_remote(&self, before_ts: u64) -> Result<usize> {
        let old: Vec<Item> = self
            .items()?
            .into_iter()
            .filter(|i| !self.is_local(&i.server) && i.record.created_ts < before_ts)
            .filter(|i| i.record.quarantined_by.is_none())
            .collect();
        let count = old.len();
        self.delete_items(old).await?;
        Ok(count)
    }

    async fn delete_items(&self, items: Vec<Item>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let _deleting = self.files.write().await;
        let mut batch = Batch::new();
        let mut hashes = HashSet::new();
        let mut freed: std::collections::HashMap<ruma::OwnedUserId, u64> = Default::default();
        for item in &items {
            let record_key = key(&[item.server.as_bytes(), item.media_id.as_bytes()]);
            batch.delete(&maps::MEDIA, record_key);
            let thumbnails = prefix(&[item.server.as_bytes(), item.media_id.as_bytes()]);
            for (k, thumbnail) in
                self.db.scan_json::<super::Thumbnail>(&maps::MEDIA_THUMBNAILS, &thumbnails)?
            {
                batch.delete(&maps::MEDIA_THUMBNAILS, k);
                hashes.insert(thumbnail.sha256);
            }
            if let Some(content) = &item.record.content {
                hashes.insert(content.sha256.clone());
                if let Some(user) = &item.record.user_id
                    && item.record.url_cache.is_none()
                    && self.is_local(&item.server)
                {
                    *freed.entry(user.clone()).or_default() += content.size;
                }
            }
            if let Some(user) = &item.record.user_id {
                batch.delete(&maps::MEDIA_PENDING, key(&[user.as_bytes(), item.media_id.as_bytes()]));
            }
        }
        for (user, size) in freed {
            batch.put_json(
                &maps::MEDIA_USAGE,
                user.as_bytes().to_vec(),
                &self.usage(&user)?.saturating_sub(size),
            );
        }
        self.db.write(batch)?;
        // The files nothing names any more (the records are gone).
        let mut named = HashSet::new();
        for item in self.items()? {
            named.extend(item.record.content.map(|c| c.sha256));
        }
        for (_, thumbnail) in self.db.scan_json::<super::Thumbnail>(&maps::MEDIA_THUMBNAILS, b"")? {
            named.insert(thumbnail.sha256);
        }
        for sha256 in hashes.difference(&named) {
            let path = self.store.path(sha256);
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::internal(format!("media: cannot remove {}: {e}", path.display())));
            }
            if let Some(s3) = &self.s3 {
                s3.delete(sha256).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Thumbnail, Upload, thumbnail};
    use crate::{error::Error, services::Services, storage::maps};

    #[tokio::test]
    async fn a_thumbnail_made_after_its_media_is_deleted_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::for_tests(dir.path());
        let media = &services.media;
        let mut png = Vec::new();
        image::DynamicImage::new_rgb8(64, 48)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let user = ruma::user_id!("@alice:localhost");
        let mut ids = Vec::new();
        for _ in 0..2 {
            let upload =
                Upload { content_type: Some("image/png".into()), upload_name: None, declared_size: None };
            let bytes = bytes::Bytes::from(png.clone());
            let body = futures_util::stream::once(async { Ok::<_, std::convert::Infallible>(bytes) });
            ids.push(media.upload(user, upload, body).await.unwrap());
        }
        let server = media.server_name().to_owned();
        let content = media.record(&server, &ids[0]).unwrap().unwrap().content.unwrap();

        assert_eq!(media.delete_local(&ids[..1]).await.unwrap(), ids[..1]);
        assert!(media.store.path(&content.sha256).exists(), "the other upload names the bytes");
        // A thumbnail request that read the record before the deletion.
        let size = thumbnail::Size { width: 800, height: 600, method: thumbnail::Method::Scale };
        let made = media.thumbnail(&server, &ids[0], &content, size, false).await;
        assert!(matches!(made, Err(Error::Matrix { status: http::StatusCode::NOT_FOUND, .. })));
        assert!(media.db.scan_json::<Thumbnail>(&maps::MEDIA_THUMBNAILS, b"").unwrap().is_empty());

        assert_eq!(media.delete_local(&ids[1..]).await.unwrap(), ids[1..]);
        assert!(!media.store.path(&content.sha256).exists());
    }
}
