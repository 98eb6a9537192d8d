//! The library's error type.

use crate::config::ConfigError;

/// Why `run` could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the address of a listening socket")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot start the relay threads")]
    Threads(#[source] std::io::Error),
}
