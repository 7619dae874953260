//! The gateway runtime: one glommio executor per core, each with its own SO_REUSEPORT listener,
//! so the kernel spreads connections over cores and a connection never leaves its core.
//!
//! Shared state is read-only and swapped whole (`ArcSwap`) on SIGHUP; nothing on the data path
//! takes a lock. SIGTERM/SIGINT: stop accepting, let sessions drain, then close them cleanly.
//!
//! - `conn.rs`: one connection from TLS to the request's decision, and the helpers handlers share;
//! - `handlers/`: one file per route (tunnel, RDCleanPath, web app, browser terminal);
//! - `session.rs`: a granted session's audit record and its relay under the session clock;
//! - `dial.rs`: connecting to a target; `socket.rs`: the client's socket under TLS;
//! - `shutdown.rs`: live-connection tracking and the drain.

mod admission;
mod conn;
mod dial;
mod handlers;
mod privileges;
mod rdg_pairs;
pub mod registry;
pub mod revoke;
mod session;
mod shutdown;
pub(crate) mod socket;
pub mod tokens;
pub mod watch;

pub use tokens::KeySource;

use crate::audit::Audit;
use crate::blocking::Pools;
use crate::error::{Error, Result};
use crate::tls::tickets::FleetTickets;
use crate::tls::Identity;
use arc_swap::ArcSwap;
use futures_lite::{AsyncReadExt, Future};
use glommio::{LocalExecutorBuilder, Placement};
use portcullis_core::config::Config;
use portcullis_core::policy::Policy;
use portcullis_core::revocation::Revocations;
use shutdown::Tracker;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Everything a connection needs from the configuration, swapped atomically on reload.
pub struct State {
    pub policy: Policy,
    pub tls_config: Arc<rustls::ServerConfig>,
    /// TLS to RDP targets with a `cert_ca`, by target name (the others use `rdp_client_config`).
    pub rdp_trust: std::collections::HashMap<String, Arc<rustls::ClientConfig>>,
    /// Signs the gateway's own tokens (`[auth] token_private_key`), for users who logged in.
    pub minter: Option<Arc<portcullis_core::keys::Minter>>,
}

/// Process-wide services, alive for the whole run.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub audit: Audit,
    pub web: Arc<crate::web::WebState>,
    pub pools: Pools,
    /// Users and tokens refused by every snapshot's policy (a reload keeps them).
    pub revocations: Arc<Revocations>,
    /// Which connections are taken (caps, per-client rates, early drop).
    pub admission: Arc<admission::Admission>,
    /// Connection tasks that panicked (caught; each ended its connection only).
    pub panics: std::sync::atomic::AtomicU64,
    /// Live sessions: what the admin API lists and stops, and the per-user cap.
    pub registry: Arc<registry::Registry>,
    /// RD Gateway HTTP-transport halves waiting for their other half.
    pub rdg_pairs: rdg_pairs::Pairs,
    /// This node's durable records (`[state] dir`), if configured.
    pub local_state: Option<Arc<crate::store::LocalState>>,
    /// The TLS session tickets' keys, shared with the fleet through the store (kept across reloads).
    pub tickets: Arc<FleetTickets>,
    /// Set once a stop signal came: no new connections, `/readyz` answers 503.
    draining: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the fleet store answers (the local store always does).
    pub fn store_up(&self) -> bool {
        self.web.store_health.as_ref().is_none_or(|h| h.is_up())
    }

    /// Whether what needs the fleet store is refused now: it does not answer and
    /// `[cluster] on_store_down = "deny"` (fail closed).
    pub fn store_refuses(&self) -> bool {
        use portcullis_core::config::OnStoreDown;
        !self.store_up() && self.state.load().policy.config.cluster.on_store_down == OnStoreDown::Deny
    }

    /// What a metrics scrape reads besides the cores' counters.
    pub fn metric_sources(&self) -> crate::metrics::Sources<'_> {
        let (open, unauthenticated) = self.admission.held();
        let live = self
            .registry
            .count_by(crate::metrics::via_index, crate::metrics::protocol_index);
        crate::metrics::Sources {
            connections_refused: self.admission.refused().iter().map(|(r, n)| (r.as_str(), *n)).collect(),
            connections_open: open as u64,
            connections_unauthenticated: unauthenticated as u64,
            audit: &self.audit,
            pools: &self.pools,
            panics: self.panics.load(std::sync::atomic::Ordering::Relaxed),
            live,
            draining: self.draining(),
            config_sha256: self.state.load().policy.config.source_sha256.clone(),
            recordings_dropped: crate::ssh::recorder::dropped_events(),
            recording_failures: crate::ssh::recorder::write_failures(),
            recordings_unrecorded: crate::ssh::recorder::unrecorded_sessions(),
            recordings_expired: crate::ssh::recorder::expired_recordings(),
            store_up: self.store_up(),
            store_failures: self.web.store_health.as_ref().map_or(0, |h| h.failures()),
        }
    }
}

