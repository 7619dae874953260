//! `/v1/ssh/{target}`: the browser terminal, glommio side. Owns the browser's WebSocket, applies
//! the session's clock and policy, and talks to the SSH task on the web runtime (`crate::ssh`)
//! through two bounded channels, so no glommio thread ever owns a russh object.

use crate::server::conn::Conn;
use crate::server::session::{self, Extras, SessionAudit, StartError};
use crate::server::timeout;
use crate::server::watch::WatchHub;
use crate::ssh::files::{FileEvent, FileOp};
use crate::ssh::recorder::{Header, Recording};
use crate::ssh::{self, Credentials, FromSsh, SshRequest, ToSsh};
use crate::web::api::TerminalStart;
use futures_lite::AsyncReadExt;
use portcullis_core::audit::{EndReason, Ending};
use portcullis_core::config::Target;
use portcullis_core::relay::clock::{Action, Clock};
use portcullis_core::relay::Counters;
use portcullis_protocols::terminal::{self, ClientMessage, ServerMessage};
use portcullis_protocols::ws::{self, CloseCode, Message, MessageAssembler, OpCode, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Largest message the browser may send (pasted text, a private key).
const MAX_MESSAGE: u64 = 1 << 20;

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
            max_frame_payload: MAX_MESSAGE,
            max_message: MAX_MESSAGE,
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

    /// Room to read into (the buffer is compacted: everything before `start` is used).
    fn room(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }
}

/// A live terminal: the channels to the SSH task and what the session clock counts.
struct Terminal {
    to_ssh: mpsc::Sender<ToSsh>,
    from_ssh: mpsc::Receiver<FromSsh>,
    target: Arc<Target>,
    counters: Counters,
    /// How long a message the session can do without (resize, close) may wait for room.
    close_timeout: Duration,
    /// What administrators watching the session see; how many the user was last told of.
    hub: Arc<WatchHub>,
    watchers_told: usize,
    /// The file transfer under way, if any (one at a time).
    transfer: Option<Transfer>,
    /// Who and which session, for the file transfers' audit records.
    session: String,
    user: String,
}

/// A file transfer under way.
struct Transfer {
    upload: bool,
    path: String,
    /// Announced (upload) size, and bytes taken so far.
    size: u64,
    received: u64,
}

impl Terminal {
    /// Whether an event of the SSH side is about the transfer under way (not one refused before).
    fn current_transfer(&self, upload: bool, path: &str) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|t| t.upload == upload && t.path == path)
    }

    /// Sends a resize or close to the SSH task; dropped if it has no room in time (the SSH task
    /// keeps taking input while it delivers output, so this only waits for a busy server).
    async fn tell(&self, msg: ToSsh) {
        let _ = timeout(self.close_timeout, self.to_ssh.send(msg)).await;
    }
}

enum Wake {
    Browser(std::io::Result<usize>),
    Ssh(Option<FromSsh>),
    Tick,
    Outside(session::Event),
    /// Administrators started or stopped watching.
    Watchers,
}

