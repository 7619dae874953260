//! A session's clocks, sans-IO: idle timeout, maximum lifetime, pings to a silent peer and the
//! bound on closing. The driver passes `now` in and sleeps until `deadline`; no clock is read on
//! the data path: activity is seen by comparing byte counters at each tick.

use super::Counters;
use crate::audit::EndReason;
use portcullis_protocols::ws::CloseCode;
use std::time::{Duration, Instant};

/// The timing rules of one session.
#[derive(Clone, Copy, Debug)]
pub struct ClockSettings {
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    /// `None`: never ping (the browser terminal's peer answers at the application level).
    pub ping_interval: Option<Duration>,
    pub close_timeout: Duration,
}

/// What a tick asks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do yet.
    Wait,
    /// Probe the silent peer.
    Ping,
    /// Close the session with this code and reason.
    Close(CloseCode, EndReason),
    /// The close did not finish in time: stop now.
    Abort,
}

#[derive(Clone, Debug)]
pub struct Clock {
    settings: ClockSettings,
    lifetime_ends: Option<Instant>,
    /// When the credential that opened the session expires, if the session ends with it.
    credential_ends: Option<Instant>,
    close_by: Option<Instant>,
    last_data: Instant,
    seen: Counters,
    ping_outstanding: bool,
    /// A close was asked for: from then on only the close bound matters.
    closed: bool,
}

/// How long the driver sleeps when no rule has a deadline (every duration is bounded by the
/// configuration, so this only guards against a hot loop).
const FAR: Duration = Duration::from_secs(24 * 3600);

impl Clock {
    pub fn new(now: Instant, settings: ClockSettings) -> Clock {
        Clock {
            settings,
            lifetime_ends: settings.max_lifetime.and_then(|d| now.checked_add(d)),
            credential_ends: None,
            close_by: None,
            last_data: now,
            seen: Counters::default(),
            ping_outstanding: false,
            closed: false,
        }
    }

    /// The session ends (Close 1008, `token_expired`) at `at`, when its credential expires.
    pub fn end_with_credential_at(&mut self, at: Instant) {
        self.credential_ends = Some(at);
    }

    /// The session started closing: from now on it has `close_timeout` to finish.
    pub fn closing(&mut self, now: Instant) {
        self.closed = true;
        if self.close_by.is_none() {
            self.close_by = now.checked_add(self.settings.close_timeout).or(Some(now));
        }
    }

    /// Payload moved at `now` (for drivers that see each message anyway, like the browser
    /// terminal; relays are checked by their counters at each tick instead).
    pub fn saw_data(&mut self, now: Instant) {
        self.last_data = now;
    }

    /// When the driver should call `tick` next, at the latest.
    pub fn deadline(&self, now: Instant) -> Instant {
        let far = now.checked_add(FAR).unwrap_or(now);
        if self.closed {
            return self.close_by.unwrap_or(far);
        }
        let idle = self.last_data.checked_add(self.settings.idle_timeout);
        let ping = self.settings.ping_interval.and_then(|p| now.checked_add(p));
        [idle, ping, self.lifetime_ends, self.credential_ends, self.close_by]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
    }

    /// Checks every rule at `now`, given the session's counters.
    pub fn tick(&mut self, now: Instant, counters: Counters) -> Action {
        if self.close_by.is_some_and(|t| now >= t) {
            return Action::Abort;
        }
        if self.closed {
            return Action::Wait;
        }
        if self.credential_ends.is_some_and(|t| now >= t) {
            return self.close(CloseCode::POLICY, EndReason::TokenExpired);
        }
        if self.lifetime_ends.is_some_and(|t| now >= t) {
            return self.close(CloseCode::POLICY, EndReason::MaxLifetime);
        }
        let seen = std::mem::replace(&mut self.seen, counters);
        if counters.peer_to_raw != seen.peer_to_raw || counters.raw_to_peer != seen.raw_to_peer {
            self.last_data = now;
        }
        if now.duration_since(self.last_data) >= self.settings.idle_timeout {
            return self.close(CloseCode::GOING_AWAY, EndReason::IdleTimeout);
        }
        if self.settings.ping_interval.is_none() {
            return Action::Wait;
        }
        if counters.peer_reads != seen.peer_reads {
            self.ping_outstanding = false;
            Action::Wait
        } else if self.ping_outstanding {
            self.close(CloseCode::GOING_AWAY, EndReason::PingTimeout)
        } else {
            self.ping_outstanding = true;
            Action::Ping
        }
    }
}