/// What `serve` calls once it listens: with the certificate and the admin listener's address.
pub type OnReady = Box<dyn FnOnce(&Identity, Option<std::net::SocketAddr>) + Send>;

pub struct ServeOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub key: KeySource,
    /// Called once every worker listens, with the certificate and the admin listener's address.
    pub on_ready: OnReady,
    /// Written to once every worker listens (`READY <fingerprint>\n`), then closed: how a
    /// supervisor or a test learns that the gateway accepts connections.
    pub ready_fd: Option<OwnedFd>,
}

/// `None` if `fut` did not finish within `limit`.
pub async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

fn build_state(
    config: Config,
    key: &KeySource,
    identity: &Identity,
    revocations: &Arc<Revocations>,
    tickets: &Arc<FleetTickets>,
) -> Result<State> {
    let (verifier, minter) = tokens::load(&config, key)?;
    check_host_keys(&config)?;
    let rdp_trust = rdp_trust(&config)?;
    let tls_config = identity.server_config(tickets.clone())?;
    Ok(State {
        policy: Policy::new(config, verifier, revocations.clone()),
        tls_config,
        rdp_trust,
        minter,
    })
}

/// What the configuration file cannot say about itself: the token key is readable and an Ed25519
/// public key, and every pinned host key is one the SSH client takes. `serve`, a reload and
/// `portcullis config check` all ask this one function.
pub fn validate(config: &Config) -> Result<()> {
    if let Some(path) = &config.audit_path {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
            return Err(Error::file("audit log directory", dir, missing));
        }
    }
    tokens::load(config, &KeySource::File)?;
    // Single sign-on: the client secret and the CA file are readable (not their contents' truth,
    // which only the provider can tell).
    for p in &config.oidc {
        std::fs::metadata(&p.client_secret_file)
            .map_err(|e| Error::file("cannot read the OIDC client secret", &p.client_secret_file, e))?;
        if let Some(ca) = &p.ca {
            crate::tls::client_config(crate::tls::ServerTrust::CaFile(ca))?;
        }
    }
    rdp_trust(config)?;
    if let Some(user) = &config.user {
        privileges::lookup(user)?;
    }
    check_host_keys(config)
}

/// What `config check` and the start warn about without refusing: RDP targets whose server
/// certificate nothing checks (no `cert_sha256`, no `cert_ca`).
pub fn warnings(config: &Config) -> Vec<String> {
    let mut unpinned: Vec<&str> = config
        .targets
        .values()
        .filter(|t| t.protocol == portcullis_core::config::Protocol::Rdp)
        .filter(|t| t.cert_sha256.is_none() && t.cert_ca.is_none())
        .map(|t| t.name.as_str())
        .collect();
    unpinned.sort();
    unpinned
        .into_iter()
        .map(|name| {
            format!("target {name}: any server certificate is accepted (set cert_sha256 or cert_ca to check it)")
        })
        .collect()
}

