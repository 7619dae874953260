//! What the `portcullis` command does besides serving: the native client (`connect`, `tunnel`)
//! and the administrator's tools (`keygen`, `passwd`, `admin`). The command line itself is
//! `main.rs`.

pub mod admin;
pub mod client;
pub mod keygen;
pub mod login;
pub mod passwd;
