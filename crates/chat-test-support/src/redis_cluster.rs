//! A real local Redis Cluster: six redis-server processes on loopback (three
//! primaries, one replica each), formed with cluster commands, that a test
//! can fail over (kill a primary), restart, reshard (migrate a slot) and wait on.

mod migrate;
mod slots;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::{try_eventually, HarnessError, RedisOptions, RedisServer, RespValue};

use slots::{array, integer, SlotMap};
pub use slots::{key_slot, SLOTS};

/// How many nodes a cluster has: [`PRIMARIES`] primaries, one replica each.
const NODES: usize = 6;

/// How many primaries the cluster starts with.
const PRIMARIES: usize = 3;

/// The slots of primary `i` at the start (what `redis-cli --cluster create` assigns).
const SLOT_RANGES: [(u16, u16); PRIMARIES] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// The default `cluster-node-timeout`: short, so that a failover in a test
/// takes about two seconds rather than Redis' default of fifteen.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long forming the cluster may take before [`RedisCluster::start`] gives up.
const FORM_TIMEOUT: Duration = Duration::from_secs(20);

/// Six redis-server processes on 127.0.0.1 forming one Redis Cluster, every
/// one killed on drop. Nodes are named by index (`0..6`): at the start `0..3`
/// are the primaries and `3 + i` replicates `i`; roles change after a failover
/// ([`RedisCluster::primaries`], [`RedisCluster::replica_of`]).
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes by index; a killed node stays here (to restart) but is not live.
    nodes: Vec<RedisServer>,
    /// Each node's cluster node id (`CLUSTER MYID`); kept across restarts
    /// because `nodes.conf` lives in the node's own directory.
    ids: Vec<String>,
    /// The `cluster-node-timeout` every node runs with.
    node_timeout: Duration,
}