/// The TLS client configurations of RDP targets with a `cert_ca`.
fn rdp_trust(config: &Config) -> Result<std::collections::HashMap<String, Arc<rustls::ClientConfig>>> {
    let mut trust = std::collections::HashMap::new();
    for t in config.targets.values() {
        if let Some(ca) = &t.cert_ca {
            let tls = crate::tls::rdp_client_config_with_ca(ca).map_err(|e| Error::Target {
                target: t.name.clone(),
                message: format!("cert_ca: {e}"),
            })?;
            trust.insert(t.name.clone(), tls);
        }
    }
    Ok(trust)
}

/// Host keys were checked for shape with the configuration; the SSH client must also take them.
fn check_host_keys(config: &Config) -> Result<()> {
    for target in config.targets.values() {
        if let Some(bad) = target
            .ssh
            .host_keys
            .iter()
            .find(|k| crate::ssh::parse_host_key(k).is_none())
        {
            return Err(Error::Target {
                target: target.name.clone(),
                message: format!("host_key is not a usable SSH public key: {bad:?}"),
            });
        }
    }
    Ok(())
}

fn load_identity(config: &Config) -> Result<Identity> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Identity::load(c, k),
        _ => Identity::self_signed(&[config.listen.ip().to_string()]),
    }
}

/// Runs the gateway until SIGTERM/SIGINT and the drain that follows.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let ServeOptions {
        config,
        config_path,
        key,
        on_ready,
        ready_fd,
    } = opts;
    let identity = load_identity(&config)?;
    let audit = Audit::start(config.audit_path.as_deref(), config.audit_syslog.as_deref())?;
    let (listen, workers, admin_listen) = (config.listen, config.workers, config.admin.listen);
    let run_as = config.user.clone();
    let cluster_store = config.cluster.store.clone();
    let node = config.cluster.node.clone();
    tracing::info!(node = %config.cluster.node, store = ?config.cluster.store, "cluster");
    for warning in warnings(&config) {
        tracing::warn!("{warning}");
    }
    let capacity = connection_capacity(workers);
    let admission = admission::Admission::new(&config.limits.connections, capacity);
    let limits = admission.limits();
    tracing::info!(
        capacity,
        max_connections = limits.max_connections,
        per_client = limits.max_connections_per_client,
        "connection limits"
    );
    crate::web::assets::compress_in_background();
    let revocations = Arc::new(Revocations::default());
    let local_state = load_local_state(config.state_dir.as_deref(), &revocations)?;
    let tickets = FleetTickets::new();
    let shared = Arc::new(Shared {
        state: ArcSwap::from_pointee(build_state(config, &key, &identity, &revocations, &tickets)?),
        tickets,
        audit,
        web: crate::web::WebState::start(&cluster_store, &node, local_state.clone())?,
        pools: Pools::start().map_err(|e| Error::Io("cannot start the blocking pools", e))?,
        revocations,
        admission,
        panics: Default::default(),
        registry: Default::default(),
        rdg_pairs: Default::default(),
        draining: Default::default(),
        local_state,
    });
    // The fleet's ticket keys before the first connection (a store that does not answer soon
    // delays nothing: until it does, clients do full handshakes).
    let first = shared.web.ssh_runtime.block_on(async {
        let store = shared.web.store.as_ref();
        // A fleet store is still connecting: ask again until it answers, for a short while.
        tokio::time::timeout(Duration::from_secs(2), async {
            while shared.tickets.refresh(store).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    });
    if first.is_err() {
        tracing::warn!("TLS ticket keys not fetched yet: session tickets start once the store answers");
    }
    shared
        .tickets
        .start_refresher(shared.web.store.clone(), shared.web.ssh_runtime.handle());

    if let (Some(fleet), portcullis_core::config::StoreKind::Redis(url)) = (&shared.web.fleet, &cluster_store) {
        let handlers = crate::store::FleetHandlers {
            revoked: fleet_revocations(&shared),
            terminate: fleet_terminations(&shared),
            watch: fleet_watches(&shared, fleet.clone()),
        };
        fleet
            .watch(url, handlers)
            .map_err(|e| Error::Startup(format!("[cluster] store: {e}")))?;
        start_heartbeat(&shared, fleet.clone());
    }
    let retention = shared.clone();
    crate::ssh::recorder::start_retention(move || {
        let state = retention.state.load();
        let r = &state.policy.config.recording;
        Some((r.dir.clone()?, r.retention?))
    })
    .map_err(|e| Error::Io("cannot start the recordings' retention thread", e))?;

    // One socketpair per worker: the signal thread writes a byte to ask it to stop.
    let mut stop_writers = Vec::new();
    let mut stop_readers = Vec::new();
    for _ in 0..workers {
        let (r, w) = std::os::unix::net::UnixStream::pair().map_err(|e| Error::Io("socketpair", e))?;
        r.set_nonblocking(true).map_err(|e| Error::Io("socketpair", e))?;
        stop_readers.push(r);
        stop_writers.push(w);
    }

    let cpus = allowed_cpus();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
    let mut handles = Vec::new();
    for (id, stop) in stop_readers.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let placement = match cpus.get(id % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
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
                // SAFETY: the descriptor comes from a UnixStream this closure owns; `into_raw_fd`
                // gives up that ownership, so glommio's stream is its only owner.
                let stop = unsafe { glommio::net::UnixStream::from_raw_fd(stop.into_raw_fd()) };
                worker(id, listener, stop, shared).await;
            })
            .map_err(|e| Error::Startup(format!("cannot start worker {id}: {e}")))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Startup(e)),
            Err(_) => {
                // A worker that never reported failed to start (e.g. RLIMIT_MEMLOCK): its join says why.
                for h in handles {
                    h.join()
                        .map_err(|e| Error::Startup(format!("worker failed to start: {e}")))?;
                }
                return Err(Error::Startup("workers failed to start".into()));
            }
        }
    }
    let admin = match admin_listen {
        Some(addr) => Some(crate::admin::start(
            addr,
            shared.clone(),
            Some(identity.server_config(shared.tickets.clone())?),
        )?),
        None => None,
    };
    // Every port is bound and every kept file open: root is no longer needed.
    if let Some(name) = run_as {
        let account = privileges::drop_to(&name)?;
        tracing::info!(user = %name, uid = account.uid, gid = account.gid, "running unprivileged");
    }
    // What was logged while starting is out before anyone is told the gateway is ready.
    crate::logging::flush(Duration::from_millis(500));
    on_ready(&identity, admin);
    if let Some(fd) = ready_fd {
        let mut ready = std::fs::File::from(fd);
        // A supervisor that went away must not stop the gateway.
        let _ = match admin {
            Some(admin) => writeln!(ready, "READY {} admin={admin}", identity.fingerprint),
            None => writeln!(ready, "READY {}", identity.fingerprint),
        };
    }
    tracing::info!(%listen, workers, admin = ?admin, "gateway listening");

    spawn_signal_thread(stop_writers, shared.clone(), config_path, key, identity)?;
    for h in handles {
        h.join().map_err(|e| Error::Startup(format!("worker failed: {e}")))?;
    }
    // Records of the last sessions may still be queued.
    if !shared.audit.sync(Duration::from_secs(5)) {
        tracing::error!("audit records still queued at exit");
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// What a node does with a revocation of the fleet (published by any node's admin API, or
/// loaded when it subscribes): refuse from now on, and end the matching live sessions here.
fn fleet_revocations(shared: &Shared) -> Arc<dyn Fn(crate::store::RevocationNotice) + Send + Sync> {
    use crate::store::RevokedKind;
    let (revocations, registry) = (shared.revocations.clone(), shared.registry.clone());
    Arc::new(move |notice| {
        let now = portcullis_core::keys::unix_now();
        if notice.until.is_some_and(|t| t <= now) {
            return;
        }
        if revocations.revoke(notice.revocation(), now).is_err() {
            tracing::error!("too many revocations: a fleet revocation is not applied on this node");
        }
        let stop = registry::Stop {
            reason: portcullis_core::audit::EndReason::Revoked,
            by: notice.by.clone(),
        };
        let ended = match notice.kind {
            RevokedKind::User => registry.stop_where(|s| s.user == notice.subject, &stop),
            RevokedKind::Token => registry.stop_where(
                |s| {
                    let id = Some(notice.subject.as_str());
                    s.token_id.as_deref() == id || s.login_id.as_deref() == id
                },
                &stop,
            ),
        };
        if ended > 0 {
            tracing::info!(ended, by = %notice.by, "live sessions ended by a fleet revocation");
        }
    })
}

/// Opens `[state] dir` and applies the revocations it holds (those that ended are deleted).
fn load_local_state(dir: Option<&Path>, revocations: &Revocations) -> Result<Option<Arc<crate::store::LocalState>>> {
    let Some(dir) = dir else { return Ok(None) };
    let state = crate::store::LocalState::open(dir)
        .map_err(|e| Error::Startup(format!("[state] dir {}: {e}", dir.display())))?;
    let now = portcullis_core::keys::unix_now();
    let records = state.revocations(now).map_err(|e| Error::Startup(e.to_string()))?;
    for notice in &records {
        if revocations.revoke(notice.revocation(), now).is_err() {
            tracing::error!("too many revocations in the state database: some are not applied");
            break;
        }
    }
    tracing::info!(dir = %dir.display(), revocations = records.len(), "durable state loaded");
    Ok(Some(Arc::new(state)))
}

/// What a node does with a terminate request of the fleet: end the session if it is here.
fn fleet_terminations(shared: &Shared) -> Arc<dyn Fn(crate::store::TerminateNotice) + Send + Sync> {
    let registry = shared.registry.clone();
    Arc::new(move |notice| {
        if let Some(session) = registry.get(&notice.id) {
            let stop = registry::Stop {
                reason: portcullis_core::audit::EndReason::Terminated,
                by: notice.by.clone(),
            };
            if session.stop(stop) {
                tracing::info!(session = %notice.id, by = %notice.by, "session terminated from another node");
            }
        }
    })
}

/// An administrator on another node watches one of this node's terminals: a watcher of its hub
/// whose stream goes out on the requester's channel (`watch::forward`), on the store's runtime.
fn fleet_watches(
    shared: &Shared,
    fleet: Arc<crate::store::RedisStore>,
) -> Arc<dyn Fn(crate::store::WatchRequest) + Send + Sync> {
    let registry = shared.registry.clone();
    Arc::new(move |request| {
        let Some(hub) = registry.get(&request.session).and_then(|s| s.watch.get().cloned()) else {
            return;
        };
        let Some(watching) = hub.watch() else {
            return;
        };
        tracing::info!(session = %request.session, by = %request.by, "terminal watched from another node");
        let (fleet, channel) = (fleet.clone(), request.channel);
        tokio::spawn(watch::forward(watching, Duration::from_secs(5), move |bytes| {
            let publish = fleet.publish_bytes(channel.clone(), bytes);
            async move { publish.await.ok() }
        }));
    })
}

/// Refreshes this node's live sessions in the fleet store every `[cluster] heartbeat`, with
/// their byte counts; a node that stops (crashes) lets them expire after three intervals.
fn start_heartbeat(shared: &Arc<Shared>, fleet: Arc<crate::store::RedisStore>) {
    let shared_ = shared.clone();
    shared.web.ssh_runtime.spawn(async move {
        loop {
            let (heartbeat, ttl, node) = {
                let state = shared_.state.load();
                let cluster = &state.policy.config.cluster;
                (cluster.heartbeat, cluster.live_ttl(), cluster.node.clone())
            };
            tokio::time::sleep(heartbeat).await;
            let records = shared_.registry.list().iter().map(|s| s.record(&node)).collect();
            // A failure is the store's to report (once); the next beat tries again.
            let _ = fleet.register_live(records, ttl).await;
        }
    });
}

/// Descriptors kept back from connections: listeners, io_uring rings and pools, the audit log,
/// recordings, and room to accept and close what is refused.
const RESERVED_FDS: u64 = 128;

/// The CPUs this process may run on, in order: its affinity mask, as set by `taskset`,
/// systemd's `CPUAffinity=` or a container's cpuset. Worker `i` is pinned to the `i`-th of them
/// (wrapping): glommio's `Placement::Fixed` takes a CPU number, and numbering from 0 would pin
/// executors onto CPUs the operator kept the gateway off (or fail where a cpuset forbids them).
/// Empty if the mask cannot be read: the executors then run unpinned.
fn allowed_cpus() -> Vec<usize> {
    use rustix::thread::{sched_getaffinity, CpuSet};
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect(),
        Err(e) => {
            tracing::warn!("cannot read this process's CPU affinity ({e}): workers run unpinned");
            Vec::new()
        }
    }
}

