//! Scenario 6: the same 3 gateways + chat-lb on one Redis and on a local Redis Cluster
//! (3 primaries, 3 replicas), many small rooms so that the load is on Redis rather than on
//! the fan-out and the rooms spread over every shard; CPU of every Redis process watched.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::{args, fanout_args, start_cluster, start_gateways_and_lb};
use crate::suite::procs::{free_port, wait_for_port, Procs};
use crate::suite::{round_name, Suite, S6_SETUPS};

/// Nodes of the Redis Cluster: 3 primaries, one replica each.
const NODES: usize = 6;
/// The cluster bus of a node listens on its port + 10000.
const BUS_OFFSET: u16 = 10_000;
/// A primary unreachable this long is replaced by its replica (as `scripts/redis-cluster.sh`).
const NODE_TIMEOUT_MS: &str = "5000";
/// How long the cluster may take to be ok after `redis-cli --cluster create`.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// A setup under test: where the members connect and what is watched.
struct Setup {
    /// `one` or `cluster` ([`S6_SETUPS`]), in report names.
    key: &'static str,
    label: &'static str,
    url: String,
    /// `--watch-pid` value: every Redis process, the gateways and chat-lb.
    watch: String,
}

/// Scenario 6: both setups run side by side (the idle one costs next to nothing), the
/// measurements interleaved (one Redis, cluster, then again) so that a change in the shared
/// machine's load hits both alike: `rounds` runs as fast as acks allow, then one paced run each.
pub(super) fn one_redis_vs_cluster(suite: &Suite) -> Result<()> {
    let s = &suite.sizes;
    println!(
        "==> scenario 6: 3 gateways + chat-lb on one Redis and on a Redis Cluster (3 primaries + 3 replicas), {} rooms x {} members, 1 publisher per room",
        s.s6_rooms, s.s6_members
    );
    let mut procs = Procs::new(&suite.logs);
    let one = start_cluster(suite, &mut procs, "s6-one")?;
    let mut setups = vec![Setup {
        key: S6_SETUPS[0],
        label: "one Redis",
        url: format!("ws://{}/ws", one.lb),
        watch: format!("redis={},{}", one.redis_pid, one.watch.join(",")),
    }];
    let (seeds, redis_watch) = start_redis_cluster(suite, &mut procs)?;
    let (lb, watch) = start_gateways_and_lb(
        suite,
        &mut procs,
        "s6-cluster",
        &["--redis-cluster", &seeds],
    )?;
    setups.push(Setup {
        key: S6_SETUPS[1],
        label: "Redis Cluster",
        url: format!("ws://{lb}/ws"),
        watch: format!("{},{}", redis_watch.join(","), watch.join(",")),
    });
    for round in 1..=s.rounds {
        for setup in &setups {
            let mut run = fanout_args(suite, &setup.url, s.s6_rooms, s.s6_members, 0);
            run.extend(args(&[
                "--watch-pid",
                &setup.watch,
                "--label",
                &format!("{}, as fast as acks allow", setup.label),
            ]));
            suite.bench(&round_name(&format!("s6a-{}-max", setup.key), round), &run)?;
        }
    }
    let deliveries = s.s6_rooms * s.s6_members * s.s6_rate;
    for setup in &setups {
        let mut run = fanout_args(suite, &setup.url, s.s6_rooms, s.s6_members, s.s6_rate);
        run.extend(args(&[
            "--watch-pid",
            &setup.watch,
            "--label",
            &format!("{}, {deliveries} deliveries/s", setup.label),
        ]));
        suite.bench(&format!("s6b-{}-paced", setup.key), &run)?;
    }
    Ok(())
}