impl RedisCluster {
    /// Starts and forms a cluster with [`DEFAULT_NODE_TIMEOUT`]; returns once
    /// every node reports `cluster_state:ok`, agrees on the slot owners, and
    /// every replica's link to its primary is up.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with_node_timeout(DEFAULT_NODE_TIMEOUT).await
    }

    /// Like [`RedisCluster::start`] with another `cluster-node-timeout` (how
    /// long a primary may be unreachable before its replica takes over).
    pub async fn start_with_node_timeout(node_timeout: Duration) -> Result<Self, HarnessError> {
        let options = RedisOptions {
            args: [
                "--cluster-enabled",
                "yes",
                // Relative to --dir: in the node's own temp dir.
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &node_timeout.as_millis().to_string(),
                // A replica's full sync starts at once, not after the
                // default 5 s wait for more replicas to share it.
                "--repl-diskless-sync-delay",
                "0",
            ]
            .map(str::to_owned)
            .to_vec(),
            cluster_bus: true,
        };
        // All at once: each primary's 2 s wait before it reports ok starts
        // with its process.
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..NODES {
            starting.spawn(RedisServer::start_with(options.clone()));
        }
        let mut nodes = Vec::with_capacity(NODES);
        while let Some(started) = starting.join_next().await {
            let node = started.map_err(|e| HarnessError::RedisStart(e.to_string()))?;
            nodes.push(node?);
        }
        let mut ids = Vec::with_capacity(NODES);
        for node in &nodes {
            ids.push(text(node.command(&["CLUSTER", "MYID"]).await?)?);
        }
        let cluster = Self {
            nodes,
            ids,
            node_timeout,
        };
        cluster.form().await?;
        Ok(cluster)
    }

    /// Assigns the slots, introduces the nodes to each other, makes the
    /// replicas, and waits until all of it took, as `redis-cli --cluster
    /// create` does but without its fixed pauses.
    async fn form(&self) -> Result<(), HarnessError> {
        for i in 0..NODES {
            // Distinct config epochs, so that no epoch collision has to be
            // resolved first (redis-cli does the same).
            let epoch = (i + 1).to_string();
            self.expect_ok(i, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch])
                .await?;
        }
        for (i, (start, end)) in SLOT_RANGES.iter().enumerate() {
            let (start, end) = (start.to_string(), end.to_string());
            self.expect_ok(i, &["CLUSTER", "ADDSLOTSRANGE", &start, &end])
                .await?;
        }
        for node in &self.nodes[1..] {
            let port = node.port().to_string();
            self.expect_ok(0, &["CLUSTER", "MEET", "127.0.0.1", &port])
                .await?;
        }
        self.wait(FORM_TIMEOUT, "every node to know every other", || {
            self.all_known()
        })
        .await?;
        for replica in PRIMARIES..NODES {
            let primary = &self.ids[replica - PRIMARIES];
            self.expect_ok(replica, &["CLUSTER", "REPLICATE", primary])
                .await?;
        }
        self.wait(FORM_TIMEOUT, "the replicas to sync", || self.replicas_up())
            .await?;
        // A primary reports ok no sooner than 2 s after it started
        // (CLUSTER_WRITABLE_DELAY): most of the time spent forming.
        self.wait_until_ok(FORM_TIMEOUT).await
    }

    /// Whether every node lists every node id (after the handshake, which
    /// shows nodes under temporary ids).
    async fn all_known(&self) -> Result<(), String> {
        for (i, node) in self.nodes.iter().enumerate() {
            let listing =
                text(node.command(&["CLUSTER", "NODES"]).await.map_err(str)?).map_err(str)?;
            let known: Vec<&str> = listing
                .lines()
                .filter(|line| !line.contains("handshake") && !line.contains("noaddr"))
                .filter_map(|line| line.split(' ').next())
                .collect();
            if let Some(missing) = self.ids.iter().position(|id| !known.contains(&id.as_str())) {
                return Err(format!("node {i} does not know node {missing} yet"));
            }
        }
        Ok(())
    }

    /// Whether every live replica reports `master_link_status:up`.
    async fn replicas_up(&self) -> Result<(), String> {
        for i in self.live() {
            let info = text(
                self.nodes[i]
                    .command(&["INFO", "replication"])
                    .await
                    .map_err(str)?,
            )
            .map_err(str)?;
            if info.contains("role:slave") && !info.contains("master_link_status:up") {
                return Err(format!("replica {i}: link to its primary is not up"));
            }
        }
        Ok(())
    }

    /// Waits until every live node reports `cluster_state:ok` and all of them
    /// agree on who serves every slot, each of the 16384 slots by a live
    /// primary. (Right after a primary is killed the others still report ok
    /// and list it; this waits until its replica took over.)
    pub async fn wait_until_ok(&self, timeout: Duration) -> Result<(), HarnessError> {
        self.wait(timeout, "the cluster to be ok", || self.check_ok())
            .await
    }

    /// One look at what [`RedisCluster::wait_until_ok`] waits for.
    async fn check_ok(&self) -> Result<(), String> {
        let live = self.live();
        let live_ports: Vec<u16> = live.iter().map(|&i| self.nodes[i].port()).collect();
        let mut first: Option<(usize, SlotMap)> = None;
        for &i in &live {
            let node = &self.nodes[i];
            let info = text(node.command(&["CLUSTER", "INFO"]).await.map_err(str)?).map_err(str)?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {i}: cluster_state is not ok"));
            }
            let map = SlotMap::read(node).await.map_err(str)?;
            if let Some((slot, owner)) = map.first_outside(&live_ports) {
                let owner = owner.map(|port| self.index_of_port(port));
                return Err(format!(
                    "node {i}: slot {slot} is served by {owner:?}, not a live node"
                ));
            }
            match &first {
                None => first = Some((i, map)),
                Some((j, other)) => {
                    if let Some(slot) = map.first_difference(other) {
                        return Err(format!("nodes {j} and {i} disagree about slot {slot}"));
                    }
                }
            }
        }
        match first {
            Some(_) => Ok(()),
            None => Err("no node is running".into()),
        }
    }

    /// Polls `check` until it succeeds; a timeout names `what` and the last failure.
    async fn wait<F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        check: F,
    ) -> Result<(), HarnessError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        try_eventually(timeout, check).await.map_err(|last| {
            HarnessError::Timeout(format!("waiting {timeout:?} for {what}: {last}"))
        })
    }

    /// How many nodes it has (killed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster always has its six nodes (running or not).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (panics when out of range): its port, URL, log, and commands.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The cluster node id of node `i` (panics when out of range), as in
    /// `CLUSTER NODES` or `CLUSTER SETSLOT ... NODE <id>`.
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The `cluster-node-timeout` the nodes run with.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// `redis://127.0.0.1:PORT` of every node, killed ones included, by index.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The seeds joined with commas: the value of the gateway's `--redis-cluster`.
    pub fn seed_arg(&self) -> String {
        self.seeds().join(",")
    }

    /// Runs one command on node `i` (panics when out of range); a cluster
    /// redirect comes back as the `MOVED`/`ASK` error reply.
    pub async fn command(&self, i: usize, args: &[&str]) -> Result<RespValue, HarnessError> {
        self.nodes[i].command(args).await
    }

    /// Kills node `i` with SIGKILL and waits for its exit.
    pub async fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].kill().await
    }

    /// Starts node `i` again on its port with its `nodes.conf` (same node id)
    /// but no data (persistence is off), and returns once it answers PING.
    /// It rejoins as it can: a former primary whose replica took over comes
    /// back as a replica of it and resyncs; one restarted before a failover
    /// happened comes back an empty primary of its slots, losing their keys.
    /// [`RedisCluster::wait_until_ok`] waits for the cluster to settle.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.nodes[i].restart().await
    }

    /// The indexes of the running nodes.
    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// The index of the node listening on `port`.
    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port() == port)
    }

    /// The index of the node serving `slot` as primary, as the first live
    /// node sees it (after [`RedisCluster::wait_until_ok`], as all do).
    pub async fn owner_of_slot(&self, slot: u16) -> Result<usize, HarnessError> {
        let Some(&asked) = self.live().first() else {
            return Err(HarnessError::Redis("no cluster node is running".into()));
        };
        let map = SlotMap::read(&self.nodes[asked]).await?;
        let port = map.owner(slot).ok_or_else(|| {
            HarnessError::Redis(format!("node {asked} knows no owner of slot {slot}"))
        })?;
        self.index_of_port(port).ok_or_else(|| {
            HarnessError::Redis(format!("slot {slot} is served by unknown port {port}"))
        })
    }

    /// The running nodes that are primaries now, in index order.
    pub async fn primaries(&self) -> Result<Vec<usize>, HarnessError> {
        let mut primaries = Vec::new();
        for i in self.live() {
            if self.role(i).await?.is_none() {
                primaries.push(i);
            }
        }
        Ok(primaries)
    }

    /// The running node that replicates `primary` now (the lowest index if
    /// several do), whether or not `primary` itself is still running.
    pub async fn replica_of(&self, primary: usize) -> Result<Option<usize>, HarnessError> {
        for i in self.live() {
            if self.role(i).await? == Some(primary) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The primary that running node `replica` replicates now; `None` when it
    /// is a primary itself.
    pub async fn primary_of(&self, replica: usize) -> Result<Option<usize>, HarnessError> {
        self.role(replica).await
    }

    /// Node `i`'s role from `ROLE`: `None` for a primary, or the index of its primary.
    async fn role(&self, i: usize) -> Result<Option<usize>, HarnessError> {
        let reply = self.command(i, &["ROLE"]).await?;
        let bad = |e: String| HarnessError::Redis(format!("ROLE on node {i}: {e}"));
        let items = array(&reply).map_err(bad)?;
        match items.first() {
            Some(RespValue::Bulk(Some(role))) if role == b"master" => Ok(None),
            Some(RespValue::Bulk(Some(role))) if role == b"slave" => {
                let port = items
                    .get(2)
                    .ok_or_else(|| "no primary port".to_owned())
                    .and_then(integer)
                    .map_err(bad)?;
                let index = u16::try_from(port)
                    .ok()
                    .and_then(|port| self.index_of_port(port));
                index
                    .map(Some)
                    .ok_or_else(|| bad(format!("replicates unknown port {port}")))
            }
            other => Err(bad(format!("unexpected reply {other:?}"))),
        }
    }

    /// Runs a command on node `i` that must answer `+OK`.
    async fn expect_ok(&self, i: usize, args: &[&str]) -> Result<(), HarnessError> {
        match self.command(i, args).await? {
            RespValue::Simple(ok) if ok == "OK" => Ok(()),
            other => Err(HarnessError::Redis(format!(
                "{args:?} on node {i} answered {other:?}"
            ))),
        }
    }
}

/// The text of a bulk or simple string reply; an error reply is an error.
fn text(value: RespValue) -> Result<String, HarnessError> {
    match value {
        RespValue::Bulk(Some(bytes)) => String::from_utf8(bytes)
            .map_err(|e| HarnessError::Redis(format!("reply is not UTF-8: {e}"))),
        RespValue::Simple(s) => Ok(s),
        other => Err(HarnessError::Redis(format!("expected text, got {other:?}"))),
    }
}

/// A harness error as the text [`try_eventually`] reports.
fn str(error: HarnessError) -> String {
    error.to_string()
}
