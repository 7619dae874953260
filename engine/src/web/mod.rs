//! The browser side of the gateway: sign-in, the web app's API, its assets and recordings. None
//! of this is on the tunnel data path: sign-in state lives in the store, files are read on the
//! files pool, passwords are checked on the hashing pool, and SSH sessions of the browser
//! terminal run on a small tokio runtime next to the glommio cores (russh needs tokio).

pub mod api;
pub mod assets;
pub mod auditlog;
pub mod device;
pub mod fetch;
pub mod links;
pub mod mfa;
pub mod oidc;
pub mod passkeys;
pub mod rdpfile;
pub mod recordings;
pub mod response;
pub mod sessions;
pub mod signin;

use crate::error::{Error, Result};
use crate::ssh::recorder::Recorder;
use crate::store::{MemoryStore, RedisHealth, RedisStore, Store};
use portcullis_core::config::StoreKind;
use std::sync::Arc;

/// Process-wide web state. Survives configuration reloads (sign-ins stay valid; the store is
/// chosen at start: changing `[cluster] store` needs a restart).
pub struct WebState {
    pub store: Arc<dyn Store>,
    /// Whether the fleet store answers; `None` for the local store (always there).
    pub store_health: Option<Arc<RedisHealth>>,
    /// The fleet store itself, for what only a fleet has (revocations published to every node).
    pub fleet: Option<Arc<RedisStore>>,
    pub ssh_runtime: tokio::runtime::Runtime,
    pub recorder: Recorder,
    /// Single sign-on providers' documents and keys.
    pub oidc: oidc::OidcCache,
}

impl WebState {
    /// `store`: where sign-ins, throttle counters and tickets live. Redis commands run on the
    /// runtime that also carries the browser terminal's SSH clients (never on a core).
    /// `local`: the node's state database (`[state] dir`), where the local store keeps durable
    /// records.
    pub fn start(store: &StoreKind, node: &str, local: Option<Arc<crate::store::LocalState>>) -> Result<Arc<WebState>> {
        let ssh_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ssh")
            .enable_all()
            .build()
            .map_err(|e| Error::Io("cannot start the SSH runtime", e))?;
        let (store, store_health, fleet): (Arc<dyn Store>, _, _) = match store {
            StoreKind::Local => match local {
                Some(state) => (
                    Arc::new(MemoryStore::with_durable(state).map_err(|e| Error::Startup(format!("[state] dir: {e}")))?)
                        as Arc<dyn Store>,
                    None,
                    None,
                ),
                None => {
                    tracing::warn!("no [state] dir: enrolled second factors are kept in memory and lost at restart");
                    (Arc::new(MemoryStore::new()) as Arc<dyn Store>, None, None)
                }
            },
            StoreKind::Redis(url) => {
                let redis = Arc::new(
                    RedisStore::start(url, node, ssh_runtime.handle().clone())
                        .map_err(|e| Error::Startup(format!("[cluster] store: {e}")))?,
                );
                let health = redis.health();
                (redis.clone() as Arc<dyn Store>, Some(health), Some(redis))
            }
        };
        Ok(Arc::new(WebState {
            store,
            store_health,
            fleet,
            ssh_runtime,
            recorder: Recorder::start().map_err(|e| Error::Io("cannot start the recorder", e))?,
            oidc: Default::default(),
        }))
    }
}
