//! The gateway as SSH client for the browser terminal (russh, on the web tokio runtime).
//!
//! The glommio side owns the browser's WebSocket and talks to this task through two bounded
//! channels, so backpressure flows end to end: a slow browser stops us reading the SSH channel
//! (and SSH flow control stops the server); a slow server stops us reading the browser.

pub mod files;
pub mod recorder;

use recorder::Recording;
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use russh::ChannelMsg;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Browser -> SSH.
#[derive(Debug)]
pub enum ToSsh {
    Data(Vec<u8>),
    Resize {
        cols: u16,
        rows: u16,
    },
    Close,
    /// A file transfer step (the policy allowed it).
    File(files::FileOp),
}

/// SSH -> browser.
#[derive(Debug, PartialEq, Eq)]
pub enum FromSsh {
    Ready,
    Output(Vec<u8>),
    Exit {
        status: Option<u32>,
        signal: Option<String>,
    },
    Error(String),
    File(files::FileEvent),
}

/// How the gateway logs in to the target.
pub enum Credentials {
    /// A key file from the gateway's configuration: the browser never sees it.
    KeyFile {
        user: String,
        path: std::path::PathBuf,
    },
    Password {
        user: String,
        password: String,
    },
    /// A private key the user pasted (OpenSSH or PEM format).
    Key {
        user: String,
        pem: String,
    },
    /// Keys held by an SSH agent the gateway can reach (its socket path).
    Agent {
        user: String,
        socket: std::path::PathBuf,
    },
}

pub struct SshRequest {
    pub target: String,
    pub address: String,
    pub host_keys: Vec<PublicKey>,
    pub credentials: Credentials,
    pub cols: u16,
    pub rows: u16,
    pub connect_timeout: Duration,
}

/// A pinned host key line: `ssh-ed25519 AAAA…`, optionally with a known_hosts host field in front
/// and a comment after.
pub fn parse_host_key(line: &str) -> Option<PublicKey> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = fields
        .iter()
        .position(|f| f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-"))?;
    let key = russh::keys::parse_public_key_base64(fields.get(at + 1)?).ok()?;
    (key.algorithm().as_str() == fields[at]).then_some(key)
}

struct Pinned {
    keys: Vec<PublicKey>,
    /// Set when the server's key was not among the pinned ones, for a clear error.
    mismatch: Arc<std::sync::atomic::AtomicBool>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let ok = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.keys.iter().any(|k| k.key_data() == key.key_data())
            }
            // Host certificates would need a CA setting; refuse rather than guess.
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(ok)
    }
}

/// Runs one browser SSH session to its end. Never panics; every failure becomes `FromSsh::Error`.
pub async fn run(
    req: SshRequest,
    mut from_browser: mpsc::Receiver<ToSsh>,
    to_browser: mpsc::Sender<FromSsh>,
    mut recording: Option<Recording>,
) {
    if let Err(message) = session(&req, &mut from_browser, &to_browser, &mut recording).await {
        let _ = to_browser.send(FromSsh::Error(message)).await;
    }
}

async fn session(
    req: &SshRequest,
    from_browser: &mut mpsc::Receiver<ToSsh>,
    to_browser: &mpsc::Sender<FromSsh>,
    recording: &mut Option<Recording>,
) -> Result<(), String> {
    if req.host_keys.is_empty() {
        return Err(format!(
            "no host key is pinned for {}; ask the administrator to add host_key",
            req.target
        ));
    }
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    });
    let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = Pinned {
        keys: req.host_keys.clone(),
        mismatch: mismatch.clone(),
    };
    let connecting = client::connect(config, req.address.as_str(), handler);
    let mut handle = match tokio::time::timeout(req.connect_timeout, connecting).await {
        Err(_) => return Err(format!("{} did not answer in time", req.target)),
        Ok(Err(_)) if mismatch.load(std::sync::atomic::Ordering::SeqCst) => {
            return Err(format!(
                "the host key of {} does not match the pinned key: refusing to connect (it may have been reinstalled, or someone is in the middle)",
                req.target
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", req.target)),
        Ok(Ok(h)) => h,
    };

    let auth = match &req.credentials {
        Credentials::KeyFile { user, path } => {
            let key = russh::keys::load_secret_key(path, None)
                .map_err(|e| format!("the gateway's key for {} is unusable: {e}", req.target))?;
            authenticate_key(&mut handle, user, key).await
        }
        Credentials::Key { user, pem } => {
            let key =
                russh::keys::decode_secret_key(pem, None).map_err(|_| "the private key is not valid".to_string())?;
            authenticate_key(&mut handle, user, key).await
        }
        Credentials::Agent { user, socket } => authenticate_agent(&mut handle, user, socket).await,
        Credentials::Password { user, password } => handle
            .authenticate_password(user.clone(), password.clone())
            .await
            .map(|r| r.success()),
    };
    match auth {
        Ok(true) => {}
        Ok(false) => return Err("authentication failed: the server refused these credentials".into()),
        Err(e) => return Err(format!("authentication failed: {e}")),
    }

    // Shared with the file transfers' task (which opens its own SFTP channel on it).
    let handle = Arc::new(handle);
    let mut files = Files {
        handle: handle.clone(),
        ops: None,
        to_browser: to_browser.clone(),
    };
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| format!("cannot open a session: {e}"))?;
    channel
        .request_pty(
            true,
            "xterm-256color",
            u32::from(req.cols),
            u32::from(req.rows),
            0,
            0,
            &[],
        )
        .await
        .map_err(|e| format!("cannot allocate a terminal: {e}"))?;
    channel
        .request_shell(true)
        .await
        .map_err(|e| format!("cannot start a shell: {e}"))?;
    if to_browser.send(FromSsh::Ready).await.is_err() {
        return Ok(());
    }

    let mut exit = None;
    // The channel's messages stop without Eof/Close when the connection itself breaks.
    let mut lost = false;
    'session: loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if let Some(r) = recording.as_mut() {
                        r.output(&data);
                    }
                    // Deliver the output while still taking the browser's input: neither side
                    // may wait on the other's full queue.
                    let send = to_browser.send(FromSsh::Output(data.to_vec()));
                    tokio::pin!(send);
                    loop {
                        tokio::select! {
                            sent = &mut send => match sent {
                                Ok(()) => break,
                                Err(_) => break 'session,
                            },
                            input = from_browser.recv() => {
                                if let Flow::Stop = take_input(&mut channel, recording, &mut files, input).await {
                                    break 'session;
                                }
                            }
                        }
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some((Some(exit_status), None)),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some((None, Some(format!("{signal_name:?}"))))
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) => break,
                None => {
                    lost = exit.is_none();
                    break;
                }
                Some(_) => {}
            },
            input = from_browser.recv() => {
                if let Flow::Stop = take_input(&mut channel, recording, &mut files, input).await {
                    break;
                }
            }
        }
    }
    if lost {
        return Err(format!("the connection to {} was lost", req.target));
    }
    // The exit status may follow the last data; give it a moment.
    if exit.is_none() {
        let wait = async {
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::ExitStatus { exit_status } => return Some((Some(exit_status), None)),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        return Some((None, Some(format!("{signal_name:?}"))))
                    }
                    _ => {}
                }
            }
            None
        };
        exit = tokio::time::timeout(Duration::from_millis(500), wait)
            .await
            .ok()
            .flatten();
    }
    let _ = handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    let (status, signal) = exit.unwrap_or((None, None));
    let _ = to_browser.send(FromSsh::Exit { status, signal }).await;
    Ok(())
}

