//! Portcullis: a bastion gateway. Users reach it over TLS (one port), prove who they are with a
//! short-lived token, and get a WebSocket tunnel to one configured SSH, RDP or TCP target.
//!
//! `server` binds the sans-IO codecs of `portcullis-protocols` to glommio (one executor per core);
//! `relay` is the tunnel state machine shared by the gateway and the `client`.

pub mod audit;
pub mod client;
pub mod config;
pub mod demo;
pub mod demo_ssh;
pub mod keys;
pub mod policy;
pub mod relay;
pub mod server;
pub mod tls;
pub mod web;
