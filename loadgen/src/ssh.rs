//! `ssh`: whole SSH sessions through the tunnel, by `--concurrency` loops, for `--duration` or
//! `--sessions` sessions. Each session opens a tunnel exactly as `connect` does, runs a russh
//! client over it (SSH handshake, public key authentication, one `exec` on a session channel,
//! its exit status), disconnects and closes the tunnel. Every step is timed:
//!
//! - `tunnel`: TCP, TLS and upgrade (the gateway's token check and target connect included);
//! - `handshake`: SSH identification strings and key exchange, up to the first NEWKEYS;
//! - `auth`: public key authentication;
//! - `channel`: session channel opened;
//! - `command`: `exec` sent until the exit status arrived;
//! - `close`: channel close and disconnect sent until the tunnel is closed (Close frames
//!   exchanged and the connection ended; on `tcp://`, russh's session ended);
//! - `total`: all of the above.
//!
//! russh wants a tokio byte stream. Through a tunnel, a pump task owns the `WsConn` and copies
//! between it and one end of a `tokio::io::duplex` pipe whose other end russh gets; both
//! directions are driven from that one task, as every other scenario drives its session. On the
//! direct path (`tcp://`) russh gets the TCP stream itself, so the baseline has no pump.

use crate::cli::SshArgs;
use crate::endpoint::Endpoint;
use crate::stats::{record_step, step_summary, ErrorTally, Summary};
use crate::ws::{self, CloseOutcome, Input, WsConn};
use crate::{progress, Outcome};
use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::ChannelMsg;
use serde_json::json;
use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

const READ_BUF: usize = 16 * 1024;
/// Capacity of the pipe between the pump and russh, each way.
const PIPE: usize = 64 * 1024;
/// After a failure, wait this long before the next attempt, so a refusing server is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What failed, for `errors_by_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Opening the tunnel, or the tunnel breaking or closing badly.
    Tunnel,
    /// SSH identification or key exchange, host key refused included.
    Handshake,
    Auth,
    /// Channel open, exec, exit status other than 0.
    Exec,
    Timeout,
}

const KINDS: [Kind; 5] = [Kind::Tunnel, Kind::Handshake, Kind::Auth, Kind::Exec, Kind::Timeout];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tunnel => "tunnel",
            Kind::Handshake => "handshake",
            Kind::Auth => "auth",
            Kind::Exec => "exec",
            Kind::Timeout => "timeout",
        }
    }
}

struct Failure {
    kind: Kind,
    message: String,
}

fn fail(kind: Kind, message: impl std::fmt::Display) -> Failure {
    Failure {
        kind,
        message: format!("{}: {message}", kind.name()),
    }
}

/// Runs `f` within `limit`; on expiry a timeout failure naming `step`.
async fn within<T>(limit: Duration, step: &str, f: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(fail(Kind::Timeout, format!("{step}: no answer within {limit:?}"))))
}

#[derive(Default)]
struct Steps {
    tunnel: Option<Histogram<u64>>,
    handshake: Option<Histogram<u64>>,
    auth: Option<Histogram<u64>>,
    channel: Option<Histogram<u64>>,
    command: Option<Histogram<u64>>,
    close: Option<Histogram<u64>>,
    total: Option<Histogram<u64>>,
}

struct Times {
    open: ws::OpenTimes,
    tunnel: Duration,
    handshake: Duration,
    auth: Duration,
    channel: Duration,
    command: Duration,
    close: Duration,
    total: Duration,
}

/// What every session of the run shares.
struct Ctx {
    ep: Endpoint,
    config: Arc<client::Config>,
    key: Arc<PrivateKey>,
    host_key: Option<PublicKey>,
    user: String,
    command: String,
    timeout: Duration,
}

struct Shared {
    steps: Mutex<Steps>,
    errors: Mutex<ErrorTally>,
    kinds: [AtomicU64; KINDS.len()],
    done: AtomicU64,
    failed: AtomicU64,
    resumed: AtomicU64,
    next: AtomicU64,
}

/// The private key of `--ssh-key`, with a one-line reason when it cannot be used.
pub fn load_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let text = std::fs::read(path).map_err(|e| anyhow!("cannot read --ssh-key {}: {e}", path.display()))?;
    let text =
        String::from_utf8(text).map_err(|_| anyhow!("--ssh-key {} is not a private key (not text)", path.display()))?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => anyhow!(
            "--ssh-key {} is encrypted: give an unencrypted key (passphrases are not supported)",
            path.display()
        ),
        e => anyhow!(
            "--ssh-key {} is not a usable private key (OpenSSH or PEM format): {e}",
            path.display()
        ),
    })
}

