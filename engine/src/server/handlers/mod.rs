//! One handler per route. Each takes the connection (`Conn`) and what the core's request path
//! decided, and runs the route to its end. A new route is a variant of `portcullis_core::route`,
//! a branch of `Decision` or `WebRoute`, and a file here.

pub mod rdcleanpath;
pub mod rdgateway;
pub mod terminal;
pub mod tunnel;
pub mod watch;
pub mod web;
