//! An S3-compatible object store behind the local one (`[media.s3]`), as
//! Synapse's S3 storage provider: every file stored is also put in the
//! bucket, under `prefix` + the same `ab/cd/<sha256>` path it has locally,
//! before it is acknowledged; a file missing locally (removed by
//! `hearth media offload`) is fetched back from the bucket when asked for.
//! Requests are signed (SigV4, by `rusty-s3`) and sent by reqwest,
//! streamed both ways.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::{Error, Result, config::S3Config};

/// How long a signed URL is valid (it is used at once).
const SIGNED_FOR: Duration = Duration::from_secs(600);

pub struct S3 {
    client: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    /// Whether other servers' media goes to the bucket too.
    pub store_remote: bool,
}

impl S3 {
    pub fn new(config: &S3Config) -> Result<Self> {
        let endpoint = match &config.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{}.amazonaws.com", config.region),
        };
        let endpoint =
            url::Url::parse(&endpoint).map_err(|e| Error::internal(format!("media.s3.endpoint: {e}")))?;
        let style = match config.path_style.unwrap_or(config.endpoint.is_some()) {
            true => UrlStyle::Path,
            false => UrlStyle::VirtualHost,
        };
        let bucket = Bucket::new(endpoint, style, config.bucket.clone(), config.region.clone())
            .map_err(|e| Error::internal(format!("media.s3: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal(format!("media.s3 HTTP client: {e}")))?;
        Ok(Self {
            client,
            bucket,
            credentials: Credentials::new(config.access_key_id.clone(), config.secret_access_key.clone()),
            prefix: config.prefix.clone(),
            store_remote: config.store_remote,
        })
    }

    /// The object key of the content with this hash.
    pub fn key(&self, sha256: &str) -> String {
        format!("{}{}/{}/{sha256}", self.prefix, &sha256[..2], &sha256[2..4])
    }

    /// Whether the bucket holds the content (of this size).
    pub async fn has(&self, sha256: &str, size: u64) -> Result<bool> {
        let url = self.bucket.head_object(Some(&self.credentials), &self.key(sha256)).sign(SIGNED_FOR);
        let response = self.client.head(url).send().await.map_err(|e| failed("HEAD", sha256, e))?;
        match response.status() {
            // (The header: reqwest's content_length() is the body's, none for a HEAD.)
            status if status.is_success() => Ok(response
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                == Some(size)),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            status => Err(Error::internal(format!("media.s3: HEAD of {sha256}: {status}"))),
        }
    }

    /// Puts the local file `path` (the content with this hash) in the
    /// bucket, streamed, unless it is there already.
    pub async fn put(&self, sha256: &str, path: &Path, size: u64) -> Result<()> {
        if self.has(sha256, size).await? {
            return Ok(());
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::internal(format!("media.s3: cannot read {}: {e}", path.display())))?;
        let url = self.bucket.put_object(Some(&self.credentials), &self.key(sha256)).sign(SIGNED_FOR);
        let response = self
            .client
            .put(url)
            // S3 refuses a chunked PUT: the length is sent.
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file)))
            .send()
            .await
            .map_err(|e| failed("PUT", sha256, e))?;
        if !response.status().is_success() {
            return Err(Error::internal(format!("media.s3: PUT of {sha256}: {}", response.status())));
        }
        Ok(())
    }

    /// The content with this hash as it streams from the bucket; `None`
    /// when the bucket does not have it.
    pub async fn get(
        &self,
        sha256: &str,
    ) -> Result<Option<impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + use<>>> {
        let url = self.bucket.get_object(Some(&self.credentials), &self.key(sha256)).sign(SIGNED_FOR);
        let response = self.client.get(url).send().await.map_err(|e| failed("GET", sha256, e))?;
        match response.status() {
            status if status.is_success() => Ok(Some(response.bytes_stream().map_err(std::io::Error::other))),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            status => Err(Error::internal(format!("media.s3: GET of {sha256}: {status}"))),
        }
    }

    /// Removes the content with this hash from the bucket (there or not).
    pub async fn delete(&self, sha256: &str) -> Result<()> {
        let url = self.bucket.delete_object(Some(&self.credentials), &self.key(sha256)).sign(SIGNED_FOR);
        let response = self.client.delete(url).send().await.map_err(|e| failed("DELETE", sha256, e))?;
        if !response.status().is_success() && response.status() != reqwest::StatusCode::NOT_FOUND {
            return Err(Error::internal(format!("media.s3: DELETE of {sha256}: {}", response.status())));
        }
        Ok(())
    }

    /// Whether the bucket is there and may be used (at start).
    pub async fn check(&self) -> Result<()> {
        let url = self.bucket.head_bucket(Some(&self.credentials)).sign(SIGNED_FOR);
        let response = self.client.head(url).send().await.map_err(|e| {
            Error::internal(format!(
                "media.s3: cannot reach bucket {}: {}",
                self.bucket.name(),
                crate::util::error_chain(&e)
            ))
        })?;
        if !response.status().is_success() {
            return Err(Error::internal(format!(
                "media.s3: bucket {} answers {}",
                self.bucket.name(),
                response.status()
            )));
        }
        Ok(())
    }
}

