//! Media files on the local filesystem, each named by the SHA-256 of its
//! content (the same bytes are stored once): `<root>/ab/cd/<hex>`. A file
//! is written under `<root>/tmp/`, synced, then renamed into place, so a
//! crash never leaves part of a file under a content name.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

pub struct LocalStore {
    root: PathBuf,
}

/// What a write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
}

/// A file written under `tmp/`, not yet under its content name.
pub struct Staged {
    tmp: PathBuf,
    pub stored: Stored,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.tmp
    }
}

/// Why a write stored nothing.
#[derive(Debug)]
pub enum WriteError {
    /// More than the limit came.
    TooLarge,
    /// The body broke off (a client that went away, a lying `Content-Length`).
    Body(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl LocalStore {
    /// The store under `root`, created if missing; what an earlier run
    /// left half-written is removed.
    pub fn open(root: &Path) -> Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| Error::internal(format!("media: cannot clear {}: {e}", tmp.display())))?;
        }
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::internal(format!("media: cannot create {}: {e}", tmp.display())))?;
        Ok(Self { root: root.to_owned() })
    }

    /// Where the content with this hash lies (if stored).
    pub fn path(&self, sha256: &str) -> PathBuf {
        let (a, b) = (&sha256[..2.min(sha256.len())], &sha256[2.min(sha256.len())..4.min(sha256.len())]);
        self.root.join(a).join(b).join(sha256)
    }

    /// Streams `body` to disk, at most `max` bytes, hashing it on the way.
    /// Nothing is left behind unless the whole body was stored.
    pub async fn write<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
        max: u64,
    ) -> Result<Stored, WriteError> {
        let staged = self.stage(body, max).await?;
        self.commit(staged).await
    }

    /// Streams `body` to a file of its own under `tmp/`, to be looked at
    /// (scanned) before it is [`LocalStore::commit`]ted or
    /// [`LocalStore::discard`]ed.
    pub async fn stage<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>>,
        max: u64,
    ) -> Result<Staged, WriteError> {
        let tmp = self.root.join("tmp").join(crate::util::random_string(24));
        match Self::write_tmp(&tmp, body, max).await {
            Ok(stored) => Ok(Staged { tmp, stored }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// A staged file under its content name.
    pub async fn commit(&self, staged: Staged) -> Result<Stored, WriteError> {
        let Staged { tmp, stored } = staged;
        let path = self.path(&stored.sha256);
        if tokio::fs::try_exists(&path).await? {
            // The same bytes are there already.
            tokio::fs::remove_file(&tmp).await?;
            return Ok(stored);
        }
        let dir = path.parent().expect("a content path has a directory");
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::rename(&tmp, &path).await?;
        // The rename itself reaches the disk before the upload is acknowledged.
        tokio::fs::File::open(dir).await?.sync_all().await?;
        Ok(stored)
    }

    /// A staged file dropped.
    pub async fn discard(&self, staged: Staged) {
        let _ = tokio::fs::remove_file(&staged.tmp).await;
    }

    async fn write_tmp<E: std::fmt::Display>(
        tmp: &Path,
        body: impl Stream<Item = Result<Bytes, E>>,
        max: u64,
    ) -> Result<Stored, WriteError> {
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(WriteError::TooLarge);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        Ok(Stored { sha256: hex::encode(hasher.finalize()), size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn the_same_bytes_are_stored_once_and_a_refused_body_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let first = store.write(chunks(&[b"hello ", b"world"]), 100).await.unwrap();
        let second = store.write(chunks(&[b"hello world"]), 100).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(first.size, 11);
        assert_eq!(std::fs::read(store.path(&first.sha256)).unwrap(), b"hello world");
        assert!(matches!(store.write(chunks(&[b"0123456789", b"x"]), 10).await, Err(WriteError::TooLarge)));
        let empty = store.write(chunks(&[]), 10).await.unwrap();
        assert_eq!(empty.size, 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "nothing half-written left"
        );
    }
}
