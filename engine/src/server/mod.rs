//! The gateway runtime: one glommio executor per core, each with its own SO_REUSEPORT listener,
//! so the kernel spreads connections over cores and a connection never leaves its core.
//!
//! Shared state is read-only and swapped whole (`ArcSwap`) on SIGHUP; nothing on the data path
//! takes a lock. SIGTERM/SIGINT: stop accepting, let sessions drain, then close them cleanly.

mod conn;
mod rdp;
pub mod request;
mod socket;
mod terminal;

use crate::audit::Audit;
use crate::config::Config;
use crate::policy::Policy;
use crate::tls::Identity;
use anyhow::{anyhow, Context};
use arc_swap::ArcSwap;
use event_listener::Event;
use futures_lite::AsyncReadExt;
use glommio::{LocalExecutorBuilder, Placement};
use portcullis_protocols::token::TokenVerifier;
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a connection needs, swapped atomically on reload.
pub struct State {
    pub policy: Policy,
    pub acceptor: futures_rustls::TlsAcceptor,
}

pub struct Shared {
    pub state: ArcSwap<State>,
    pub audit: Audit,
    pub web: Arc<crate::web::WebState>,
}

/// Where the token public key comes from: a file named in the config, or (demo) memory.
pub enum KeySource {
    File,
    Pem(Vec<u8>),
}

pub struct ServeOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub key: KeySource,
    /// Called once every worker listens, with the certificate fingerprint.
    pub on_ready: Box<dyn FnOnce(&Identity) + Send>,
}

fn build_state(config: Config, key: &KeySource, identity: &Identity) -> anyhow::Result<State> {
    let pem = match key {
        KeySource::File => std::fs::read(&config.token_public_key)
            .with_context(|| format!("cannot read token public key {}", config.token_public_key.display()))?,
        KeySource::Pem(p) => p.clone(),
    };
    let leeway = config.token_leeway.as_secs();
    let verifier = TokenVerifier::from_public_pem(&pem, leeway).map_err(|e| anyhow!("token public key: {e}"))?;
    let acceptor = futures_rustls::TlsAcceptor::from(identity.server_config()?);
    Ok(State {
        policy: Policy::new(config, verifier),
        acceptor,
    })
}

fn load_identity(config: &Config) -> anyhow::Result<Identity> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Identity::load(c, k),
        _ => Identity::self_signed(&[config.listen.ip().to_string()]),
    }
}

/// Runs the gateway until SIGTERM/SIGINT and the drain that follows.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let ServeOptions {
        config,
        config_path,
        key,
        on_ready,
    } = opts;
    let identity = load_identity(&config)?;
    let audit = Audit::start(config.audit_path.as_deref())?;
    let listen = config.listen;
    let workers = config.workers;
    let web = crate::web::WebState::start()?;
    let shared = Arc::new(Shared {
        state: ArcSwap::from_pointee(build_state(config, &key, &identity)?),
        audit,
        web,
    });

    // One socketpair per worker: the signal thread writes a byte to ask it to stop.
    let mut stop_writers = Vec::new();
    let mut stop_readers = Vec::new();
    for _ in 0..workers {
        let (r, w) = std::os::unix::net::UnixStream::pair()?;
        r.set_nonblocking(true)?;
        stop_readers.push(r);
        stop_writers.push(w);
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for (id, stop) in stop_readers.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(id % cores))
            .name(&format!("portcullis-{id}"))
            // Networking needs no DMA buffers; keep memlock use small (see FIELD-NOTES).
            .io_memory(256 << 10)
            .spawn(move || async move {
                let listener = match glommio::net::TcpListener::bind(listen) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot listen on {listen}: {e}")));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                drop(ready);
                // SAFETY: the fd comes from a UnixStream we own and hand over here.
                let stop = unsafe { glommio::net::UnixStream::from_raw_fd(stop.into_raw_fd()) };
                worker(id, listener, stop, shared).await;
            })
            .map_err(|e| anyhow!("cannot start worker {id}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow!(e)),
            Err(_) => {
                // A worker that never reported failed to start (e.g. RLIMIT_MEMLOCK): its join says why.
                for h in handles {
                    h.join().map_err(|e| anyhow!("worker failed to start: {e}"))?;
                }
                return Err(anyhow!("workers failed to start"));
            }
        }
    }
    on_ready(&identity);
    tracing::info!(%listen, workers, "gateway listening");

    spawn_signal_thread(stop_writers, shared.clone(), config_path, key, identity)?;
    for h in handles {
        h.join().map_err(|e| anyhow!("worker failed: {e}"))?;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

fn spawn_signal_thread(
    stops: Vec<std::os::unix::net::UnixStream>,
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    key: KeySource,
    identity: Identity,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use std::io::Write;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut stopping = false;
        for sig in signals.forever() {
            match sig {
                SIGHUP => reload(&shared, config_path.as_deref(), &key, &identity),
                _ if stopping => {
                    tracing::warn!("second stop signal: exiting now");
                    std::process::exit(130);
                }
                _ => {
                    stopping = true;
                    tracing::info!("stop signal: no new connections, draining sessions");
                    for mut s in &stops {
                        let _ = s.write_all(b"x");
                    }
                }
            }
        }
    })?;
    Ok(())
}

