//! The browser side of the gateway: sign-in, the web app's API, its assets and recordings. None
//! of this is on the tunnel data path: sign-in state lives in the store, files are read on the
//! files pool, passwords are checked on the hashing pool, and SSH sessions of the browser
//! terminal run on a small tokio runtime next to the glommio cores (russh needs tokio).

pub mod api;
pub mod assets;
pub mod recordings;
pub mod response;
pub mod signin;

use crate::error::{Error, Result};
use crate::ssh::recorder::Recorder;
use crate::store::{MemoryStore, Store};
use std::sync::Arc;

/// Process-wide web state. Survives configuration reloads (sign-ins stay valid).
pub struct WebState {
    pub store: Arc<dyn Store>,
    pub ssh_runtime: tokio::runtime::Runtime,
    pub recorder: Recorder,
}

impl WebState {
    pub fn start() -> Result<Arc<WebState>> {
        let ssh_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ssh")
            .enable_all()
            .build()
            .map_err(|e| Error::Io("cannot start the SSH runtime", e))?;
        Ok(Arc::new(WebState {
            store: Arc::new(MemoryStore::new()),
            ssh_runtime,
            recorder: Recorder::start().map_err(|e| Error::Io("cannot start the recorder", e))?,
        }))
    }
}
