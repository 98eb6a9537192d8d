//! Which cluster backend a gateway runs with, so one protocol suite can run
//! against every backend.

use std::path::Path;

use crate::{Gateway, HarnessError, RedisServer};

/// The backend flags a gateway is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded single-gateway backend (no flags).
    Memory,
    /// A Redis server: `--redis URL` and, when set, `--redis-prefix PREFIX`.
    Redis {
        /// The Redis server's URL.
        url: String,
        /// The key prefix, for gateways that must not see each other's keys.
        prefix: Option<String>,
    },
}

impl Backend {
    /// The backend of gateways sharing `server`, without a key prefix.
    pub fn redis(server: &RedisServer) -> Self {
        Self::Redis {
            url: server.url(),
            prefix: None,
        }
    }

    /// Sets the Redis key prefix (no effect on [`Backend::Memory`]).
    pub fn with_prefix(self, prefix: &str) -> Self {
        match self {
            Self::Redis { url, .. } => Self::Redis {
                url,
                prefix: Some(prefix.to_owned()),
            },
            Self::Memory => Self::Memory,
        }
    }

    /// The gateway command-line flags selecting this backend.
    pub fn args(&self) -> Vec<String> {
        match self {
            Self::Memory => Vec::new(),
            Self::Redis { url, prefix } => {
                let mut args = vec!["--redis".to_owned(), url.clone()];
                if let Some(prefix) = prefix {
                    args.extend(["--redis-prefix".to_owned(), prefix.clone()]);
                }
                args
            }
        }
    }

    /// Which kind of backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Memory => BackendKind::Memory,
            Self::Redis { .. } => BackendKind::Redis,
        }
    }
}

/// A backend to set up fresh for one test: what a parameterised test suite
/// takes as its parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The embedded single-gateway backend.
    Memory,
    /// A fresh redis-server per fixture.
    Redis,
}

impl BackendKind {
    /// Starts what the backend needs (a redis-server for [`BackendKind::Redis`]).
    pub async fn setup(self) -> Result<BackendFixture, HarnessError> {
        match self {
            Self::Memory => Ok(BackendFixture {
                backend: Backend::Memory,
                redis: None,
            }),
            Self::Redis => {
                let redis = RedisServer::start().await?;
                Ok(BackendFixture {
                    backend: Backend::redis(&redis),
                    redis: Some(redis),
                })
            }
        }
    }

    /// Its name in test names and messages: `memory` or `redis`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

/// A backend ready for gateways, owning whatever it started (dropped with it).
#[derive(Debug)]
pub struct BackendFixture {
    backend: Backend,
    redis: Option<RedisServer>,
}

impl BackendFixture {
    /// The flags gateways on it are started with.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Which kind of backend it is.
    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// The redis-server, for a Redis fixture (to kill or restart it).
    pub fn redis(&self) -> Option<&RedisServer> {
        self.redis.as_ref()
    }

    /// The redis-server, for a Redis fixture, to change.
    pub fn redis_mut(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// Starts a gateway on this backend with `args` added.
    pub async fn gateway(
        &self,
        bin: impl AsRef<Path>,
        args: &[&str],
    ) -> Result<Gateway, HarnessError> {
        Gateway::start(bin, &self.backend, args).await
    }
}
