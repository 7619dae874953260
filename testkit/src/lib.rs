//! The end-to-end test harness of the workspace, shared by the engine's and the load generator's
//! integration tests, so that each helper exists once.
//!
//! Everything here starts real processes on fresh loopback ports and ends them when its guard is
//! dropped (a failed assertion included). Waits are bounded and event-driven where there is an
//! event (a readiness descriptor, a child's exit, a socket read with a timeout); the few that have
//! none poll inside [`process::wait_until`].
//!
//! - [`ports`]: fresh and dead loopback ports;
//! - [`process`]: bounded commands, process groups and trees, guards;
//! - [`gateway`]: a real `portcullis serve` with a generated config, its tokens and audit log;
//! - [`client`]: TLS to the gateway, raw HTTP, and a WebSocket client that can misbehave;
//! - [`targets`]: small TCP targets (echo, scripted servers);
//! - [`tunnel`]: `portcullis tunnel` as a child process;
//! - [`bridge`]: a plain `ws://` bridge on the gateway's relay (like websockify);
//! - [`sshd`]: a real OpenSSH server and its clients;
//! - [`rdp`]: Xvfb, xrdp, freerdp-shadow-cli and xfreerdp;
//! - [`haproxy`]: HAProxy in TCP mode sending the PROXY protocol;
//! - [`redis`]: a real redis-server for the fleet store;
//! - [`browser`]: the headless Chromium scripts of `web/e2e`.

pub mod bridge;
pub mod browser;
pub mod client;
pub mod gateway;
pub mod haproxy;
pub mod ports;
pub mod process;
pub mod rdgateway;
pub mod rdp;
pub mod redis;
pub mod sshd;
pub mod targets;
pub mod tunnel;

pub use client::{exchange, https, read_to_close, session_cookie, status_of, tls_connect, upgrade_request, WsClient};
pub use gateway::{Gateway, GatewayBuilder};
pub use ports::{dead_address, free_port};
pub use targets::EchoTarget;
pub use tunnel::Tunnel;

/// Lossy UTF-8 of process output or received bytes, for assertions and messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