pub async fn handle(conn: &mut Conn, start: TerminalStart, leftover: Vec<u8>) {
    let TerminalStart {
        grant,
        cols,
        rows,
        accept,
    } = start;
    if !conn.accept_upgrade(&accept).await {
        return;
    }
    let mut inbox = Inbox::new(leftover);
    let target = grant.target.clone();
    let slot = match conn.reserve_session(&grant).await {
        Ok(slot) => slot,
        Err(e) => {
            let path = format!("/v1/ssh/{}", target.name);
            conn.deny(&path, e.status(), &e.to_string(), Some(&grant.user));
            return end_terminal(conn, e.public(), CloseCode::TRY_AGAIN_LATER).await;
        }
    };
    let credentials = match gateway_credentials(&target) {
        Some(c) => c,
        None => match read_auth(conn, &mut inbox).await {
            Some(c) => c,
            None => {
                let path = format!("/v1/ssh/{}", target.name);
                conn.deny(&path, 400, "expected credentials first", Some(&grant.user));
                return end_terminal(conn, "expected credentials first", CloseCode::POLICY).await;
            }
        },
    };
    let audit = match conn.start_session(grant, slot) {
        Ok(audit) => audit,
        Err(e @ StartError::AuditUnavailable) => {
            return end_terminal(conn, e.public(), CloseCode::TRY_AGAIN_LATER).await
        }
        Err(e) => return end_terminal(conn, e.public(), CloseCode::INTERNAL_ERROR).await,
    };
    let recording = match open_recording(conn, &audit, cols, rows).await {
        Ok(r) => r,
        Err(why) => {
            end_terminal(
                conn,
                "session recording is unavailable; try again later",
                CloseCode::TRY_AGAIN_LATER,
            )
            .await;
            let ending = Ending::with_detail(EndReason::RecordingUnavailable, why);
            return audit.finish(ending, Counters::default(), Extras::default());
        }
    };
    let recording_path = recording.as_ref().map(|r| r.path.display().to_string());
    let (to_ssh, from_browser) = mpsc::channel::<ToSsh>(64);
    let (to_browser, from_ssh) = mpsc::channel::<FromSsh>(64);
    let request = SshRequest {
        target: target.name.clone(),
        address: target.address.clone(),
        host_keys: target
            .ssh
            .host_keys
            .iter()
            .filter_map(|k| ssh::parse_host_key(k))
            .collect(),
        credentials,
        cols,
        rows,
        connect_timeout: conn.settings().connect_timeout,
    };
    conn.shared
        .web
        .ssh_runtime
        .spawn(ssh::run(request, from_browser, to_browser, recording));
    let hub = WatchHub::new(cols, rows);
    let _ = audit.live().watch.set(hub.clone());
    let mut term = Terminal {
        to_ssh,
        from_ssh,
        target,
        counters: Counters::default(),
        close_timeout: conn.settings().close_timeout,
        hub,
        watchers_told: 0,
        transfer: None,
        session: audit.id().to_owned(),
        user: audit.grant().user.clone(),
    };
    let (tracker, shared) = (conn.tracker.clone(), conn.shared.clone());
    let watch = session::Watch::new(&tracker, &shared, &audit, conn.settings());
    let ending = run(conn, &mut term, &mut inbox, &watch, audit.id()).await;
    term.hub.end();
    if let Some(t) = term.transfer.take() {
        // The session ended during a transfer: what moved is on record.
        let moved = Some(t.received).filter(|n| *n > 0);
        audit_file(
            conn,
            &term,
            t.upload,
            t.path,
            moved,
            None,
            "failed",
            Some("interrupted: the session ended".into()),
        );
    }
    let extras = Extras {
        rdp_cookie: None,
        recording: recording_path,
    };
    audit.finish(ending, term.counters, extras);
}

/// Credentials the gateway holds for the target, if any: then users never see any.
fn gateway_credentials(target: &Target) -> Option<Credentials> {
    match (&target.ssh.user, &target.ssh.key, &target.ssh.agent) {
        (Some(user), Some(path), _) => Some(Credentials::KeyFile {
            user: user.clone(),
            path: path.clone(),
        }),
        (Some(user), None, Some(socket)) => Some(Credentials::Agent {
            user: user.clone(),
            socket: socket.clone(),
        }),
        _ => None,
    }
}

/// Opens the session's recording before it starts (on the files pool), so that a `required`
/// recording can refuse the session. `Err` (why) when it is required and cannot be written.
async fn open_recording(conn: &Conn, audit: &SessionAudit, cols: u16, rows: u16) -> Result<Option<Recording>, String> {
    let settings = &conn.policy().config.recording;
    let Some(dir) = settings.dir.clone() else {
        return Ok(None);
    };
    let grant = audit.grant();
    let header = Header {
        version: 2,
        width: cols,
        height: rows,
        timestamp: portcullis_core::keys::unix_now(),
        title: format!("{}@{}", grant.user, grant.target.name),
    };
    let (recorder, id, input, min_free) = (
        conn.shared.web.recorder.clone(),
        audit.id().to_owned(),
        grant.target.ssh.record_input,
        settings.min_free_mb,
    );
    let limit = conn.settings().request_timeout;
    let opened = match timeout(
        limit,
        conn.shared
            .pools
            .files
            .call(move || recorder.open(&dir, &id, &header, input, min_free)),
    )
    .await
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the disk did not answer in time",
        )),
    };
    match opened {
        Ok(r) => Ok(Some(r)),
        Err(e) if settings.required => {
            tracing::error!(session = %audit.id(), "recording unavailable, session refused: {e}");
            Err(e.to_string())
        }
        Err(e) => {
            tracing::error!(session = %audit.id(), "recording unavailable, session continues unrecorded: {e}");
            crate::ssh::recorder::count_unrecorded();
            Ok(None)
        }
    }
}

