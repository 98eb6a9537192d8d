//! Errors of the harness: failures to start or reach the real processes.

use std::path::PathBuf;

/// Why the harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An I/O operation of the harness failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No redis-server binary to start.
    #[error("redis-server not found at {0} (install it: apt-get install -y redis-server)")]
    RedisMissing(PathBuf),
    /// The redis-server did not come up.
    #[error("redis-server did not start: {0}")]
    RedisStart(String),
    /// A command to the redis-server failed.
    #[error("redis: {0}")]
    Redis(String),
    /// A gateway did not print its address.
    #[error("gateway did not start: {reason} (log: {})", log.display())]
    GatewayStart {
        /// Why, as far as the harness can tell.
        reason: String,
        /// The gateway's log file.
        log: PathBuf,
    },
    /// A condition waited for did not come true in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An HTTP request of the harness failed.
    #[error("http: {0}")]
    Http(String),
    /// A signal could not be sent to a process.
    #[error("sending a signal: {0}")]
    Signal(#[from] nix::Error),
    /// A protocol client failed.
    #[error(transparent)]
    Client(#[from] chat_client::ClientError),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