/// What an offload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offloaded {
    /// Files put in the bucket (not there before).
    pub uploaded: usize,
    /// Files removed from the local store (in the bucket now).
    pub removed: usize,
    pub bytes: u64,
}

/// Moves the files of the local store under `root` last modified before
/// `before` to the bucket: each is put there unless it already is, then
/// removed here (it is fetched back when asked for). Needs no database,
/// so it may run beside the server (`hearth media offload`, from cron).
pub async fn offload(s3: &S3, root: &Path, before: std::time::SystemTime) -> Result<Offloaded> {
    let mut done = Offloaded::default();
    let io = |e: std::io::Error| Error::internal(format!("media offload: {e}"));
    // `<root>/ab/cd/<sha256>`; tmp/ holds uploads in progress.
    for first in std::fs::read_dir(root).map_err(io)? {
        let first = first.map_err(io)?;
        if first.file_name() == "tmp" || !first.file_type().map_err(io)?.is_dir() {
            continue;
        }
        for second in std::fs::read_dir(first.path()).map_err(io)? {
            for file in std::fs::read_dir(second.map_err(io)?.path()).map_err(io)? {
                let file = file.map_err(io)?;
                let name = file.file_name().to_string_lossy().into_owned();
                let metadata = file.metadata().map_err(io)?;
                if name.len() != 64
                    || !name.bytes().all(|b| b.is_ascii_hexdigit())
                    || metadata.modified().map_err(io)? >= before
                {
                    continue;
                }
                if !s3.has(&name, metadata.len()).await? {
                    s3.put(&name, &file.path(), metadata.len()).await?;
                    done.uploaded += 1;
                }
                std::fs::remove_file(file.path()).map_err(io)?;
                done.removed += 1;
                done.bytes += metadata.len();
            }
        }
    }
    Ok(done)
}

fn failed(method: &str, sha256: &str, error: reqwest::Error) -> Error {
    Error::internal(format!("media.s3: {method} of {sha256}: {}", crate::util::error_chain(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>, prefix: &str) -> S3Config {
        S3Config {
            bucket: "media".into(),
            region: "us-east-1".into(),
            endpoint: endpoint.map(str::to_owned),
            path_style: None,
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            prefix: prefix.into(),
            store_remote: true,
        }
    }

    #[test]
    fn keys_follow_the_local_layout_after_the_prefix() {
        let sha = "ab12cd34".repeat(8);
        let s3 = S3::new(&config(Some("http://127.0.0.1:9000"), "hearth/")).unwrap();
        assert_eq!(s3.key(&sha), format!("hearth/ab/12/{sha}"));
        // A given endpoint: the bucket in the path; AWS: in the host name.
        let url = s3.bucket.get_object(Some(&s3.credentials), &s3.key(&sha)).sign(SIGNED_FOR);
        assert!(
            url.as_str().starts_with(&format!("http://127.0.0.1:9000/media/hearth/ab/12/{sha}?")),
            "{url}"
        );
        assert!(url.query().unwrap().contains("X-Amz-Signature="), "{url}");
        let aws = S3::new(&config(None, "")).unwrap();
        let url = aws.bucket.get_object(Some(&aws.credentials), &aws.key(&sha)).sign(SIGNED_FOR);
        assert!(url.as_str().starts_with("https://media.s3.us-east-1.amazonaws.com/ab/12/"), "{url}");
    }
}