/// The host key of `--known-host-key`: the first `ALGORITHM BASE64 [comment]` line, optionally
/// with a known_hosts host field in front.
pub fn load_host_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read --known-host-key {}: {e}", path.display()))?;
    let bad = || {
        anyhow!(
            "--known-host-key {} is not an OpenSSH public key line (`ssh-ed25519 AAAA… [comment]`)",
            path.display()
        )
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(bad)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // The algorithm field is the one followed by base64 that decodes to a key of that algorithm.
    (0..fields.len().saturating_sub(1))
        .find_map(|i| {
            let key = russh::keys::parse_public_key_base64(fields[i + 1]).ok()?;
            (key.algorithm().as_str() == fields[i]).then_some(key)
        })
        .ok_or_else(bad)
}

/// russh's host key algorithms, the pinned key's family first, so that a server with several
/// host keys shows the pinned one.
fn preferred_for(host_key: Option<&PublicKey>) -> russh::Preferred {
    let mut preferred = russh::Preferred::default();
    if let Some(k) = host_key {
        let alg = k.algorithm();
        let same = |a: &russh::keys::Algorithm| match (&alg, a) {
            (russh::keys::Algorithm::Rsa { .. }, russh::keys::Algorithm::Rsa { .. }) => true,
            _ => *a == alg,
        };
        let mut keys: Vec<_> = preferred.key.iter().filter(|a| same(a)).cloned().collect();
        if keys.is_empty() {
            keys.push(alg.clone());
        }
        keys.extend(preferred.key.iter().filter(|a| !same(a)).cloned());
        preferred.key = Cow::Owned(keys);
    }
    preferred
}

