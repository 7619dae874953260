//! A granted session: its audit record, opened when the policy says yes and written once when it
//! ends, and the loop that runs a relay under the session's clock.

use super::registry::{LiveSession, Slot, Stop};
use super::shutdown::Tracker;
use super::Shared;
use crate::audit::Audit;
use futures_lite::{AsyncRead, AsyncWrite};
use portcullis_core::audit::{now_rfc3339, AuditRecord, EndReason, Ending, SessionRecord};
use portcullis_core::config::{SessionSettings, Target};
use portcullis_core::policy::{Denial, Grant};
use portcullis_core::relay::clock::{Action, Clock, ClockSettings};
use portcullis_core::relay::framing::Framing;
use portcullis_core::relay::{Counters, End, Relay, Step};
use portcullis_core::secret::RandomError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a route adds to a session's record.
#[derive(Default)]
pub struct Extras {
    pub rdp_cookie: Option<String>,
    pub recording: Option<String>,
}

/// The audit of one session, from its grant to its end. Every started session gets exactly one
/// record: `finish` writes it, and a session dropped without `finish` (its task stopped at the
/// end of a drain, a panic) still writes one, as `gateway_shutdown`.
#[must_use = "a session's record is written by `finish`"]
pub struct SessionAudit {
    id: String,
    audit: Audit,
    /// Taken by `finish`; still here when the session is dropped unfinished.
    open: Option<Open>,
    /// Its entry among the live sessions (what the admin API sees and stops).
    live: Arc<LiveSession>,
    /// The user's session place and the registry entry, given back after the record is written.
    _slot: Slot,
    /// RDP channels the gateway removed from the client's request (web RDP).
    channels_removed: Vec<String>,
}

struct Open {
    grant: Grant,
    client: SocketAddr,
    start: String,
}

/// Why a granted session could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `[audit] required` and records are not getting out.
    #[error("the audit log cannot be written")]
    AuditUnavailable,
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl StartError {
    /// What the client is told.
    pub fn public(&self) -> &'static str {
        match self {
            StartError::AuditUnavailable => "sessions are paused: the audit log cannot be written",
            StartError::Random(_) => "the gateway cannot start a session",
        }
    }
}

impl SessionAudit {
    /// Starts the record of a granted session (and logs it); refused when the audit log is
    /// `required` and cannot be written.
    /// `slot` is the user's session place, reserved before the session was set up.
    pub fn start(
        grant: Grant,
        client: SocketAddr,
        audit: &Audit,
        required: bool,
        mut slot: Slot,
    ) -> Result<SessionAudit, StartError> {
        if required && !audit.writable() {
            tracing::warn!(user = %grant.user, %client, target = %grant.target.name, "session refused: the audit log cannot be written");
            return Err(StartError::AuditUnavailable);
        }
        let id = slot.id().to_owned();
        tracing::info!(session = %id, user = %grant.user, %client, target = %grant.target.name, via = grant.via.as_str(), "session started");
        let start = now_rfc3339();
        let mut session = LiveSession::new(
            id.clone(),
            grant.user.clone(),
            grant.target.name.clone(),
            grant.target.protocol,
            grant.via,
            client,
            grant.token_id.clone(),
            start.clone(),
        );
        session.login_id = grant.login_id.clone();
        let live = slot.live(session);
        crate::metrics::with(|m| m.session_started(grant.via, grant.target.protocol));
        Ok(SessionAudit {
            id,
            audit: audit.clone(),
            open: Some(Open { grant, client, start }),
            live,
            _slot: slot,
            channels_removed: Vec::new(),
        })
    }

