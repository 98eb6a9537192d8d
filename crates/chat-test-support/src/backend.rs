//! Which cluster backend a gateway runs with, so one protocol suite can run
//! against every backend.

use std::path::Path;

use crate::{Gateway, HarnessError, RedisCluster, RedisServer};

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
    /// A Redis Cluster: `--redis-cluster SEEDS` and, when set, `--redis-prefix PREFIX`.
    RedisCluster {
        /// Seed node URLs, comma-separated (`redis://HOST:PORT,...`).
        seeds: String,
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

    /// The backend of gateways sharing `cluster` (every node a seed), without
    /// a key prefix.
    pub fn redis_cluster(cluster: &RedisCluster) -> Self {
        Self::RedisCluster {
            seeds: cluster.seed_arg(),
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
            Self::RedisCluster { seeds, .. } => Self::RedisCluster {
                seeds,
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
                with_prefix(vec!["--redis".to_owned(), url.clone()], prefix)
            }
            Self::RedisCluster { seeds, prefix } => {
                with_prefix(vec!["--redis-cluster".to_owned(), seeds.clone()], prefix)
            }
        }
    }

    /// Which kind of backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Memory => BackendKind::Memory,
            Self::Redis { .. } => BackendKind::Redis,
            Self::RedisCluster { .. } => BackendKind::RedisCluster,
        }
    }
}

/// `args` followed by `--redis-prefix PREFIX` when there is a prefix.
fn with_prefix(mut args: Vec<String>, prefix: &Option<String>) -> Vec<String> {
    if let Some(prefix) = prefix {
        args.extend(["--redis-prefix".to_owned(), prefix.clone()]);
    }
    args
}

/// A backend to set up fresh for one test: what a parameterised test suite
/// takes as its parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The embedded single-gateway backend.
    Memory,
    /// A fresh redis-server per fixture.
    Redis,
    /// A fresh Redis Cluster (3 primaries, 3 replicas) per fixture.
    RedisCluster,
}

impl BackendKind {
    /// Starts what the backend needs (a redis-server for [`BackendKind::Redis`],
    /// six for [`BackendKind::RedisCluster`]).
    pub async fn setup(self) -> Result<BackendFixture, HarnessError> {
        match self {
            Self::Memory => Ok(BackendFixture {
                backend: Backend::Memory,
                redis: None,
                redis_cluster: None,
            }),
            Self::Redis => {
                let redis = RedisServer::start().await?;
                Ok(BackendFixture {
                    backend: Backend::redis(&redis),
                    redis: Some(redis),
                    redis_cluster: None,
                })
            }
            Self::RedisCluster => {
                let cluster = RedisCluster::start().await?;
                Ok(BackendFixture {
                    backend: Backend::redis_cluster(&cluster),
                    redis: None,
                    redis_cluster: Some(cluster),
                })
            }
        }
    }

    /// Its name in test names and messages: `memory`, `redis` or `redis-cluster`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
        }
    }
}

/// A backend ready for gateways, owning whatever it started (dropped with it).
#[derive(Debug)]
pub struct BackendFixture {
    backend: Backend,
    redis: Option<RedisServer>,
    redis_cluster: Option<RedisCluster>,
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

    /// The Redis Cluster, for a Redis Cluster fixture (to inspect it).
    pub fn redis_cluster(&self) -> Option<&RedisCluster> {
        self.redis_cluster.as_ref()
    }

    /// The Redis Cluster, for a Redis Cluster fixture, to kill, restart or
    /// reshard its nodes.
    pub fn redis_cluster_mut(&mut self) -> Option<&mut RedisCluster> {
        self.redis_cluster.as_mut()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_cluster_backend_passes_its_seeds_and_prefix() {
        let backend = Backend::RedisCluster {
            seeds: "redis://127.0.0.1:7001,redis://127.0.0.1:7002".into(),
            prefix: None,
        };
        assert_eq!(
            backend.args(),
            [
                "--redis-cluster",
                "redis://127.0.0.1:7001,redis://127.0.0.1:7002"
            ]
        );
        assert_eq!(backend.kind(), BackendKind::RedisCluster);
        assert_eq!(backend.kind().name(), "redis-cluster");
        assert_eq!(
            backend.with_prefix("t1").args(),
            [
                "--redis-cluster",
                "redis://127.0.0.1:7001,redis://127.0.0.1:7002",
                "--redis-prefix",
                "t1"
            ]
        );
        let redis = Backend::Redis {
            url: "redis://127.0.0.1:6379".into(),
            prefix: None,
        };
        assert_eq!(
            redis.with_prefix("t2").args(),
            ["--redis", "redis://127.0.0.1:6379", "--redis-prefix", "t2"]
        );
        assert!(Backend::Memory.with_prefix("t3").args().is_empty());
    }

    #[tokio::test]
    async fn a_redis_cluster_fixture_holds_the_cluster() {
        let fixture = BackendKind::RedisCluster.setup().await.unwrap();
        let cluster = fixture.redis_cluster().unwrap();
        assert!(fixture.redis().is_none());
        assert_eq!(fixture.backend(), &Backend::redis_cluster(cluster));
        assert_eq!(
            fixture.backend().args(),
            ["--redis-cluster".to_owned(), cluster.seed_arg()]
        );
    }
}