pub async fn run(args: SshArgs) -> anyhow::Result<Outcome> {
    let key = load_private_key(&args.ssh_key)?;
    let host_key = args.known_host_key.as_deref().map(load_host_key).transpose()?;
    if args.ssh_user.is_empty() {
        bail!("--ssh-user is empty");
    }
    let timeout: Duration = args.timeout.into();
    if timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: None,
        preferred: preferred_for(host_key.as_ref()),
        ..Default::default()
    });
    let ctx = Arc::new(Ctx {
        ep: Endpoint::from_args(&args.conn, 1).await?,
        config,
        key: Arc::new(key),
        host_key,
        user: args.ssh_user.clone(),
        command: args.command.clone(),
        timeout,
    });
    let count = args.sessions;
    let duration: Duration = args.duration.into();
    let loops = match count {
        Some(n) => u64::from(args.concurrency).min(n),
        None => u64::from(args.concurrency),
    };
    let shared = Arc::new(Shared {
        steps: Mutex::new(Steps::default()),
        errors: Mutex::new(ErrorTally::default()),
        kinds: Default::default(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        next: AtomicU64::new(0),
    });
    let pb = progress::bar(args.run.quiet, count.unwrap_or(duration.as_millis() as u64));
    let start = Instant::now();
    let end = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..loops {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        set.spawn(async move {
            loop {
                let i = shared.next.fetch_add(1, Relaxed);
                let more = match count {
                    Some(n) => i < n,
                    None => Instant::now() < end,
                };
                if !more {
                    break;
                }
                match one(&ctx, i).await {
                    Ok(t) => {
                        let mut s = shared.steps.lock().unwrap_or_else(|p| p.into_inner());
                        record_step(&mut s.tunnel, t.tunnel);
                        record_step(&mut s.handshake, t.handshake);
                        record_step(&mut s.auth, t.auth);
                        record_step(&mut s.channel, t.channel);
                        record_step(&mut s.command, t.command);
                        record_step(&mut s.close, t.close);
                        record_step(&mut s.total, t.total);
                        drop(s);
                        shared.done.fetch_add(1, Relaxed);
                        if t.open.tls_resumed {
                            shared.resumed.fetch_add(1, Relaxed);
                        }
                    }
                    Err(f) => {
                        let k = KINDS.iter().position(|k| *k == f.kind).unwrap_or(0);
                        shared.kinds[k].fetch_add(1, Relaxed);
                        shared.errors.lock().unwrap_or_else(|p| p.into_inner()).add(f.message);
                        shared.failed.fetch_add(1, Relaxed);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        });
    }
    let sh = shared.clone();
    let ticker = progress::tick(&pb, move |pb| {
        let el = start.elapsed();
        let (done, failed) = (sh.done.load(Relaxed), sh.failed.load(Relaxed));
        pb.set_position(match count {
            Some(_) => done + failed,
            None => el.as_millis() as u64,
        });
        pb.set_message(format!(
            "{done} SSH sessions ({:.0}/s), {failed} failed",
            done as f64 / el.as_secs_f64().max(1e-3)
        ));
    });
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();

    let done = shared.done.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    let errors = shared.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let kinds: Vec<(&str, u64)> = KINDS
        .iter()
        .zip(&shared.kinds)
        .map(|(k, n)| (k.name(), n.load(Relaxed)))
        .collect();
    if done == 0 {
        let (why, _) = errors.most_common().unwrap_or(("no session was attempted", 0));
        let by_kind: Vec<String> = kinds
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        bail!(
            "no SSH session completed ({failed} failed: {}): {why}",
            by_kind.join(", ")
        );
    }
    let steps = shared.steps.lock().unwrap_or_else(|p| p.into_inner());
    let rate = (done as f64 / elapsed * 10.0).round() / 10.0;
    let p50 = |h: &Option<Histogram<u64>>| {
        h.as_ref()
            .map(|h| crate::stats::ms(Summary::of(h).p50_us))
            .unwrap_or_else(|| "-".into())
    };
    let checked = ctx.host_key.is_some();
    let duration_s = count.is_none().then_some(duration.as_secs_f64());
    let json = json!({
        "scenario": "ssh",
        "url": ctx.ep.describe(),
        "concurrency": loops,
        "sessions": count,
        "workers": args.run.workers,
        "duration_s": duration_s,
        "elapsed_s": elapsed,
        "ssh_user": ctx.user,
        "command": ctx.command,
        "host_key_checked": checked,
        "completed": done,
        "failed": failed,
        "sessions_per_s": rate,
        "tls_resumed": shared.resumed.load(Relaxed),
        "steps": {
            "tunnel": step_summary(&steps.tunnel),
            "handshake": step_summary(&steps.handshake),
            "auth": step_summary(&steps.auth),
            "channel": step_summary(&steps.channel),
            "command": step_summary(&steps.command),
            "close": step_summary(&steps.close),
            "total": step_summary(&steps.total),
        },
        "errors_by_kind": serde_json::Value::Object(
            kinds.iter().map(|(k, n)| (k.to_string(), json!(n))).collect()
        ),
        "errors": errors.to_json(),
        "error_count": errors.total(),
    });
    let total = steps.total.as_ref().map(Summary::of).unwrap_or_default();
    let how = match count {
        Some(n) => format!("{n} sessions"),
        None => format!("{:.1} s", duration.as_secs_f64()),
    };
    let summary = format!(
        "ssh: {loops} loops, {how} via {} ({:?} as {}): {rate} sessions/s ({done} completed, {failed} failed); p50 tunnel {} ms, handshake {} ms, auth {} ms, channel {} ms, command {} ms, close {} ms; total {}{}{}",
        ctx.ep.describe(),
        ctx.command,
        ctx.user,
        p50(&steps.tunnel),
        p50(&steps.handshake),
        p50(&steps.auth),
        p50(&steps.channel),
        p50(&steps.command),
        p50(&steps.close),
        total.short(),
        if checked {
            ""
        } else {
            "; host key NOT checked (no --known-host-key)"
        },
        errors.suffix()
    );
    Ok(Outcome { json, summary })
}

/// Accepts the server's host key if it is the pinned one, or any key when none is pinned.
struct HostKey {
    pinned: Option<PublicKey>,
    mismatch: Arc<AtomicBool>,
}

impl client::Handler for HostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let Some(pinned) = &self.pinned else {
            return Ok(true);
        };
        let ok = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data() == pinned.key_data(),
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch.store(true, Relaxed);
        }
        Ok(ok)
    }
}

/// One whole SSH session.
async fn one(ctx: &Ctx, i: u64) -> Result<Times, Failure> {
    let t0 = Instant::now();
    let (conn, open) = ws::open(&ctx.ep, i, READ_BUF)
        .await
        .map_err(|e| fail(Kind::Tunnel, e))?;
    let tunnel = t0.elapsed();
    match conn.into_tcp() {
        // The direct path: russh on the TCP stream itself.
        Ok(tcp) => {
            let mut t = ssh(ctx, tcp, None).await?;
            t.open = open;
            t.tunnel = tunnel;
            t.total = t0.elapsed();
            Ok(t)
        }
        Err(conn) => {
            let (near, far) = tokio::io::duplex(PIPE);
            let pump = tokio::spawn(pump(*conn, far, ctx.timeout));
            let mut t = ssh(ctx, near, Some(pump)).await?;
            t.open = open;
            t.tunnel = tunnel;
            t.total = t0.elapsed();
            Ok(t)
        }
    }
}