    pub fn live(&self) -> &Arc<LiveSession> {
        &self.live
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn grant(&self) -> &Grant {
        match &self.open {
            Some(open) => &open.grant,
            // `finish` consumes the audit, so no caller can see it finished.
            None => unreachable!("a finished session audit is consumed"),
        }
    }

    /// Records the RDP channels the gateway removed from the client's request, for the record.
    pub fn channels_removed(&mut self, names: Vec<String>) {
        self.channels_removed = names;
    }

    /// Writes the session's record; `counters` say what went each way.
    pub fn finish(mut self, ending: Ending, counters: Counters, extras: Extras) {
        self.write(ending, counters, extras);
    }

    fn write(&mut self, ending: Ending, counters: Counters, extras: Extras) {
        let Some(Open { grant, client, start }) = self.open.take() else {
            return;
        };
        let (up, down) = (counters.peer_to_raw, counters.raw_to_peer);
        let terminated_by = self
            .live
            .stopped_by()
            .filter(|stop| stop.reason == ending.reason)
            .map(|stop| stop.by);
        crate::metrics::with(|m| m.session_ended(ending.reason, self.live.started.elapsed()));
        tracing::info!(session = %self.id, ended = %ending, up, down, "session ended");
        let Grant {
            user,
            target,
            token_id,
            via,
            ..
        } = grant;
        self.audit.record(&AuditRecord::Session(SessionRecord {
            session: std::mem::take(&mut self.id),
            user,
            client: client.to_string(),
            target: target.name.clone(),
            protocol: target.protocol,
            token_id,
            start,
            end: now_rfc3339(),
            bytes_client_to_target: up,
            bytes_target_to_client: down,
            ended: ending.reason,
            detail: ending.detail,
            rdp_cookie: extras.rdp_cookie,
            channels_removed: std::mem::take(&mut self.channels_removed),
            recording: extras.recording,
            via,
            terminated_by,
        }));
    }
}

impl Drop for SessionAudit {
    fn drop(&mut self) {
        let ending = if std::thread::panicking() {
            // Unwinding from a panic in the session's task (caught by its worker).
            Ending::with_detail(EndReason::InternalError, "the gateway failed inside this session")
        } else {
            Ending::with_detail(EndReason::GatewayShutdown, "the session was stopped before it ended")
        };
        self.write(ending, Counters::default(), Extras::default());
    }
}

/// The clock rules of a session to `target`: its own overrides, else `[session]`.
pub fn clock_settings(target: &Target, s: &SessionSettings, ping: bool) -> ClockSettings {
    ClockSettings {
        idle_timeout: target.idle_timeout(s),
        max_lifetime: Some(target.max_lifetime(s)),
        ping_interval: ping.then_some(s.ping_interval),
        close_timeout: s.close_timeout,
    }
}

/// What ends a live session from outside its relay: the gateway's shutdown, a reload whose policy
/// no longer allows it, an administrator (terminate, revoke), and (with `end_at_token_expiry`)
/// the expiry of the token that opened it. Also where a session reports its progress (bytes for
/// the admin API and the metrics).
pub struct Watch<'a> {
    pub tracker: &'a Tracker,
    shared: &'a Shared,
    grant: &'a Grant,
    live: &'a LiveSession,
    /// When the session must end with its token.
    pub token_ends: Option<Instant>,
    /// Counters as last reported.
    reported: std::cell::Cell<(u64, u64)>,
    /// When they were last reported while data flowed (see `progress_while_relaying`).
    reported_at: std::cell::Cell<Option<Instant>>,
}

/// What woke a session from outside its relay.
pub enum Event {
    Shutdown,
    PolicyChanged,
    Stopped(Stop),
}

impl<'a> Watch<'a> {
    pub fn new(
        tracker: &'a Tracker,
        shared: &'a Shared,
        audit: &'a SessionAudit,
        settings: &SessionSettings,
    ) -> Watch<'a> {
        let grant = audit.grant();
        // A shared link's guest ends with the link, whatever `end_at_token_expiry` says.
        let link_guest = grant.user.starts_with(portcullis_core::policy::LINK_USER_PREFIX);
        let token_ends = grant
            .token_expires
            .filter(|_| settings.end_at_token_expiry || link_guest)
            .map(|exp| {
                let left = exp.saturating_sub(portcullis_core::keys::unix_now());
                Instant::now() + Duration::from_secs(left)
            });
        Watch {
            tracker,
            shared,
            grant,
            live: audit.live(),
            token_ends,
            reported: Default::default(),
            reported_at: Default::default(),
        }
    }

    /// Reports the session's byte counts: into its registry entry, and what is new since the
    /// last report into this core's metrics.
    pub fn progress(&self, counters: Counters) {
        let (up, down) = (counters.peer_to_raw, counters.raw_to_peer);
        let (was_up, was_down) = self.reported.replace((up, down));
        if (up, down) == (was_up, was_down) {
            return;
        }
        self.live.publish(up, down);
        crate::metrics::with(|m| {
            m.relayed(
                self.grant.target.protocol,
                up.saturating_sub(was_up),
                down.saturating_sub(was_down),
            )
        });
    }

    /// Reports the counters at most once a second while the relay moves data, so the live
    /// sessions list (admin API, web app) follows a busy session closely; the session's wakes
    /// report the rest (its clock ticks at least every `ping_interval`).
    pub fn progress_while_relaying(&self, counters: Counters) {
        let now = Instant::now();
        if self
            .reported_at
            .get()
            .is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY)
        {
            return;
        }
        self.reported_at.set(Some(now));
        self.progress(counters);
    }

    /// Resolves on the next thing from outside that concerns the session: the gateway's
    /// shutdown, a reload (since `generation`), an administrator's stop.
    pub async fn next(&self, generation: u64) -> Event {
        futures_lite::future::or(
            futures_lite::future::or(
                async {
                    self.tracker.close_requested().await;
                    Event::Shutdown
                },
                async {
                    self.tracker.policy_change_after(generation).await;
                    Event::PolicyChanged
                },
            ),
            async { Event::Stopped(self.live.stop_requested().await) },
        )
        .await
    }

    /// Whether the policy now in force still allows the session.
    pub fn still_allowed(&self) -> Result<(), Denial> {
        let state = self.shared.state.load();
        state.policy.still_allows(self.grant, portcullis_core::keys::unix_now())
    }

    /// Checks the session against the new policy; logs why when it is no longer allowed.
    pub fn revoked(&self, session: &str) -> bool {
        match self.still_allowed() {
            Ok(()) => false,
            Err(why) => {
                tracing::info!(session, user = %self.grant.user, target = %self.grant.target.name, "session no longer allowed after a reload: {why}");
                true
            }
        }
    }
}