/// Relays until the session ends; returns how. The browser is pinged like a tunnel's client, so
/// a vanished browser (a cut network, a closed laptop) ends the session after two intervals.
async fn run(conn: &mut Conn, term: &mut Terminal, inbox: &mut Inbox, watch: &session::Watch<'_>, id: &str) -> Ending {
    let clock_settings = session::clock_settings(&term.target, conn.settings(), true);
    let mut clock = Clock::new(Instant::now(), clock_settings);
    if let Some(at) = watch.token_ends {
        // The credential's end (a shared link's) ends the session too.
        clock.end_with_credential_at(at);
    }
    let mut generation = watch.tracker.policy_generation();
    loop {
        // Messages already buffered first.
        loop {
            match inbox.next() {
                Ok(None) => break,
                Ok(Some(msg)) => {
                    // Any message from the browser is activity (typing, resizing, its pings).
                    clock.saw_data(Instant::now());
                    if let Some(end) = on_browser_message(conn, term, msg).await {
                        return end;
                    }
                }
                Err(e) => {
                    term.tell(ToSsh::Close).await;
                    conn.close_ws(e.close_code(), "protocol error").await;
                    return Ending::with_detail(EndReason::ProtocolError, e.to_string());
                }
            }
        }
        let now = Instant::now();
        let wake_at = clock.deadline(now);
        // Listening before reading the count: a change in between still wakes this loop.
        let watchers_changed = term.hub.listen();
        if term.hub.watchers() != term.watchers_told {
            term.watchers_told = term.hub.watchers();
            let told = ServerMessage::Watched {
                watchers: term.watchers_told,
            };
            if send_control(conn, &told).await.is_err() {
                term.tell(ToSsh::Close).await;
                return EndReason::ClientDisconnected.into();
            }
            continue;
        }
        let wake = {
            let tls = &mut conn.tls;
            let room = inbox.room();
            let from_ssh = &mut term.from_ssh;
            futures_lite::future::or(
                futures_lite::future::or(
                    futures_lite::future::or(async { Wake::Browser(tls.read(room).await) }, async {
                        Wake::Ssh(from_ssh.recv().await)
                    }),
                    async {
                        watchers_changed.await;
                        Wake::Watchers
                    },
                ),
                futures_lite::future::or(
                    async {
                        glommio::timer::sleep(wake_at.saturating_duration_since(now)).await;
                        Wake::Tick
                    },
                    async { Wake::Outside(watch.next(generation).await) },
                ),
            )
            .await
        };
        let ended = match wake {
            Wake::Browser(Ok(0)) | Wake::Browser(Err(_)) => {
                term.tell(ToSsh::Close).await;
                Some(EndReason::ClientDisconnected.into())
            }
            Wake::Browser(Ok(n)) => {
                inbox.end += n;
                // Anything from the browser answers a ping.
                term.counters.peer_reads += 1;
                None
            }
            Wake::Ssh(msg) => {
                clock.saw_data(Instant::now());
                on_ssh(conn, term, msg).await
            }
            Wake::Watchers => None,
            Wake::Tick => match clock.tick(Instant::now(), term.counters) {
                Action::Close(code, reason) => Some(close_for(conn, term, code, reason).await),
                Action::Ping => {
                    // A browser that cannot take a ping in time is as good as gone.
                    if conn.send_frame(OpCode::Ping, &[]).await.is_err() {
                        term.tell(ToSsh::Close).await;
                        Some(Ending::with_detail(
                            EndReason::ClientDisconnected,
                            "a ping could not be sent",
                        ))
                    } else {
                        None
                    }
                }
                Action::Wait | Action::Abort => None,
            },
            Wake::Outside(session::Event::Stopped(stop)) => {
                tracing::info!(session = id, by = %stop.by, ended = %stop.reason, "session stopped by an administrator");
                Some(close_for(conn, term, CloseCode::POLICY, stop.reason).await)
            }
            Wake::Outside(session::Event::PolicyChanged) => {
                generation = watch.tracker.policy_generation();
                if watch.revoked(id) {
                    Some(close_for(conn, term, CloseCode::POLICY, EndReason::PolicyRevoked).await)
                } else {
                    None
                }
            }
            Wake::Outside(session::Event::Shutdown) => {
                term.tell(ToSsh::Close).await;
                conn.close_ws(CloseCode::GOING_AWAY, EndReason::GatewayShutdown.as_str())
                    .await;
                Some(EndReason::GatewayShutdown.into())
            }
        };
        watch.progress(term.counters);
        if let Some(end) = ended {
            return end;
        }
    }
}