type Pump = tokio::task::JoinHandle<Result<CloseOutcome, String>>;

/// The SSH part of a session on `stream`. With a pump: a failure caused by the tunnel breaking
/// is reported as a tunnel failure, and the close step lasts until the tunnel is closed.
async fn ssh<S>(ctx: &Ctx, stream: S, pump: Option<Pump>) -> Result<Times, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = ctx.timeout;
    let (mut times, handle) = match ssh_steps(ctx, stream, limit).await {
        Ok(v) => v,
        Err(f) => {
            // russh is gone, so the pump closes the tunnel: give it its time, no more. If the
            // tunnel broke under the SSH session, that is the cause.
            if let Some(mut p) = pump {
                match tokio::time::timeout(limit, &mut p).await {
                    Ok(Ok(Err(broke))) => return Err(fail(Kind::Tunnel, broke)),
                    Ok(_) => {}
                    Err(_) => p.abort(),
                }
            }
            return Err(f);
        }
    };
    let t = Instant::now();
    let abort = pump.as_ref().map(|p| p.abort_handle());
    let waited = within(limit, "close", async {
        // russh's session ends after sending the disconnect: it shuts its stream down.
        let _ = handle.await;
        match pump {
            None => Ok(()),
            Some(p) => match p.await {
                Ok(Ok(CloseOutcome::Clean | CloseOutcome::NoEof)) => Ok(()),
                Ok(Ok(CloseOutcome::Failed(e))) => Err(fail(Kind::Tunnel, format!("close: {e}"))),
                Ok(Err(broke)) => Err(fail(Kind::Tunnel, broke)),
                Err(e) => Err(fail(Kind::Tunnel, format!("pump task: {e}"))),
            },
        }
    })
    .await;
    if waited.is_err() {
        // Closing took too long: drop the tunnel.
        if let Some(a) = abort {
            a.abort();
        }
    }
    waited?;
    times.close += t.elapsed();
    Ok(times)
}

/// Handshake, authentication, channel, command, then channel close and disconnect sent. Returns
/// the times and the handle, to wait for the session's end.
async fn ssh_steps<S>(ctx: &Ctx, stream: S, limit: Duration) -> Result<(Times, client::Handle<HostKey>), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let zero = Duration::ZERO;
    let mut times = Times {
        open: ws::OpenTimes {
            tcp: zero,
            tls: None,
            tls_resumed: false,
            upgrade: None,
        },
        tunnel: zero,
        handshake: zero,
        auth: zero,
        channel: zero,
        command: zero,
        close: zero,
        total: zero,
    };
    let mismatch = Arc::new(AtomicBool::new(false));
    let handler = HostKey {
        pinned: ctx.host_key.clone(),
        mismatch: mismatch.clone(),
    };

    let t = Instant::now();
    let mut handle = within(limit, "handshake", async {
        client::connect_stream(ctx.config.clone(), stream, handler)
            .await
            .map_err(|e| {
                if mismatch.load(Relaxed) {
                    fail(
                        Kind::Handshake,
                        "the server's host key does not match --known-host-key: refused",
                    )
                } else {
                    fail(Kind::Handshake, e)
                }
            })
    })
    .await?;
    times.handshake = t.elapsed();

    let t = Instant::now();
    within(limit, "auth", async {
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| fail(Kind::Auth, e))?
            .flatten();
        let key = PrivateKeyWithHashAlg::new(ctx.key.clone(), hash);
        match handle.authenticate_publickey(ctx.user.clone(), key).await {
            Ok(r) if r.success() => Ok(()),
            Ok(_) => Err(fail(
                Kind::Auth,
                format!("the server refused the key for user {:?}", ctx.user),
            )),
            Err(e) => Err(fail(Kind::Auth, e)),
        }
    })
    .await?;
    times.auth = t.elapsed();

    let t = Instant::now();
    let mut channel = within(limit, "channel open", async {
        handle
            .channel_open_session()
            .await
            .map_err(|e| fail(Kind::Exec, format!("cannot open a session channel: {e}")))
    })
    .await?;
    times.channel = t.elapsed();

    let t = Instant::now();
    within(limit, "command", async {
        channel
            .exec(true, ctx.command.as_bytes())
            .await
            .map_err(|e| fail(Kind::Exec, e))?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::ExitStatus { exit_status: 0 }) => return Ok(()),
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    return Err(fail(Kind::Exec, format!("exit status {exit_status}")))
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    return Err(fail(Kind::Exec, format!("killed by signal {signal_name:?}")))
                }
                Some(ChannelMsg::Failure) => return Err(fail(Kind::Exec, "the server refused to run the command")),
                Some(ChannelMsg::Close) | None => {
                    return Err(fail(Kind::Exec, "the channel closed without an exit status"))
                }
                // Output (discarded), Success, Eof, window adjustments.
                Some(_) => {}
            }
        }
    })
    .await?;
    times.command = t.elapsed();

    // The close step starts here; the caller waits for its end.
    let t = Instant::now();
    within(limit, "close", async {
        let _ = channel.close().await;
        handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|e| fail(Kind::Tunnel, format!("close: {e}")))
    })
    .await?;
    times.close = t.elapsed();
    Ok((times, handle))
}

