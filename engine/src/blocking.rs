//! Named, bounded pools of threads for blocking work, so that none of it runs on a core that
//! relays sessions: file reads of the web app, password hashing, name resolution.
//!
//! Each kind has its own pool, so a sign-in flood (Argon2 is slow on purpose) cannot delay a
//! tunnel's name resolution. A pool's queue is bounded: when it is full, work is refused at once
//! (`Busy`) instead of piling up, and the caller answers "try again later".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Work a pool could not take or finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The queue is full: the caller should refuse the request (503) rather than wait.
    #[error("the {0} pool is busy")]
    Busy(&'static str),
    /// The job panicked or the pool stopped.
    #[error("the {0} pool failed to run a job")]
    Failed(&'static str),
}

pub struct Pool {
    name: &'static str,
    queue: SyncSender<Job>,
    refused: AtomicU64,
}

impl Pool {
    /// A pool of `threads` threads named `name-N`, queueing at most `queue` jobs.
    pub fn new(name: &'static str, threads: usize, queue: usize) -> std::io::Result<Pool> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take the next job, never while running it.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking job drops its answer channel (its caller gets `Failed`);
                        // the thread goes on serving the pool.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Pool {
            name,
            queue: tx,
            refused: AtomicU64::new(0),
        })
    }

    /// Runs `f` on the pool; the future resolves with its result. Fails at once when the queue
    /// is full. Usable from any runtime (the answer comes back over a runtime-agnostic channel).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Result<T, PoolError>>, PoolError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Busy(self.name));
            }
            Err(TrySendError::Disconnected(_)) => return Err(PoolError::Failed(self.name)),
        }
        let name = self.name;
        Ok(async move { rx.await.map_err(|_| PoolError::Failed(name)) })
    }

    /// Runs `f` and waits for it: `run` for callers that need not act on a full queue first.
    pub async fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolError> {
        self.run(f)?.await
    }

    /// Jobs refused because the queue was full, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The gateway's pools.
pub struct Pools {
    /// Reading and listing files for the web app (recordings).
    pub files: Pool,
    /// Argon2 password checks: a few threads, so a sign-in flood costs at most that many cores.
    pub hashing: Pool,
    /// Name resolution of targets given by host name (getaddrinfo blocks).
    pub dns: Pool,
}

impl Pools {
    pub fn start() -> std::io::Result<Pools> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Pools {
            files: Pool::new("files", 2, 256)?,
            hashing: Pool::new("hashing", cores.div_ceil(2), 64)?,
            dns: Pool::new("dns", 4, 256)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runs_jobs_and_refuses_when_full() {
        let pool = Pool::new("test", 1, 1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(pool.call(|| 6 * 7)), Ok(42));
        // Block the only thread, fill the one queue slot: the next job is refused at once.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let busy = pool
            .run(move || {
                let _ = started_tx.send(());
                wait.recv_timeout(Duration::from_secs(10))
            })
            .unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let queued = pool.run(|| 1).unwrap();
        assert!(matches!(pool.run(|| 2), Err(PoolError::Busy("test"))));
        assert_eq!(pool.refused(), 1);
        release.send(()).unwrap();
        assert!(rt.block_on(busy).unwrap().is_ok());
        assert_eq!(rt.block_on(queued), Ok(1));
        // A panicking job fails its caller, not the pool.
        assert_eq!(
            rt.block_on(pool.call(|| -> u8 { panic!("job") })),
            Err(PoolError::Failed("test"))
        );
        assert_eq!(rt.block_on(pool.call(|| 3)), Ok(3));
    }
}
