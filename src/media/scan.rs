//! Malware scanning with a ClamAV daemon (`clamd`), over its INSTREAM
//! protocol: every upload and every file fetched from another server is
//! scanned before it is stored; a file clamd finds infected is refused
//! and never stored. When clamd cannot answer, uploads are refused
//! (`media.scanner_fail_open` lets them through instead).

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What clamd said of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The name of what it found.
    Infected(String),
}

/// Where clamd listens: `unix:/path/to/clamd.ctl` or `tcp:host:port`.
pub struct Scanner {
    address: String,
}

impl Scanner {
    pub fn new(address: &str) -> Self {
        Self { address: address.to_owned() }
    }

    /// Scans the file at `path`; an error when clamd cannot be reached or
    /// does not give a verdict (a file past its `StreamMaxLength`, say).
    pub async fn scan(&self, path: &Path) -> std::io::Result<Verdict> {
        let file = tokio::fs::File::open(path).await?;
        if let Some(socket) = self.address.strip_prefix("unix:") {
            let stream = tokio::net::UnixStream::connect(socket).await?;
            instream(stream, file).await
        } else {
            let address = self.address.strip_prefix("tcp:").unwrap_or(&self.address);
            let stream = tokio::net::TcpStream::connect(address).await?;
            instream(stream, file).await
        }
    }
}

async fn instream(
    mut clamd: impl AsyncRead + AsyncWrite + Unpin,
    mut file: impl AsyncRead + Unpin,
) -> std::io::Result<Verdict> {
    clamd.write_all(b"zINSTREAM\0").await?;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        clamd.write_all(&(n as u32).to_be_bytes()).await?;
        clamd.write_all(&buffer[..n]).await?;
    }
    clamd.write_all(&0u32.to_be_bytes()).await?;
    clamd.flush().await?;
    let mut reply = Vec::new();
    clamd.read_to_end(&mut reply).await?;
    verdict(&reply)
}

/// `stream: OK`, `stream: <name> FOUND`, or an error (`… ERROR`).
fn verdict(reply: &[u8]) -> std::io::Result<Verdict> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']).trim();
    let answer = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if answer == "OK" {
        Ok(Verdict::Clean)
    } else if let Some(name) = answer.strip_suffix(" FOUND") {
        Ok(Verdict::Infected(name.trim().to_owned()))
    } else {
        Err(std::io::Error::other(format!("clamd answered {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamds_answers_are_read() {
        assert_eq!(verdict(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            verdict(b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0").unwrap(),
            Verdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        assert!(verdict(b"INSTREAM size limit exceeded. ERROR\0").is_err());
        assert!(verdict(b"").is_err());
    }
}
