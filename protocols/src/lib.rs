//! Sans-IO codecs of the Portcullis gateway.
//!
//! Everything here is a pure function or state machine over byte buffers: no runtime, no sockets,
//! no clocks (time is passed in). That keeps every parser that faces the network fuzzable and
//! benchmarkable in isolation; `portcullis` (the engine) binds them to glommio and rustls.

pub mod chunked;
pub mod http;
pub mod proxy;
pub mod rdp;
pub mod terminal;
pub mod token;
pub mod tsgu;
pub mod ws;
