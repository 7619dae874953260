//! Load generator for Portcullis and any WebSocket-to-TCP bridge (websockify, websocat).
//!
//! Scenarios: `throughput`, `latency` (open loop), `connect`, `idle`, `ssh` (russh client through
//! the tunnel); plus a built-in `target` (echo, sink, source). Each runs through the tunnel route,
//! through the RD Gateway (`--rd-gateway`: TSGU DATA packets in the WebSocket, `rdgateway`), or
//! on the direct path (`tcp://`). Sessions use the crate's own small
//! WebSocket client (`ws`) on the sans-IO codec of `portcullis-protocols`, over TLS (`wss://`) or
//! plain TCP (`ws://`), on tokio.

pub mod cipher;
pub mod cli;
pub mod connect;
pub mod endpoint;
pub mod idle;
pub mod latency;
pub mod peers;
pub mod progress;
pub mod rdgateway;
pub mod sessions;
pub mod ssh;
pub mod stats;
pub mod sys;
pub mod target;
pub mod throughput;
pub mod ws;

use cli::Command;

/// A finished run: the JSON results and the one-line summary.
pub struct Outcome {
    pub json: serde_json::Value,
    pub summary: String,
}

/// Runs one scenario on the current tokio runtime. `target` never returns and is not accepted
/// here (see `target::serve`).
pub async fn execute(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Throughput(a) => throughput::run(a).await,
        Command::Latency(a) => latency::run(a).await,
        Command::Connect(a) => connect::run(a).await,
        Command::Idle(a) => idle::run(a).await,
        Command::Ssh(a) => ssh::run(a).await,
        Command::Target(_) => anyhow::bail!("`target` is a server: run it with target::serve"),
        Command::CryptoFloor(a) => cipher::run(&a),
    }
}