/// Raises the open-files limit to its hard limit and says how many client connections it
/// allows: each may need two descriptors (the client's and its target's).
fn connection_capacity(workers: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let mut soft = lim.current.unwrap_or(u64::MAX);
    if lim.current < lim.maximum || lim.maximum.is_none() {
        let want = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Nofile, want) {
            Ok(()) => soft = lim.maximum.unwrap_or(u64::MAX),
            Err(e) => tracing::warn!("cannot raise the open-files limit from {soft}: {e}"),
        }
    }
    let reserved = RESERVED_FDS + 8 * workers as u64;
    let capacity = (soft.min(1 << 24).saturating_sub(reserved) / 2).max(16) as usize;
    tracing::info!(open_files = soft, capacity, "descriptors");
    capacity
}

async fn read_control(
    mut control: glommio::net::UnixStream,
    tracker: Rc<Tracker>,
    stop: Rc<event_listener::Event>,
    stopping: Rc<std::cell::Cell<bool>>,
) {
    let mut byte = [0u8; 1];
    loop {
        match control.read(&mut byte).await {
            Ok(1) if byte[0] == POLICY_CHANGED => tracker.policy_changed(),
            // STOP, or the signal thread is gone: stop accepting.
            _ => {
                stopping.set(true);
                stop.notify(usize::MAX);
                return;
            }
        }
    }
}

