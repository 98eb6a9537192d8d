//! The library's error type.

use crate::config::ConfigError;

/// Why `run` could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bound socket's address could not be read.
    #[error("cannot read the address of a listening socket")]
    LocalAddr(#[source] std::io::Error),
    /// The relay threads could not be started.
    #[error("cannot start the relay threads")]
    Threads(#[source] std::io::Error),
}
