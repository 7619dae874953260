//! Portcullis: a bastion gateway. Users reach it over TLS (one port), prove who they are, and get
//! a session to one configured SSH, RDP or TCP target: a WebSocket tunnel, a browser terminal or
//! web RDP.
//!
//! The engine binds the runtime-free core (`portcullis-core`: configuration, policy, router,
//! audit model, relay state machine) and the codecs (`portcullis-protocols`) to glommio (one
//! executor per core), rustls, russh and the disk. See ARCHITECTURE.md for where a byte goes.
//!
//! - `server/`: listeners, connections, one handler per route, sessions, shutdown;
//! - `relay`: the I/O driver of the core's relay (gateway and CLI);
//! - `web/`: the web app's API, sign-in, assets, recordings;
//! - `ssh/`: the russh bridge of the browser terminal and its recorder;
//! - `store/`: state gateways of a fleet share (sessions, throttle, tickets, revocations);
//! - `blocking`: bounded pools for blocking work (files, password hashing, DNS);
//! - `cli/`: the native client and the administrator's commands; `demo/`: `serve` without config;
//! - `admin/`: the operators' listener (health, readiness, metrics, the admin API);
//! - `metrics`: per-core counters, summed at scrape;
//! - `audit`, `tls`, `error`.

pub mod admin;
pub mod audit;
pub mod blocking;
pub mod cli;
pub mod demo;
pub mod error;
pub mod fault;
pub mod logging;
pub mod metrics;
pub mod relay;
pub mod server;
pub mod ssh;
pub mod store;
pub mod tls;
pub mod web;