/// Starts six redis-server nodes persisting as `start_redis` does, creates the cluster with
/// `redis-cli --cluster create` and waits until it is ok; returns the seed list for
/// `--redis-cluster` and `NAME=PID` of every node (`redis-PORT-primary`, `redis-PORT-replica`).
fn start_redis_cluster(suite: &Suite, procs: &mut Procs) -> Result<(String, Vec<String>)> {
    let root = suite.out.join("redis-cluster");
    // Fresh: a nodes.conf left by an earlier run would make a node refuse to join.
    let _ = std::fs::remove_dir_all(&root);
    let mut nodes: Vec<(u16, u32)> = Vec::with_capacity(NODES);
    for _ in 0..NODES {
        let port = cluster_port(&nodes)?;
        let pid = start_node(procs, &root, port)?;
        nodes.push((port, pid));
    }
    for &(port, _) in &nodes {
        wait_for_port(([127, 0, 0, 1], port).into()).with_context(|| {
            format!("redis node :{port} did not start: see logs/redis-{port}.log")
        })?;
    }
    let log = suite.logs.join("redis-cluster-create.log");
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for &(port, _) in &nodes {
        create.arg(format!("127.0.0.1:{port}"));
    }
    let created = create
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(
            suite.logs.join("redis-cluster-create.err"),
        )?)
        .status()
        .context("running redis-cli (package redis-tools)")?;
    if !created.success() {
        bail!("redis-cli --cluster create failed: see {}", log.display());
    }
    wait_until_ok(&nodes)?;
    let mut watch = Vec::with_capacity(NODES);
    for &(port, pid) in &nodes {
        let role = if is_replica(port)? {
            "replica"
        } else {
            "primary"
        };
        watch.push(format!("redis-{port}-{role}={pid}"));
    }
    let seeds: Vec<String> = nodes
        .iter()
        .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
        .collect();
    Ok((seeds.join(","), watch))
}

/// One cluster node on `port`, its data and `nodes.conf` in `root/PORT`; returns its pid.
fn start_node(procs: &mut Procs, root: &Path, port: u16) -> Result<u32> {
    let dir = root.join(port.to_string());
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&dir)
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            NODE_TIMEOUT_MS,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            // A replica's full sync starts at once, not after a 5 s wait for others.
            "--repl-diskless-sync-delay",
            "0",
        ]);
    procs.start(&format!("redis-{port}"), command)
}

/// A free port for a cluster node: it and its bus port (port + 10000) free, below 55536,
/// and neither taken by a node already chosen.
fn cluster_port(taken: &[(u16, u32)]) -> Result<u16> {
    for _ in 0..100 {
        let port = free_port();
        let Some(bus) = port.checked_add(BUS_OFFSET).filter(|&bus| bus < 55_536) else {
            continue;
        };
        let clash = taken.iter().any(|&(p, _)| {
            [p, p + BUS_OFFSET].contains(&port) || [p, p + BUS_OFFSET].contains(&bus)
        });
        if !clash && bindable(port) && bindable(bus) {
            return Ok(port);
        }
    }
    bail!("no free port pair (port, port + 10000) for a Redis Cluster node")
}

/// Whether a listener could bind 127.0.0.1:`port` now (also catches a port held by an
/// outgoing connection, which a connect test misses).
fn bindable(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}

/// `redis-cli -p PORT ARGS` output, if it ran.
fn redis_cli(port: u16, command: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(command)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

/// Whether the node on `port` is a replica (`INFO replication` says `role:slave`).
fn is_replica(port: u16) -> Result<bool> {
    let info = redis_cli(port, &["info", "replication"])
        .with_context(|| format!("redis-cli -p {port} info replication"))?;
    Ok(info.lines().any(|line| line == "role:slave"))
}

/// What is not ok yet: a node whose `cluster_state` is not ok, or a replica whose link to
/// its primary is not up; `None` when every node is ok.
fn not_ok(nodes: &[(u16, u32)]) -> Option<String> {
    for &(port, _) in nodes {
        let info = redis_cli(port, &["cluster", "info"]).unwrap_or_default();
        if !info.lines().any(|line| line == "cluster_state:ok") {
            return Some(format!("node :{port}: cluster_state is not ok"));
        }
        let replication = redis_cli(port, &["info", "replication"]).unwrap_or_default();
        let lines: Vec<&str> = replication.lines().collect();
        if lines.contains(&"role:slave") && !lines.contains(&"master_link_status:up") {
            return Some(format!("replica :{port}: link to its primary is not up"));
        }
    }
    None
}

/// Waits up to [`FORM_TIMEOUT`] for every node to be ok ([`not_ok`]).
fn wait_until_ok(nodes: &[(u16, u32)]) -> Result<()> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let Some(missing) = not_ok(nodes) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            bail!("the Redis Cluster is not ok after {FORM_TIMEOUT:?}: {missing}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
