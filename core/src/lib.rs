//! The runtime-free core of the Portcullis gateway: what it decides, with no sockets and no async
//! runtime, and with time passed in to every decision (only `keys` and `audit` read the wall
//! clock, to stamp tokens and records), so all of it is unit-tested, simulated and fuzzed without
//! the engine.
//!
//! - [`config`]: the TOML configuration, validated; every default and range in one place.
//! - [`route`] and [`request`]: the router and the request path after TLS (a pure decision).
//! - [`policy`]: the one authorization decision, a [`policy::Grant`] or a typed denial, and
//!   [`revocation`], the users and tokens it refuses.
//! - [`audit`]: the audit records and how sessions end ([`audit::EndReason`]).
//! - [`relay`]: the tunnel's sans-IO state machine, its framing layer, buffer pool and clocks.
//! - [`keys`], [`passwd`], [`secret`], [`sshkey`]: tokens, password hashes, random secrets and
//!   host key lines.
#![forbid(unsafe_code)]

pub mod audit;
pub mod audit_search;
pub mod config;
pub mod keys;
pub mod net;
pub mod oidc;
pub mod passwd;
pub mod policy;
pub mod rdgateway;
pub mod relay;
pub mod request;
pub mod revocation;
pub mod route;
pub mod secret;
pub mod sshkey;
pub mod tls;
pub mod totp;
pub mod webauthn;