/// One message from the browser; `Some` when it ends the session.
async fn on_browser_message(conn: &mut Conn, term: &mut Terminal, msg: Message) -> Option<Ending> {
    match msg {
        Message::Binary(b) => {
            term.counters.peer_to_raw += b.len() as u64;
            // Bounded by the idle timeout: a server that takes no input for that long is idle.
            let idle = term.target.idle_timeout(conn.settings());
            match timeout(idle, term.to_ssh.send(ToSsh::Data(b))).await {
                Some(Ok(())) => {}
                // The SSH task ended: its last message says how.
                Some(Err(_)) => {
                    let limit = conn.settings().close_timeout;
                    let last = timeout(limit, term.from_ssh.recv()).await.flatten();
                    return match last {
                        Some(msg) => on_ssh(conn, term, Some(msg)).await,
                        None => Some(EndReason::TargetClosed.into()),
                    };
                }
                None => {
                    end_terminal(conn, "the SSH session stopped taking input", CloseCode::INTERNAL_ERROR).await;
                    return Some(Ending::with_detail(
                        EndReason::TargetError,
                        "the SSH session stopped taking input",
                    ));
                }
            }
        }
        Message::Text(t) => match terminal::parse_client(&t) {
            Ok(ClientMessage::Resize { cols, rows }) => {
                term.hub.resize(cols, rows);
                term.tell(ToSsh::Resize { cols, rows }).await;
            }
            Ok(ClientMessage::Close {}) => {
                term.tell(ToSsh::Close).await;
            }
            Ok(ClientMessage::Auth { .. }) => {}
            Ok(
                file @ (ClientMessage::Upload { .. }
                | ClientMessage::Chunk { .. }
                | ClientMessage::Done {}
                | ClientMessage::Download { .. }),
            ) => return on_file_message(conn, term, file).await,
            Err(e) => tracing::debug!(client = %conn.client, "ignored control message: {e}"),
        },
        Message::Ping(p) => {
            let _ = conn.send_frame(OpCode::Pong, p.as_bytes()).await;
        }
        Message::Pong(_) => {}
        Message::Close { .. } => {
            term.tell(ToSsh::Close).await;
            conn.close_ws(CloseCode::NORMAL, "").await;
            return Some(EndReason::ClientClosed.into());
        }
    }
    None
}

/// One message from the SSH task; `Some` when it ends the session.
async fn on_ssh(conn: &mut Conn, term: &mut Terminal, msg: Option<FromSsh>) -> Option<Ending> {
    match msg {
        Some(FromSsh::Ready) => {
            let ready = ServerMessage::Ready {
                clipboard: term.target.clipboard,
                file_transfer: term.target.file_transfer,
                max_file_size: term
                    .target
                    .file_transfer
                    .then_some(conn.policy().config.web.max_file_size),
            };
            if send_control(conn, &ready).await.is_err() {
                return Some(EndReason::ClientDisconnected.into());
            }
            None
        }
        Some(FromSsh::Output(bytes)) => {
            term.counters.raw_to_peer += bytes.len() as u64;
            term.hub.output(&bytes);
            if conn.send_frame(OpCode::Binary, &bytes).await.is_err() {
                term.tell(ToSsh::Close).await;
                return Some(EndReason::ClientDisconnected.into());
            }
            None
        }
        Some(FromSsh::Exit { status, signal }) => {
            let msg = ServerMessage::Exit {
                status,
                signal: signal.clone(),
            };
            let _ = send_control(conn, &msg).await;
            conn.close_ws(CloseCode::NORMAL, "session ended").await;
            Some(match (status, signal) {
                (Some(s), _) => Ending::with_detail(EndReason::ExitStatus, s.to_string()),
                (None, Some(sig)) => Ending::with_detail(EndReason::ExitSignal, sig),
                _ => EndReason::TargetClosed.into(),
            })
        }
        Some(FromSsh::File(event)) => on_file_event(conn, term, event).await,
        Some(FromSsh::Error(message)) => {
            tracing::info!(client = %conn.client, target = %term.target.name, "web terminal failed: {message}");
            end_terminal(conn, &message, CloseCode::INTERNAL_ERROR).await;
            Some(Ending::with_detail(EndReason::TargetError, message))
        }
        None => {
            conn.close_ws(CloseCode::INTERNAL_ERROR, "session ended").await;
            Some(EndReason::TargetClosed.into())
        }
    }
}