/// How often a busy session reports its byte counts, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Relays a client's connection: the relay takes the connection's TLS record layer and seals and
/// opens records in its own buffers (no copy of the payload in user space), reading and writing
/// the client's socket itself. `early`: plaintext read behind the request head. Then `drive`.
///
/// Not itself async: the future it returns is `drive`'s, with nothing around it, since a session
/// carries its future for its whole life.
pub fn relay_client<'a, F: Framing, R: AsyncRead + AsyncWrite + Unpin>(
    relay: &'a mut Relay<F>,
    tls: &'a mut super::conn::Tls,
    early: &[u8],
    backend: &'a mut R,
    settings: ClockSettings,
    watch: &'a Watch<'a>,
    session: &'a str,
) -> impl std::future::Future<Output = End> + 'a {
    let client: &'a mut dyn crate::relay::Transport = match tls.detach() {
        Some((records, plain, cipher)) => {
            let early = [early, &plain].concat();
            relay.start_tls(records, &early, &cipher);
            tls.socket_mut()
        }
        // Writes still queued (every route flushes its answer first): rustls-style, through the
        // stream, rather than lose them.
        None => {
            relay.received_early(early);
            tls
        }
    };
    drive(relay, client, backend, settings, watch, session)
}

/// Runs a relay to its end under the session clock (idle timeout, max lifetime, pings to a silent
/// client, a bound on closing), the gateway's shutdown, and reloads of the policy.
pub async fn drive<F: Framing, P: crate::relay::Transport + ?Sized, R: AsyncRead + AsyncWrite + Unpin>(
    relay: &mut Relay<F>,
    tls: &mut P,
    backend: &mut R,
    settings: ClockSettings,
    watch: &Watch<'_>,
    session: &str,
) -> End {
    use portcullis_protocols::ws::CloseCode;
    enum Wake {
        Relay(Step),
        Tick,
        Outside(Event),
    }
    let tracker = watch.tracker;
    let mut clock = Clock::new(Instant::now(), settings);
    if let Some(at) = watch.token_ends {
        clock.end_with_credential_at(at);
    }
    let mut generation = tracker.policy_generation();
    loop {
        let now = Instant::now();
        if tracker.closing() && !relay.is_closing() {
            relay.close(CloseCode::GOING_AWAY, EndReason::GatewayShutdown);
        }
        if relay.is_closing() {
            clock.closing(now);
        }
        let wake_at = clock.deadline(now);
        // Once closing, shutdown asks nothing more of this session: stop listening for it.
        let watch_shutdown = !relay.is_closing();
        let wake = futures_lite::future::or(
            futures_lite::future::poll_fn(|cx| {
                let step = crate::relay::poll(relay, cx, tls, backend);
                watch.progress_while_relaying(relay.counters());
                step.map(Wake::Relay)
            }),
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(wake_at.saturating_duration_since(now)).await;
                    Wake::Tick
                },
                async {
                    if !watch_shutdown {
                        std::future::pending::<()>().await;
                    }
                    Wake::Outside(watch.next(generation).await)
                },
            ),
        )
        .await;
        // Byte counts reach the admin API and the metrics at each wake: the relay's events and
        // the clock's ticks (at least every `ping_interval`), and at the end.
        watch.progress(relay.counters());
        match wake {
            Wake::Relay(Step::Ended(end)) => return end,
            Wake::Relay(Step::Closing) => clock.closing(Instant::now()),
            Wake::Outside(Event::Shutdown) => {}
            Wake::Outside(Event::PolicyChanged) => {
                generation = tracker.policy_generation();
                if watch.revoked(session) {
                    relay.close(CloseCode::POLICY, EndReason::PolicyRevoked);
                }
            }
            Wake::Outside(Event::Stopped(stop)) => {
                tracing::info!(session, by = %stop.by, ended = %stop.reason, "session stopped by an administrator");
                relay.close(CloseCode::POLICY, stop.reason);
            }
            Wake::Tick => match clock.tick(Instant::now(), relay.counters()) {
                Action::Wait => {}
                Action::Ping => relay.ping(),
                Action::Close(code, reason) => relay.close(code, reason),
                Action::Abort => return relay.abort(),
            },
        }
    }
}
