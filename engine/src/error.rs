//! The engine library's errors, typed by what failed (configuration, a file, TLS, keys, a
//! target, startup). Causes from libraries that only give text (rustls setup, rcgen, russh keys)
//! are kept as their text. The binary (`main.rs`) adds context and prints them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] portcullis_core::config::LoadError),
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("token public key: {0}")]
    TokenKey(portcullis_protocols::token::TokenError),
    #[error(transparent)]
    Key(#[from] portcullis_core::keys::KeyError),
    #[error(transparent)]
    Random(#[from] portcullis_core::secret::RandomError),
    #[error(transparent)]
    Passwd(#[from] portcullis_core::passwd::PasswdError),
    #[error("target {target}: {message}")]
    Target { target: String, message: String },
    #[error("{0}")]
    Startup(String),
    /// The person at the command line gave something unusable.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn file(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::File {
            what,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
