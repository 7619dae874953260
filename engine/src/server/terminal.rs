//! The browser SSH terminal, glommio side: owns the browser's WebSocket, applies the session's
//! clocks and policy, and talks to the SSH task on the web runtime through bounded channels.

use super::conn::{session_id, timeout, Conn};
use super::Tracker;
use crate::audit::{now_rfc3339, SessionRecord};
use crate::web::api::TerminalStart;
use crate::web::recording::Header;
use crate::web::ssh::{self, Credentials, FromSsh, SshRequest, ToSsh};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use portcullis_protocols::terminal::{self, ClientMessage, ServerMessage};
use portcullis_protocols::ws::{self, CloseCode, Message, MessageAssembler, OpCode, Role};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Reads whole WebSocket messages from the browser.
struct Inbox {
    assembler: MessageAssembler,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Inbox {
    fn new(leftover: Vec<u8>) -> Self {
        let end = leftover.len();
        let mut buf = leftover;
        buf.resize(buf.len().max(16 * 1024), 0);
        let limits = ws::Limits {
            max_frame_payload: 1 << 20,
            max_message: 1 << 20,
        };
        Inbox {
            assembler: MessageAssembler::new(Role::Server, limits),
            buf,
            start: 0,
            end,
        }
    }

    /// The next message already buffered, if any.
    fn next(&mut self) -> Result<Option<Message>, ws::ProtocolError> {
        while self.start < self.end {
            let (used, msg) = self.assembler.feed(&mut self.buf[self.start..self.end])?;
            self.start += used;
            if msg.is_some() {
                return Ok(msg);
            }
        }
        self.start = 0;
        self.end = 0;
        Ok(None)
    }
}

enum Wake {
    Browser(std::io::Result<usize>),
    Ssh(Option<FromSsh>),
    Tick,
    Shutdown,
}

impl Conn<'_> {
    pub(super) async fn terminal(&mut self, start: TerminalStart, leftover: Vec<u8>, tracker: &Tracker) {
        let TerminalStart {
            user,
            target,
            cols,
            rows,
            accept,
        } = start;
        let settings = self.state.policy.config.session.clone();
        if !matches!(
            timeout(settings.close_timeout, self.tls.write_all(&accept)).await,
            Some(Ok(()))
        ) {
            return;
        }
        let mut inbox = Inbox::new(leftover);
        let session = session_id();
        let started = now_rfc3339();

        let credentials = match (&target.ssh.user, &target.ssh.key, &target.ssh.agent) {
            (Some(user), Some(path), _) => Credentials::KeyFile {
                user: user.clone(),
                path: path.clone(),
            },
            (Some(user), None, Some(socket)) => Credentials::Agent {
                user: user.clone(),
                socket: socket.clone(),
            },
            _ => match self.read_auth(&mut inbox, settings.request_timeout).await {
                Some(c) => c,
                None => return self.end_terminal("expected credentials first", CloseCode::POLICY).await,
            },
        };
        let host_keys = target
            .ssh
            .host_keys
            .iter()
            .filter_map(|k| ssh::parse_host_key(k))
            .collect();

        let recording_settings = &self.state.policy.config.recording;
        let recording = match &recording_settings.dir {
            None => None,
            Some(dir) => {
                let header = Header {
                    version: 2,
                    width: cols,
                    height: rows,
                    timestamp: crate::keys::unix_now(),
                    title: format!("{user}@{}", target.name),
                };
                match self
                    .shared
                    .web
                    .recorder
                    .open(dir, &session, &header, target.ssh.record_input)
                {
                    Ok(r) => Some(r),
                    Err(e) if recording_settings.required => {
                        tracing::error!(%session, "recording unavailable, session refused: {e}");
                        return self
                            .end_terminal(
                                "session recording is unavailable; try again later",
                                CloseCode::INTERNAL_ERROR,
                            )
                            .await;
                    }
                    Err(e) => {
                        tracing::error!(%session, "recording unavailable, session continues unrecorded: {e}");
                        None
                    }
                }
            }
        };
        let recording_path = recording.as_ref().map(|r| r.path.display().to_string());

        let (to_ssh, from_browser) = mpsc::channel::<ToSsh>(64);
        let (to_browser, mut from_ssh) = mpsc::channel::<FromSsh>(64);
        let request = SshRequest {
            target: target.name.clone(),
            address: target.address.clone(),
            host_keys,
            credentials,
            cols,
            rows,
            connect_timeout: settings.connect_timeout,
        };
        self.shared
            .web
            .ssh_runtime
            .spawn(ssh::run(request, from_browser, to_browser, recording));
        tracing::info!(%session, %user, client = %self.client, target = %target.name, "web terminal started");

        let idle = target.ssh.idle_timeout.unwrap_or(settings.idle_timeout);
        let lifetime = target
            .ssh
            .max_lifetime
            .or(settings.max_lifetime)
            .map(|d| Instant::now() + d);
        let mut last_activity = Instant::now();
        let (mut up, mut down) = (0u64, 0u64);
        let mut read_buf = vec![0u8; 16 * 1024];
        let ended: String = 'session: loop {
            // Messages already buffered first.
            loop {
                match inbox.next() {
                    Ok(None) => break,
                    Ok(Some(msg)) => {
                        last_activity = Instant::now();
                        match msg {
                            Message::Binary(b) => {
                                up += b.len() as u64;
                                if to_ssh.send(ToSsh::Data(b)).await.is_err() {
                                    break 'session "ssh_ended".into();
                                }
                            }
                            Message::Text(t) => match terminal::parse_client(&t) {
                                Ok(ClientMessage::Resize { cols, rows }) => {
                                    let _ = to_ssh.send(ToSsh::Resize { cols, rows }).await;
                                }
                                Ok(ClientMessage::Close {}) => {
                                    let _ = to_ssh.send(ToSsh::Close).await;
                                }
                                Ok(ClientMessage::Auth { .. }) => {}
                                Err(e) => tracing::debug!(%session, "ignored control message: {e}"),
                            },
                            Message::Ping(p) => {
                                let _ = self.send_frame(OpCode::Pong, p.as_bytes()).await;
                            }
                            Message::Pong(_) => {}
                            Message::Close { .. } => {
                                let _ = to_ssh.send(ToSsh::Close).await;
                                self.close_ws(CloseCode::NORMAL, "").await;
                                break 'session "client_closed".into();
                            }
                        }
                    }
                    Err(e) => {
                        let _ = to_ssh.send(ToSsh::Close).await;
                        self.close_ws(e.close_code(), "protocol error").await;
                        break 'session format!("protocol_error: {e}");
                    }
                }
            }
            let now = Instant::now();
            let wake_at = [Some(last_activity + idle), lifetime]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            let shutdown = tracker.close_requested();
            let wake = futures_lite::future::or(
                futures_lite::future::or(async { Wake::Browser(self.tls.read(&mut read_buf).await) }, async {
                    Wake::Ssh(from_ssh.recv().await)
                }),
                futures_lite::future::or(
                    async {
                        glommio::timer::sleep(wake_at.saturating_duration_since(now)).await;
                        Wake::Tick
                    },
                    async {
                        if !tracker.closing() {
                            shutdown.await;
                        }
                        Wake::Shutdown
                    },
                ),
            )
            .await;
            match wake {
                Wake::Browser(Ok(0)) | Wake::Browser(Err(_)) => {
                    let _ = to_ssh.send(ToSsh::Close).await;
                    break "client_disconnected".into();
                }
                Wake::Browser(Ok(n)) => {
                    let (start, end) = (inbox.end, inbox.end + n);
                    if end > inbox.buf.len() {
                        inbox.buf.resize(end, 0);
                    }
                    inbox.buf[start..end].copy_from_slice(&read_buf[..n]);
                    inbox.end = end;
                }
                Wake::Ssh(Some(FromSsh::Ready)) => {
                    let ready = ServerMessage::Ready {
                        clipboard: target.ssh.clipboard,
                    };
                    if self
                        .send_frame(OpCode::Text, terminal::encode_server(&ready).as_bytes())
                        .await
                        .is_err()
                    {
                        break "client_disconnected".into();
                    }
                }
                Wake::Ssh(Some(FromSsh::Output(bytes))) => {
                    last_activity = Instant::now();
                    down += bytes.len() as u64;
                    if self.send_frame(OpCode::Binary, &bytes).await.is_err() {
                        let _ = to_ssh.send(ToSsh::Close).await;
                        break "client_disconnected".into();
                    }
                }
                Wake::Ssh(Some(FromSsh::Exit { status, signal })) => {
                    let msg = ServerMessage::Exit {
                        status,
                        signal: signal.clone(),
                    };
                    let _ = self
                        .send_frame(OpCode::Text, terminal::encode_server(&msg).as_bytes())
                        .await;
                    self.close_ws(CloseCode::NORMAL, "session ended").await;
                    break match (status, signal) {
                        (Some(s), _) => format!("exit_status: {s}"),
                        (None, Some(sig)) => format!("exit_signal: {sig}"),
                        _ => "target_closed".into(),
                    };
                }
                Wake::Ssh(Some(FromSsh::Error(message))) => {
                    tracing::info!(%session, target = %target.name, "web terminal failed: {message}");
                    self.end_terminal(&message, CloseCode::INTERNAL_ERROR).await;
                    break format!("target_error: {message}");
                }
                Wake::Ssh(None) => {
                    self.close_ws(CloseCode::INTERNAL_ERROR, "session ended").await;
                    break "target_closed".into();
                }
                Wake::Tick => {
                    let now = Instant::now();
                    let reason = if lifetime.is_some_and(|t| now >= t) {
                        Some((CloseCode::POLICY, "max_lifetime"))
                    } else if now.duration_since(last_activity) >= idle {
                        Some((CloseCode::GOING_AWAY, "idle_timeout"))
                    } else {
                        None
                    };
                    if let Some((code, reason)) = reason {
                        let _ = to_ssh.send(ToSsh::Close).await;
                        let msg = ServerMessage::Error {
                            message: format!("session closed: {}", reason.replace('_', " ")),
                        };
                        let _ = self
                            .send_frame(OpCode::Text, terminal::encode_server(&msg).as_bytes())
                            .await;
                        self.close_ws(code, reason).await;
                        break reason.into();
                    }
                }
                Wake::Shutdown => {
                    let _ = to_ssh.send(ToSsh::Close).await;
                    self.close_ws(CloseCode::GOING_AWAY, "gateway_shutdown").await;
                    break "gateway_shutdown".into();
                }
            }
        };
        tracing::info!(%session, ended = %ended, up, down, "web terminal ended");
        self.shared.audit.record(&SessionRecord {
            event: "session",
            session,
            user,
            client: self.client.to_string(),
            target: target.name.clone(),
            protocol: "ssh".into(),
            token_id: String::new(),
            start: started,
            end: now_rfc3339(),
            bytes_client_to_target: up,
            bytes_target_to_client: down,
            ended,
            rdp_cookie: None,
            recording: recording_path,
            via: Some("web_terminal"),
        });
    }

    /// Waits for the browser's `auth` message (targets where the gateway holds no key).
    async fn read_auth(&mut self, inbox: &mut Inbox, limit: Duration) -> Option<Credentials> {
        let deadline = Instant::now() + limit;
        loop {
            match inbox.next() {
                Err(_) => return None,
                Ok(Some(Message::Text(t))) => {
                    return match terminal::parse_client(&t) {
                        Ok(ClientMessage::Auth {
                            username,
                            password: Some(password),
                            ..
                        }) => Some(Credentials::Password {
                            user: username,
                            password,
                        }),
                        Ok(ClientMessage::Auth {
                            username,
                            private_key: Some(pem),
                            ..
                        }) => Some(Credentials::Key { user: username, pem }),
                        _ => None,
                    }
                }
                Ok(Some(Message::Ping(_) | Message::Pong(_))) => continue,
                Ok(Some(_)) => return None,
                Ok(None) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let end = inbox.end;
            if end == inbox.buf.len() {
                return None;
            }
            match timeout(left, self.tls.read(&mut inbox.buf[end..])).await {
                Some(Ok(n)) if n > 0 => inbox.end += n,
                _ => return None,
            }
        }
    }

    /// Tells the browser why, then closes.
    async fn end_terminal(&mut self, message: &str, code: CloseCode) {
        let msg = ServerMessage::Error {
            message: message.to_owned(),
        };
        let _ = self
            .send_frame(OpCode::Text, terminal::encode_server(&msg).as_bytes())
            .await;
        self.close_ws(code, "").await;
    }
}
