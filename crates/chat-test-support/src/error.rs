//! Errors of the harness: failures to start or reach the real processes.

use std::path::PathBuf;

/// Why the harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("redis-server not found at {0} (install it: apt-get install -y redis-server)")]
    RedisMissing(PathBuf),
    #[error("redis-server did not start: {0}")]
    RedisStart(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("gateway did not start: {reason} (log: {})", log.display())]
    GatewayStart { reason: String, log: PathBuf },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("http: {0}")]
    Http(String),
    #[error("sending a signal: {0}")]
    Signal(#[from] nix::Error),
    #[error(transparent)]
    Client(#[from] chat_client::ClientError),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
