//! Live connections of one executor, for the drain at shutdown: how many there are, and the
//! signal every session watches to close itself when the drain deadline passes; and the signal
//! that a reload changed the policy, on which every session checks that it is still allowed.

use super::timeout;
use event_listener::Event;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Tracker {
    live: Cell<usize>,
    closing: Cell<bool>,
    /// Notified when `live` drops to zero (only the worker waits on it).
    drained: Event,
    /// Notified once, when every session must close.
    close_all: Event,
    /// Reloads seen by this executor.
    policy_generation: Cell<u64>,
    /// Notified on each reload.
    policy_changed: Event,
}

impl Tracker {
    /// Counts a connection until the guard is dropped.
    pub fn enter(self: &Rc<Self>) -> LiveGuard {
        self.live.set(self.live.get() + 1);
        LiveGuard(self.clone())
    }

    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// True once the gateway asks every session to close.
    pub fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Resolves when the gateway asks every session to close (at once if it already has).
    pub async fn close_requested(&self) {
        if self.closing() {
            return;
        }
        let listener = self.close_all.listen();
        if self.closing() {
            return;
        }
        listener.await;
    }

    /// A reload changed the policy: every session checks itself against the new one.
    pub fn policy_changed(&self) {
        self.policy_generation.set(self.policy_generation.get() + 1);
        self.policy_changed.notify(usize::MAX);
    }

    /// The number of reloads so far, to pass to `policy_change_after`.
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation.get()
    }

    /// Resolves once the policy has changed since generation `seen`.
    pub async fn policy_change_after(&self, seen: u64) {
        loop {
            if self.policy_generation.get() != seen {
                return;
            }
            let listener = self.policy_changed.listen();
            if self.policy_generation.get() != seen {
                return;
            }
            listener.await;
        }
    }

    pub fn close_all(&self) {
        self.closing.set(true);
        self.close_all.notify(usize::MAX);
    }

    pub async fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.live.get() > 0 {
            let listener = self.drained.listen();
            if self.live.get() == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || timeout(left, listener).await.is_none() {
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