fn spawn_signal_thread(
    stops: Vec<std::os::unix::net::UnixStream>,
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    key: KeySource,
    identity: Identity,
) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGXFSZ};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1]).map_err(|e| Error::Io("signals", e))?;
    // A write past a file size limit (RLIMIT_FSIZE) must fail with EFBIG, which the audit and
    // recording writers handle, rather than kill the gateway (SIGXFSZ's default action).
    signal_hook::flag::register(SIGXFSZ, Arc::new(std::sync::atomic::AtomicBool::new(false)))
        .map_err(|e| Error::Io("signals", e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        shared.audit.reopen();
                        if reload(&shared, config_path.as_deref(), &key, &identity) {
                            // Live sessions check themselves against the new policy.
                            for mut s in &stops {
                                let _ = s.write_all(&[POLICY_CHANGED]);
                            }
                        }
                    }
                    SIGUSR1 => shared.audit.reopen(),
                    _ if stopping => {
                        tracing::warn!("second stop signal: exiting now");
                        std::process::exit(130);
                    }
                    _ => {
                        stopping = true;
                        shared.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("stop signal: no new connections, draining sessions");
                        for mut s in &stops {
                            let _ = s.write_all(&[STOP]);
                        }
                    }
                }
            }
        })
        .map_err(|e| Error::Io("cannot start the signal thread", e))?;
    Ok(())
}