impl Clock {
    fn close(&mut self, code: CloseCode, reason: EndReason) -> Action {
        self.closed = true;
        Action::Close(code, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: ClockSettings = ClockSettings {
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Some(Duration::from_secs(300)),
        ping_interval: Some(Duration::from_secs(10)),
        close_timeout: Duration::from_secs(5),
    };

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_silent_peer_is_pinged_then_dropped() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, S);
        assert_eq!(c.deadline(t0), at(t0, 10));
        assert_eq!(c.tick(at(t0, 10), Counters::default()), Action::Ping);
        // It answered (a read): no timeout, and the next silence gets a new ping.
        let answered = Counters {
            peer_reads: 1,
            ..Counters::default()
        };
        assert_eq!(c.tick(at(t0, 20), answered), Action::Wait);
        assert_eq!(c.tick(at(t0, 30), answered), Action::Ping);
        assert_eq!(
            c.tick(at(t0, 40), answered),
            Action::Close(CloseCode::GOING_AWAY, EndReason::PingTimeout)
        );
    }

    #[test]
    fn idle_and_lifetime() {
        let t0 = Instant::now();
        let mut c = Clock::new(
            t0,
            ClockSettings {
                ping_interval: None,
                ..S
            },
        );
        assert_eq!(c.deadline(t0), at(t0, 60));
        let mut n = Counters::default();
        // Data at every tick keeps it alive, until its lifetime.
        for s in (30..300).step_by(30) {
            n.raw_to_peer += 1;
            assert_eq!(c.tick(at(t0, s), n), Action::Wait, "at {s}s");
        }
        assert_eq!(c.deadline(at(t0, 290)), at(t0, 300));
        assert_eq!(
            c.tick(at(t0, 300), n),
            Action::Close(CloseCode::POLICY, EndReason::MaxLifetime)
        );
        // The lifetime closes once (no hot loop on a past deadline); then the close is bounded.
        assert!(c.deadline(at(t0, 300)) > at(t0, 300));
        assert_eq!(c.tick(at(t0, 301), n), Action::Wait);
        c.closing(at(t0, 300));
        assert_eq!(c.deadline(at(t0, 300)), at(t0, 305));
        assert_eq!(c.tick(at(t0, 305), n), Action::Abort);

        let mut c = Clock::new(
            t0,
            ClockSettings {
                ping_interval: None,
                ..S
            },
        );
        assert_eq!(c.tick(at(t0, 59), Counters::default()), Action::Wait);
        assert_eq!(
            c.tick(at(t0, 60), Counters::default()),
            Action::Close(CloseCode::GOING_AWAY, EndReason::IdleTimeout)
        );
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let t0 = Instant::now();
        let forever = Duration::from_secs(u64::MAX / 2);
        let c = Clock::new(
            t0,
            ClockSettings {
                idle_timeout: forever,
                max_lifetime: Some(forever),
                ping_interval: Some(forever),
                close_timeout: forever,
            },
        );
        assert!(c.deadline(t0) > t0, "no hot loop");
    }

    #[test]
    fn a_session_can_end_with_its_credential() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, S);
        c.end_with_credential_at(at(t0, 45));
        let busy = |n: u64| Counters {
            peer_to_raw: n,
            peer_reads: n,
            ..Counters::default()
        };
        assert_eq!(c.deadline(at(t0, 40)), at(t0, 45));
        assert_eq!(c.tick(at(t0, 40), busy(1)), Action::Wait);
        assert_eq!(
            c.tick(at(t0, 45), busy(2)),
            Action::Close(CloseCode::POLICY, EndReason::TokenExpired)
        );
    }
}