/// The session clock ends the session: tell the browser why, then close.
async fn close_for(conn: &mut Conn, term: &mut Terminal, code: CloseCode, reason: EndReason) -> Ending {
    term.tell(ToSsh::Close).await;
    let msg = ServerMessage::Error {
        message: format!("session closed: {}", reason.as_str().replace('_', " ")),
    };
    let _ = send_control(conn, &msg).await;
    conn.close_ws(code, reason.as_str()).await;
    reason.into()
}

async fn send_control(conn: &mut Conn, msg: &ServerMessage) -> std::io::Result<()> {
    conn.send_frame(OpCode::Text, terminal::encode_server(msg).as_bytes())
        .await
}

/// Waits for the browser's `auth` message (targets where the gateway holds no key).
async fn read_auth(conn: &mut Conn, inbox: &mut Inbox) -> Option<Credentials> {
    let deadline = Instant::now() + conn.settings().request_timeout;
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
        let room = inbox.room();
        if room.is_empty() {
            return None;
        }
        match timeout(left.max(Duration::from_millis(1)), conn.tls.read(room)).await {
            Some(Ok(n)) if n > 0 => inbox.end += n,
            _ => return None,
        }
    }
}

/// Tells the browser why, then closes.
async fn end_terminal(conn: &mut Conn, message: &str, code: CloseCode) {
    let msg = ServerMessage::Error {
        message: message.to_owned(),
    };
    let _ = send_control(conn, &msg).await;
    conn.close_ws(code, "").await;
}

/// Longest path a transfer may name.
const MAX_PATH: usize = 1024;

/// A file transfer message from the browser: checked against the policy (`file_transfer`), the
/// size limit and the transfer under way, then passed to the SSH side.
async fn on_file_message(conn: &mut Conn, term: &mut Terminal, msg: ClientMessage) -> Option<Ending> {
    use base64::Engine;
    let max = conn.policy().config.web.max_file_size;
    let op = match msg {
        ClientMessage::Upload { path, .. } if !term.target.file_transfer => {
            return refuse_file(conn, term, true, path, "file transfer is not allowed on this target").await;
        }
        ClientMessage::Download { path } if !term.target.file_transfer => {
            return refuse_file(conn, term, false, path, "file transfer is not allowed on this target").await;
        }
        ClientMessage::Upload { path, size } => {
            if let Some(why) = bad_path(&path).or_else(|| term.transfer.as_ref().map(|_| "a transfer is under way")) {
                return refuse_file(conn, term, true, path, why).await;
            }
            if size > max {
                return refuse_file(
                    conn,
                    term,
                    true,
                    path,
                    &format!("{size} bytes is over the limit of {max}"),
                )
                .await;
            }
            term.transfer = Some(Transfer {
                upload: true,
                path: path.clone(),
                size,
                received: 0,
            });
            FileOp::Upload { path, size }
        }
        ClientMessage::Download { path } => {
            if let Some(why) = bad_path(&path).or_else(|| term.transfer.as_ref().map(|_| "a transfer is under way")) {
                return refuse_file(conn, term, false, path, why).await;
            }
            term.transfer = Some(Transfer {
                upload: false,
                path: path.clone(),
                size: 0,
                received: 0,
            });
            FileOp::Download { path, max }
        }
        ClientMessage::Chunk { data } => {
            let t = term.transfer.as_mut().filter(|t| t.upload)?;
            let bytes = match base64::engine::general_purpose::STANDARD.decode(data.as_bytes()) {
                Ok(b) if b.len() <= terminal::MAX_CHUNK => b,
                _ => {
                    let path = t.path.clone();
                    term.transfer = None;
                    let _ = term.to_ssh.send(ToSsh::File(FileOp::Done)).await;
                    return refuse_file(conn, term, true, path, "a chunk that is not base64 of at most 8 KiB").await;
                }
            };
            t.received += bytes.len() as u64;
            if t.received > t.size {
                let path = t.path.clone();
                term.transfer = None;
                // The SSH side sees more than announced and removes the partial file.
                let _ = term.to_ssh.send(ToSsh::File(FileOp::Chunk(bytes))).await;
                return refuse_file(conn, term, true, path, "more bytes than announced").await;
            }
            FileOp::Chunk(bytes)
        }
        ClientMessage::Done {} => {
            if !term.transfer.as_ref().is_some_and(|t| t.upload) {
                return None;
            }
            FileOp::Done
        }
        _ => return None,
    };
    // Not dropped like a resize: a file's bytes wait for room (backpressure to the browser), but
    // not for ever: the session's own controls (terminate, revoke, lifetime) act in this loop.
    match timeout(conn.settings().request_timeout, term.to_ssh.send(ToSsh::File(op))).await {
        Some(Ok(())) => None,
        Some(Err(_)) => {
            end_terminal(conn, "the SSH session stopped taking input", CloseCode::INTERNAL_ERROR).await;
            Some(Ending::with_detail(
                EndReason::TargetError,
                "the SSH session stopped taking input",
            ))
        }
        None => {
            let path = term.transfer.take().map(|t| t.path).unwrap_or_default();
            term.tell(ToSsh::Close).await;
            audit_file(
                conn,
                term,
                true,
                path,
                None,
                None,
                "failed",
                Some("the server stopped taking the file".into()),
            );
            end_terminal(conn, "the server stopped taking the file", CloseCode::INTERNAL_ERROR).await;
            Some(Ending::with_detail(
                EndReason::TargetError,
                "the server stopped taking the file",
            ))
        }
    }
}