/// SIGHUP: re-read the config file (policy, targets, token key, TLS files) and swap it in.
/// Listener address and worker count need a restart.
/// Re-reads the file and swaps the new state in; true when it did.
fn reload(shared: &Shared, path: Option<&std::path::Path>, key: &KeySource, identity: &Identity) -> bool {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: the demo configuration has no file to reload");
        return false;
    };
    let result = Config::load(path).map_err(Error::from).and_then(|config| {
        let fresh_identity;
        let identity = match (&config.tls_cert, &config.tls_key) {
            (Some(_), Some(_)) => {
                fresh_identity = load_identity(&config)?;
                &fresh_identity
            }
            _ => identity,
        };
        build_state(config, key, identity, &shared.revocations, &shared.tickets)
    });
    match result {
        Ok(state) => {
            shared.admission.reconfigure(&state.policy.config.limits.connections);
            shared.state.store(Arc::new(state));
            tracing::info!(config = %path.display(), "configuration reloaded");
            true
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e}");
            false
        }
    }
}

/// What the signal thread tells each worker, one byte each over its socketpair.
const STOP: u8 = b'x';
const POLICY_CHANGED: u8 = b'r';

async fn worker(
    id: usize,
    listener: glommio::net::TcpListener,
    control: glommio::net::UnixStream,
    shared: Arc<Shared>,
) {
    crate::metrics::register_core();
    // The relay buffer pool is per thread: its use is published for the metrics once a second.
    glommio::spawn_local(async {
        loop {
            crate::metrics::with(|m| m.publish_pool());
            glommio::timer::sleep(Duration::from_secs(1)).await;
        }
    })
    .detach();
    let tracker = Rc::new(Tracker::default());
    // The control socket is read by a task of its own, never cancelled, so no byte is lost to an
    // accept that won a race; it turns bytes into the tracker's signals.
    let stop = Rc::new(event_listener::Event::new());
    let stopping = Rc::new(std::cell::Cell::new(false));
    glommio::spawn_local(read_control(control, tracker.clone(), stop.clone(), stopping.clone())).detach();
    // Accept failures are logged once per run of them, not once per failure.
    let mut failing = false;
    loop {
        if stopping.get() {
            break;
        }
        let stop_listener = stop.listen();
        if stopping.get() {
            break;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop_listener.await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                failing = false;
                crate::metrics::with(|m| m.connections_accepted.inc());
                // Refused connections are closed at once, before TLS costs anything.
                let ticket = match shared.admission.enter() {
                    Ok(t) => t,
                    Err(why) => {
                        tracing::debug!(worker = id, refused = why.as_str(), "connection refused");
                        continue;
                    }
                };
                let guard = tracker.enter();
                let counted = shared.clone();
                let incoming = Box::new(conn::Incoming {
                    stream,
                    shared: shared.clone(),
                    tracker: tracker.clone(),
                    ticket,
                });
                glommio::spawn_local(async move {
                    // A panic ends this connection only: caught here, logged and counted, so the
                    // worker and every other session on it go on. Its session audit (dropped
                    // while unwinding) records `internal_error`.
                    let task = std::panic::AssertUnwindSafe(conn::handle(incoming));
                    if futures_lite::FutureExt::catch_unwind(task).await.is_err() {
                        let n = counted.panics.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        tracing::error!(worker = id, panics = n, "a connection task panicked; connection closed");
                    }
                    drop(guard);
                })
                .detach();
            }
            Some(Err(e)) => {
                // Typically EMFILE despite the caps (other descriptors): back off instead of spinning.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        worker = id,
                        "accept failing (backing off, logged once until it recovers): {e}"
                    );
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let settings = shared.state.load().policy.config.session.clone();
    tracing::info!(worker = id, live = tracker.live(), "draining");
    tracker.wait_idle(settings.drain_timeout).await;
    if tracker.live() > 0 {
        tracing::info!(worker = id, live = tracker.live(), "drain deadline: closing sessions");
        tracker.close_all();
        tracker.wait_idle(settings.close_timeout + Duration::from_secs(1)).await;
    }
}
