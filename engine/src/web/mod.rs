//! The browser side of the gateway: sign-in, the web app's API, the SSH web terminal and its
//! recordings. None of this is on the tunnel data path: sign-in state is shared behind a mutex,
//! and SSH sessions run on a small tokio runtime (russh needs tokio) next to the glommio cores.

pub mod api;
pub mod assets;
pub mod passwd;
pub mod recording;
pub mod session;
pub mod ssh;

use std::sync::Arc;

/// Process-wide web state. Survives configuration reloads (sign-ins stay valid).
pub struct WebState {
    pub sessions: session::Sessions,
    pub tickets: session::Tickets,
    pub throttle: session::Throttle,
    pub ssh_runtime: tokio::runtime::Runtime,
    pub recorder: recording::Recorder,
}

impl WebState {
    pub fn start() -> anyhow::Result<Arc<WebState>> {
        let ssh_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ssh")
            .enable_all()
            .build()?;
        Ok(Arc::new(WebState {
            sessions: session::Sessions::default(),
            tickets: session::Tickets::default(),
            throttle: session::Throttle::default(),
            ssh_runtime,
            recorder: recording::Recorder::start()?,
        }))
    }
}