enum Flow {
    Continue,
    Stop,
}

/// One message from the browser, given to the SSH channel.
/// The session's file transfers: their task, started on the first one.
struct Files<H: client::Handler + 'static> {
    handle: Arc<client::Handle<H>>,
    ops: Option<mpsc::Sender<files::FileOp>>,
    to_browser: mpsc::Sender<FromSsh>,
}

async fn take_input<H: client::Handler + 'static>(
    channel: &mut russh::Channel<client::Msg>,
    recording: &mut Option<Recording>,
    files: &mut Files<H>,
    input: Option<ToSsh>,
) -> Flow {
    match input {
        Some(ToSsh::File(op)) => {
            let ops = files.ops.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(files::run(files.handle.clone(), rx, files.to_browser.clone()));
                tx
            });
            // Backpressure: an upload goes as fast as SFTP takes it.
            let _ = ops.send(op).await;
        }
        Some(ToSsh::Data(bytes)) => {
            if let Some(r) = recording.as_mut() {
                r.input(&bytes);
            }
            if channel.data(&bytes[..]).await.is_err() {
                return Flow::Stop;
            }
        }
        Some(ToSsh::Resize { cols, rows }) => {
            if let Some(r) = recording.as_mut() {
                r.resize(cols, rows);
            }
            let _ = channel.window_change(u32::from(cols), u32::from(rows), 0, 0).await;
        }
        Some(ToSsh::Close) | None => {
            let _ = channel.eof().await;
            let _ = channel.close().await;
            return Flow::Stop;
        }
    }
    Flow::Continue
}

/// Tries each key the agent holds, as OpenSSH does.
async fn authenticate_agent(
    handle: &mut client::Handle<Pinned>,
    user: &str,
    socket: &std::path::Path,
) -> Result<bool, russh::Error> {
    use russh::keys::agent::{client::AgentClient, AgentIdentity};
    let mut agent = AgentClient::connect_uds(socket)
        .await
        .map_err(|e| russh::Error::IO(std::io::Error::other(e)))?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|e| russh::Error::IO(std::io::Error::other(e)))?;
    let hash = handle.best_supported_rsa_hash().await?.flatten();
    for identity in identities {
        let AgentIdentity::PublicKey { key, .. } = identity else {
            continue;
        };
        match handle
            .authenticate_publickey_with(user.to_owned(), key, hash, &mut agent)
            .await
        {
            Ok(r) if r.success() => return Ok(true),
            _ => continue,
        }
    }
    Ok(false)
}

async fn authenticate_key(
    handle: &mut client::Handle<Pinned>,
    user: &str,
    key: russh::keys::PrivateKey,
) -> Result<bool, russh::Error> {
    let hash = handle.best_supported_rsa_hash().await?.flatten();
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
    handle
        .authenticate_publickey(user.to_owned(), key)
        .await
        .map(|r| r.success())
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_key_lines() {
        let k = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
        assert!(super::parse_host_key(&format!("ssh-ed25519 {k}")).is_some());
        assert!(super::parse_host_key(&format!("[127.0.0.1]:2222 ssh-ed25519 {k} root@host")).is_some());
        assert!(
            super::parse_host_key(&format!("ssh-rsa {k}")).is_none(),
            "type must match the key"
        );
        assert!(super::parse_host_key("ssh-ed25519 notbase64!").is_none());
        assert!(super::parse_host_key("").is_none());
    }
}