/// Copies bytes between the tunnel and russh's pipe until both directions ended, then closes the
/// tunnel. `Err`: the tunnel broke while the SSH session was using it.
async fn pump(mut conn: WsConn, mut io: DuplexStream, close_limit: Duration) -> Result<CloseOutcome, String> {
    let mut up = vec![0u8; READ_BUF].into_boxed_slice();
    let mut down: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut down_pos = 0usize;
    // russh's end shut down or went away: our Close is queued.
    let mut up_done = false;
    // The tunnel ended (Close or EOF): russh's end gets EOF once `down` is delivered.
    let mut down_done = false;
    let mut io_shut = false;
    poll_fn(|cx| loop {
        let mut progress = false;
        // russh -> tunnel, one piece at a time (backpressure: only when the last went out).
        if !up_done && !conn.has_queued() {
            let mut rb = ReadBuf::new(&mut up[..]);
            match Pin::new(&mut io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => conn.queue_binary(rb.filled()),
                Poll::Ready(_) => {
                    up_done = true;
                    conn.queue_close(portcullis_protocols::ws::CloseCode::NORMAL);
                }
                Poll::Pending => {}
            }
            progress |= up_done || conn.has_queued();
        }
        if conn.has_output() {
            if let Poll::Ready(Err(e)) = conn.poll_output(cx) {
                return Poll::Ready(Err(format!("tunnel write: {e}")));
            }
        }
        // Tunnel -> russh.
        if down_pos < down.len() {
            match Pin::new(&mut io).poll_write(cx, &down[down_pos..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    down_pos += n;
                    progress = true;
                }
                // russh is gone: nothing more to deliver.
                Poll::Ready(_) => {
                    down_pos = down.len();
                    progress = true;
                }
                Poll::Pending => {}
            }
        } else if !down_done {
            down.clear();
            down_pos = 0;
            match conn.poll_input(cx, |d| down.extend_from_slice(d)) {
                Poll::Ready(Ok(Input::Progress)) => progress = true,
                Poll::Ready(Ok(Input::Closed(_) | Input::Eof)) => {
                    down_done = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(format!("tunnel read: {e}"))),
                Poll::Pending => {}
            }
        }
        if down_done && down_pos >= down.len() && !io_shut {
            if Pin::new(&mut io).poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
            io_shut = true;
        }
        if up_done && down_done && io_shut {
            return Poll::Ready(Ok(()));
        }
        if !progress {
            return Poll::Pending;
        }
    })
    .await?;
    drop(io);
    // Our Close is queued; exchange Close frames and wait for the end of the connection.
    Ok(conn.close(close_limit).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_lines_and_preferences() {
        let b64 = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pub");
        for line in [
            format!("ssh-ed25519 {b64}"),
            format!("ssh-ed25519 {b64} root@host\n"),
            format!("# comment\n[127.0.0.1]:2222 ssh-ed25519 {b64}\n"),
        ] {
            std::fs::write(&p, line).unwrap();
            let k = load_host_key(&p).unwrap();
            assert_eq!(k.algorithm(), russh::keys::Algorithm::Ed25519);
            let pref = preferred_for(Some(&k));
            assert_eq!(pref.key[0], russh::keys::Algorithm::Ed25519);
            assert_eq!(pref.key.len(), russh::Preferred::default().key.len());
        }
        for bad in [format!("ssh-rsa {b64}"), "ssh-ed25519 !!!".into(), String::new()] {
            std::fs::write(&p, bad).unwrap();
            let e = load_host_key(&p).unwrap_err().to_string();
            assert!(e.contains("not an OpenSSH public key line"), "{e}");
        }
        let e = load_host_key(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read --known-host-key"), "{e}");
        // A public key is not a private key.
        std::fs::write(&p, format!("ssh-ed25519 {b64}")).unwrap();
        let e = load_private_key(&p).unwrap_err().to_string();
        assert!(e.contains("is not a usable private key"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