/// SIGHUP: re-read the config file (policy, targets, token key, TLS files) and swap it in.
/// Listener address and worker count need a restart.
fn reload(shared: &Shared, path: Option<&std::path::Path>, key: &KeySource, identity: &Identity) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: the demo configuration has no file to reload");
        return;
    };
    let result = Config::load(path).and_then(|config| {
        let fresh_identity;
        let identity = match (&config.tls_cert, &config.tls_key) {
            (Some(_), Some(_)) => {
                fresh_identity = load_identity(&config)?;
                &fresh_identity
            }
            _ => identity,
        };
        build_state(config, key, identity)
    });
    match result {
        Ok(state) => {
            shared.state.store(Arc::new(state));
            tracing::info!(config = %path.display(), "configuration reloaded");
        }
        Err(e) => tracing::error!("reload failed, keeping the running configuration: {e:#}"),
    }
}

/// Per-executor bookkeeping of live connections, for the drain at shutdown.
pub struct Tracker {
    live: Cell<usize>,
    closing: Cell<bool>,
    /// Notified when `live` drops to zero (only the worker waits on it).
    drained: Event,
    /// Notified once, when every session must close.
    close_all: Event,
}

impl Tracker {
    fn enter(self: &Rc<Self>) -> LiveGuard {
        self.live.set(self.live.get() + 1);
        LiveGuard(self.clone())
    }

    /// True once the gateway asks every session to close.
    pub fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Resolves when the gateway asks every session to close.
    pub fn close_requested(&self) -> event_listener::EventListener {
        self.close_all.listen()
    }

    async fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.live.get() > 0 {
            let listener = self.drained.listen();
            if self.live.get() == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || conn::timeout(left, listener).await.is_none() {
                break;
            }
        }
    }
}

pub struct LiveGuard(Rc<Tracker>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let live = self.0.live.get() - 1;
        self.0.live.set(live);
        if live == 0 {
            self.0.drained.notify(usize::MAX);
        }
    }
}

async fn worker(
    id: usize,
    listener: glommio::net::TcpListener,
    mut stop: glommio::net::UnixStream,
    shared: Arc<Shared>,
) {
    let tracker = Rc::new(Tracker {
        live: Cell::new(0),
        closing: Cell::new(false),
        drained: Event::new(),
        close_all: Event::new(),
    });
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.read(&mut [0u8; 1]).await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let guard = tracker.enter();
                let shared = shared.clone();
                let tracker = tracker.clone();
                glommio::spawn_local(async move {
                    conn::handle(stream, shared, tracker).await;
                    drop(guard);
                })
                .detach();
            }
            Some(Err(e)) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(worker = id, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let settings = shared.state.load().policy.config.session.clone();
    tracing::info!(worker = id, live = tracker.live.get(), "draining");
    tracker.wait_idle(settings.drain_timeout).await;
    if tracker.live.get() > 0 {
        tracing::info!(
            worker = id,
            live = tracker.live.get(),
            "drain deadline: closing sessions"
        );
        tracker.closing.set(true);
        tracker.close_all.notify(usize::MAX);
        tracker.wait_idle(settings.close_timeout + Duration::from_secs(1)).await;
    }
}
