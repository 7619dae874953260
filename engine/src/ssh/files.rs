//! File transfer in the browser terminal: SFTP on the terminal's own SSH connection (a second
//! channel, `sftp` subsystem), one transfer at a time, on the web runtime like the rest of the
//! SSH side. The glommio side has checked the policy (`file_transfer`) and the size limit before
//! anything reaches here; this checks the size again as bytes arrive (an upload that sends more
//! than it announced is cut off) and before a download starts, and computes each file's SHA-256
//! for the audit record.

use super::FromSsh;
use russh::client;
use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the browser asked for (already checked against the policy).
#[derive(Debug)]
pub enum FileOp {
    Upload {
        path: String,
        size: u64,
    },
    Chunk(Vec<u8>),
    /// The upload's last chunk was sent.
    Done,
    Download {
        path: String,
        max: u64,
    },
}

/// How a transfer went.
#[derive(Debug, PartialEq, Eq)]
pub enum FileEvent {
    Progress(u64),
    /// Bytes of the file being downloaded.
    Data(Vec<u8>),
    Done {
        upload: bool,
        path: String,
        size: u64,
        sha256: String,
    },
    Failed {
        upload: bool,
        path: String,
        message: String,
    },
}

/// Reads per download message (what fits a control message once in base64).
const CHUNK: usize = portcullis_protocols::terminal::MAX_CHUNK;

/// Runs file operations for one terminal session until the session ends.
pub async fn run<H: client::Handler + 'static>(
    handle: Arc<client::Handle<H>>,
    mut ops: mpsc::Receiver<FileOp>,
    to_browser: mpsc::Sender<FromSsh>,
) {
    let mut sftp: Option<SftpSession> = None;
    while let Some(op) = ops.recv().await {
        let (upload, path, result) = match op {
            FileOp::Upload { path, size } => {
                let r = upload(&handle, &mut sftp, &path, size, &mut ops, &to_browser).await;
                (true, path, r)
            }
            FileOp::Download { path, max } => {
                let r = download(&handle, &mut sftp, &path, max, &to_browser).await;
                (false, path, r)
            }
            // Left over from an upload that failed: dropped.
            FileOp::Chunk(_) | FileOp::Done => continue,
        };
        let event = match result {
            Ok((size, sha256)) => FileEvent::Done {
                upload,
                path,
                size,
                sha256,
            },
            Err(message) => FileEvent::Failed { upload, path, message },
        };
        if to_browser.send(FromSsh::File(event)).await.is_err() {
            return;
        }
    }
}

/// The SFTP session, opened on first use.
async fn session<'a, H: client::Handler + 'static>(
    handle: &client::Handle<H>,
    sftp: &'a mut Option<SftpSession>,
) -> Result<&'a SftpSession, String> {
    if sftp.is_none() {
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| format!("cannot open a channel for file transfer: {e}"))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| format!("the server offers no SFTP: {e}"))?;
        let session = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| format!("SFTP did not start: {e}"))?;
        *sftp = Some(session);
    }
    sftp.as_ref().ok_or_else(|| "no SFTP session".to_owned())
}

async fn upload<H: client::Handler + 'static>(
    handle: &client::Handle<H>,
    sftp: &mut Option<SftpSession>,
    path: &str,
    size: u64,
    ops: &mut mpsc::Receiver<FileOp>,
    to_browser: &mpsc::Sender<FromSsh>,
) -> Result<(u64, String), String> {
    let sftp = session(handle, sftp).await?;
    let result = receive(sftp, path, size, ops, to_browser).await;
    if result.is_err() {
        // Not whole: nothing of it stays on the server.
        let _ = sftp.remove_file(path).await;
    }
    result
}

async fn receive(
    sftp: &SftpSession,
    path: &str,
    size: u64,
    ops: &mut mpsc::Receiver<FileOp>,
    to_browser: &mpsc::Sender<FromSsh>,
) -> Result<(u64, String), String> {
    let mut file = sftp
        .create(path)
        .await
        .map_err(|e| format!("cannot create {path}: {e}"))?;
    let mut hash = Sha256::new();
    let mut written = 0u64;
    loop {
        match ops.recv().await {
            Some(FileOp::Chunk(bytes)) => {
                written += bytes.len() as u64;
                if written > size {
                    let _ = file.shutdown().await;
                    return Err(format!("more bytes than the {size} announced: upload stopped"));
                }
                hash.update(&bytes);
                file.write_all(&bytes)
                    .await
                    .map_err(|e| format!("cannot write {path}: {e}"))?;
                // Never waits: the terminal may be busy handing over the next chunks, and a
                // missed progress report is made good by the next one.
                let _ = to_browser.try_send(FromSsh::File(FileEvent::Progress(written)));
            }
            Some(FileOp::Done) => break,
            // A new transfer before this one ended, or the session is over: this one is not whole.
            Some(_) | None => {
                let _ = file.shutdown().await;
                return Err("the upload was interrupted".into());
            }
        }
    }
    file.shutdown().await.map_err(|e| format!("cannot close {path}: {e}"))?;
    if written != size {
        // (The caller removes it.)
        return Err(format!("{written} bytes arrived of the {size} announced"));
    }
    Ok((written, portcullis_core::secret::hex(&hash.finalize())))
}

async fn download<H: client::Handler + 'static>(
    handle: &client::Handle<H>,
    sftp: &mut Option<SftpSession>,
    path: &str,
    max: u64,
    to_browser: &mpsc::Sender<FromSsh>,
) -> Result<(u64, String), String> {
    let sftp = session(handle, sftp).await?;
    let meta = sftp
        .metadata(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{path} is a directory"));
    }
    let size = meta.size.unwrap_or(0);
    if size > max {
        return Err(format!("{path} is {size} bytes: over the limit of {max}"));
    }
    let mut file = sftp.open(path).await.map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut hash = Sha256::new();
    let mut read = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > max {
            return Err(format!("{path} grew over the limit of {max} bytes"));
        }
        hash.update(&buf[..n]);
        if to_browser
            .send(FromSsh::File(FileEvent::Data(buf[..n].to_vec())))
            .await
            .is_err()
        {
            return Err("the browser left".into());
        }
    }
    Ok((read, portcullis_core::secret::hex(&hash.finalize())))
}
