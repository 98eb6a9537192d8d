//! Several gateways on one backend (for Redis: one fresh redis-server; for
//! a Redis Cluster: six).

use std::path::{Path, PathBuf};

use crate::{
    Backend, BackendFixture, BackendKind, Gateway, HarnessError, RedisCluster, RedisServer,
};

/// N gateways sharing a backend; everything is stopped on drop.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    /// Flags every gateway of the cluster gets.
    args: Vec<String>,
    gateways: Vec<Gateway>,
    /// Declared after `gateways`: dropped (redis killed) after them.
    fixture: BackendFixture,
}

impl Cluster {
    /// Sets up a fresh `kind` backend and starts `n` gateways on it, each with `args`.
    /// (With [`BackendKind::Memory`] the gateways share nothing.)
    pub async fn start(
        bin: impl AsRef<Path>,
        n: usize,
        kind: BackendKind,
        args: &[&str],
    ) -> Result<Self, HarnessError> {
        let fixture = kind.setup().await?;
        let mut cluster = Self {
            bin: bin.as_ref().to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            gateways: Vec::with_capacity(n),
            fixture,
        };
        for _ in 0..n {
            cluster.add_gateway().await?;
        }
        Ok(cluster)
    }

    /// Starts one more gateway on the cluster's backend; returns its index.
    pub async fn add_gateway(&mut self) -> Result<usize, HarnessError> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let gateway = self.fixture.gateway(&self.bin, &args).await?;
        self.gateways.push(gateway);
        Ok(self.gateways.len() - 1)
    }

    /// Every gateway, in the order they were started.
    pub fn gateways(&self) -> &[Gateway] {
        &self.gateways
    }

    /// The `i`th gateway (panics when out of range).
    pub fn gateway(&self, i: usize) -> &Gateway {
        &self.gateways[i]
    }

    /// The `i`th gateway, to stop or restart (panics when out of range).
    pub fn gateway_mut(&mut self, i: usize) -> &mut Gateway {
        &mut self.gateways[i]
    }

    /// The flags the gateways were started with.
    pub fn backend(&self) -> &Backend {
        self.fixture.backend()
    }

    /// The redis-server of a Redis cluster.
    pub fn redis(&self) -> Option<&RedisServer> {
        self.fixture.redis()
    }

    /// The redis-server of a Redis cluster, to kill or restart it.
    pub fn redis_mut(&mut self) -> Option<&mut RedisServer> {
        self.fixture.redis_mut()
    }

    /// The Redis Cluster the gateways share, with [`BackendKind::RedisCluster`].
    pub fn redis_cluster(&self) -> Option<&RedisCluster> {
        self.fixture.redis_cluster()
    }

    /// The Redis Cluster the gateways share, to kill, restart or reshard its nodes.
    pub fn redis_cluster_mut(&mut self) -> Option<&mut RedisCluster> {
        self.fixture.redis_cluster_mut()
    }
}