/// Why a path cannot be used, if it cannot.
fn bad_path(path: &str) -> Option<&'static str> {
    if path.is_empty() || path.len() > MAX_PATH || path.chars().any(char::is_control) {
        Some("a path of 1 to 1024 printable characters is needed")
    } else {
        None
    }
}

/// Tells the browser a transfer is refused, and audits it.
async fn refuse_file(conn: &mut Conn, term: &mut Terminal, upload: bool, path: String, why: &str) -> Option<Ending> {
    audit_file(conn, term, upload, path, None, None, "refused", Some(why.to_owned()));
    let msg = ServerMessage::FileError {
        message: format!("file transfer refused: {why}"),
    };
    match send_control(conn, &msg).await {
        Ok(()) => None,
        Err(_) => Some(EndReason::ClientDisconnected.into()),
    }
}

#[allow(clippy::too_many_arguments)]
fn audit_file(
    conn: &Conn,
    term: &Terminal,
    upload: bool,
    path: String,
    size: Option<u64>,
    sha256: Option<String>,
    outcome: &'static str,
    reason: Option<String>,
) {
    conn.shared.audit.record(&portcullis_core::audit::AuditRecord::File(
        portcullis_core::audit::FileRecord {
            time: portcullis_core::audit::now_rfc3339(),
            session: term.session.clone(),
            user: term.user.clone(),
            target: term.target.name.clone(),
            client: conn.client.to_string(),
            direction: if upload { "upload" } else { "download" },
            path,
            size,
            sha256,
            outcome,
            reason,
        },
    ));
}

/// A file transfer event from the SSH side, on to the browser (and the audit log at its end).
async fn on_file_event(conn: &mut Conn, term: &mut Terminal, event: FileEvent) -> Option<Ending> {
    use base64::Engine;
    let msg = match event {
        FileEvent::Progress(bytes) => ServerMessage::FileProgress { bytes },
        FileEvent::Data(bytes) => {
            if let Some(t) = term.transfer.as_mut() {
                t.received += bytes.len() as u64;
            }
            ServerMessage::FileData {
                data: base64::engine::general_purpose::STANDARD.encode(&bytes),
            }
        }
        FileEvent::Done {
            upload,
            path,
            size,
            sha256,
        } => {
            if term.current_transfer(upload, &path) {
                term.transfer = None;
            }
            audit_file(
                conn,
                term,
                upload,
                path.clone(),
                Some(size),
                Some(sha256.clone()),
                "ok",
                None,
            );
            ServerMessage::FileDone {
                direction: if upload { "upload" } else { "download" }.to_owned(),
                path,
                size,
                sha256,
            }
        }
        FileEvent::Failed { upload, path, message } => {
            // A transfer this side refused already (the user was told once), perhaps with the
            // next one under way by now: only the current transfer's failure is shown.
            let current = term.current_transfer(upload, &path);
            if current {
                term.transfer = None;
            }
            audit_file(conn, term, upload, path, None, None, "failed", Some(message.clone()));
            if !current {
                return None;
            }
            ServerMessage::FileError { message }
        }
    };
    match send_control(conn, &msg).await {
        Ok(()) => None,
        Err(_) => {
            term.tell(ToSsh::Close).await;
            Some(EndReason::ClientDisconnected.into())
        }
    }
}
