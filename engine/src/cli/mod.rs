//! What the `portcullis` command does besides serving: the native client (`connect`, `tunnel`)
//! and the administrator's tools (`keygen`, `passwd`). The command line itself is `main.rs`.

pub mod client;
pub mod keygen;
pub mod passwd;
