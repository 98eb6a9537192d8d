//! The six standard scenarios: what each starts, which `chat-bench` runs it makes, and in
//! what order. Sizes come from [`Sizes`]; every process is stopped when its scenario ends.
//! Scenario 6 (one Redis vs a Redis Cluster) is in `redis_cluster.rs` under this module.

mod redis_cluster;

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use super::procs::{free_port, wait_for_port, Procs};
use super::{round_name, Suite, LOCAL_IPS, PINGPONG_TARGETS};

/// Owned arguments from string slices.
fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|&p| p.to_owned()).collect()
}

/// A scenario: starts what it needs, makes its runs, stops what it started.
type Scenario = fn(&Suite) -> Result<()>;

/// Runs the scenarios in `wanted` (1 to 6), in order.
pub(super) fn run_all(suite: &Suite, wanted: &[u8]) -> Result<()> {
    let scenarios: [(u8, Scenario); 6] = [
        (1, one_gateway),
        (2, cluster_fanout),
        (3, idle_connections),
        (4, pingpong),
        (5, failover),
        (6, redis_cluster::one_redis_vs_cluster),
    ];
    for (number, scenario) in scenarios {
        if wanted.contains(&number) {
            scenario(suite).with_context(|| format!("scenario {number}"))?;
        }
    }
    Ok(())
}

/// A gateway on a loopback port chosen by the kernel; returns its pid and address.
fn start_gateway(
    suite: &Suite,
    procs: &mut Procs,
    name: &str,
    extra: &[&str],
) -> Result<(u32, String)> {
    let mut command = Command::new(&suite.gateway);
    command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--web-root")
        .arg(&suite.out)
        .args([
            "--messages-per-second",
            "1000000",
            "--message-burst",
            "1000000",
        ])
        .args(["--gateway-id", name])
        .args(extra);
    procs.start_and_read(name, command, "chat-gateway listening on http://", ' ')
}

/// chat-lb in front of `backends`; returns its pid and address.
fn start_lb(
    suite: &Suite,
    procs: &mut Procs,
    name: &str,
    backends: &[String],
    extra: &[&str],
) -> Result<(u32, String)> {
    let mut command = Command::new(&suite.lb);
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(extra);
    for backend in backends {
        command.args(["--backend", backend]);
    }
    procs.start_and_read(name, command, "chat-lb listening on ", ' ')
}

/// A fresh redis-server persisting as `scripts/up.sh` runs it (AOF, fsync every second);
/// returns its pid and URL.
fn start_redis(suite: &Suite, procs: &mut Procs) -> Result<(u32, String)> {
    let port = free_port();
    let dir = suite.out.join("redis");
    // Fresh: not the AOF of an earlier scenario's Redis.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ]);
    let pid = procs.start("redis", command)?;
    wait_for_port(([127, 0, 0, 1], port).into())
        .context("redis did not start: see logs/redis.log")?;
    Ok((pid, format!("redis://127.0.0.1:{port}")))
}

/// Redis, three gateways on it, chat-lb in front sending PROXY v2 (so the gateways'
/// per-address limits see the clients, not chat-lb).
struct Cluster {
    lb: String,
    redis_pid: u32,
    /// `NAME=PID` of the gateways and chat-lb.
    watch: Vec<String>,
}

fn start_cluster(suite: &Suite, procs: &mut Procs, prefix: &str) -> Result<Cluster> {
    let (redis_pid, redis) = start_redis(suite, procs)?;
    let (lb, watch) = start_gateways_and_lb(suite, procs, prefix, &["--redis", &redis])?;
    Ok(Cluster {
        lb,
        redis_pid,
        watch,
    })
}

/// Three gateways with the bridge flags `bridge` (`--redis URL`, `--redis-cluster SEEDS`) and
/// chat-lb in front sending PROXY v2; returns chat-lb's address and `NAME=PID` of the
/// gateways and chat-lb.
fn start_gateways_and_lb(
    suite: &Suite,
    procs: &mut Procs,
    prefix: &str,
    bridge: &[&str],
) -> Result<(String, Vec<String>)> {
    let (mut backends, mut watch) = (Vec::new(), Vec::new());
    for g in 1..=3 {
        let name = format!("{prefix}-gateway-{g}");
        let mut extra = bridge.to_vec();
        extra.push("--proxy-protocol");
        let (pid, addr) = start_gateway(suite, procs, &name, &extra)?;
        backends.push(addr);
        watch.push(format!("gateway-{g}={pid}"));
    }
    let (lb_pid, lb) = start_lb(
        suite,
        procs,
        &format!("{prefix}-lb"),
        &backends,
        &["--send-proxy-v2"],
    )?;
    watch.push(format!("chat-lb={lb_pid}"));
    Ok((lb, watch))
}

/// `fanout` flags shared by scenarios 1, 2 and 6.
fn fanout_args(suite: &Suite, url: &str, rooms: usize, members: usize, rate: usize) -> Vec<String> {
    let s = &suite.sizes;
    args(&[
        "fanout",
        "--url",
        url,
        "--rooms",
        &rooms.to_string(),
        "--members",
        &members.to_string(),
        "--publishers",
        "1",
        "--rate",
        &rate.to_string(),
        "--duration",
        s.duration,
        "--warmup",
        s.warmup,
        "--payload",
        "64",
        "--local-ips",
        LOCAL_IPS,
    ])
}

/// Scenario 1: one gateway (embedded bridge), 1 room, 1 publisher as fast as acks allow.
fn one_gateway(suite: &Suite) -> Result<()> {
    let members = suite.sizes.s1_members;
    println!("==> scenario 1: one gateway, 1 room x {members} members, 1 publisher as fast as acks allow");
    let mut procs = Procs::new(&suite.logs);
    let (pid, addr) = start_gateway(suite, &mut procs, "s1-gateway", &[])?;
    let url = format!("ws://{addr}/ws");
    let mut run = fanout_args(suite, &url, 1, members, 0);
    run.extend(args(&["--watch-pid", &format!("gateway={pid}")]));
    run.extend(args(&[
        "--label",
        &format!("1 gateway, 1 room x {members}"),
    ]));
    suite.bench("s1-fanout", &run)?;
    if suite.perf {
        profile_gateway(suite, pid, &url)?;
    }
    Ok(())
}

/// Scenario 1 again under `perf record` of the gateway; a flat profile next to the reports.
fn profile_gateway(suite: &Suite, pid: u32, url: &str) -> Result<()> {
    println!("==> scenario 1 again under perf record (gateway pid {pid})");
    let (s, out) = (&suite.sizes, &suite.out);
    let data = out.join("s1-gateway.perf.data");
    let record = format!(
        "sleep {}; exec perf record -F 499 -p {pid} -o '{}' -- sleep {}",
        s.warmup.trim_end_matches('s'),
        data.display(),
        s.duration.trim_end_matches('s')
    );
    let log = std::fs::File::create(suite.logs.join("perf.log"))?;
    let mut perf = Command::new("sh")
        .args(["-c", &record])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting perf")?;
    let mut run = fanout_args(suite, url, 1, s.s1_members, 0);
    run.extend(args(&[
        "--no-progress",
        "--label",
        "under perf",
        "--json-file",
    ]));
    run.push(out.join("s1-fanout-perf.json").display().to_string());
    let table = Command::new(&suite.bench).args(&run).output()?;
    std::fs::write(out.join("s1-fanout-perf.txt"), &table.stdout)?;
    let _ = perf.wait();
    for (sort, lines, file) in [
        ("symbol --percent-limit 0.5", 80, "s1-gateway.perf.txt"),
        ("dso", 30, "s1-gateway.perf-dso.txt"),
    ] {
        let report = format!(
            "perf report -i '{}' --stdio --no-children --sort {sort} 2>/dev/null | grep -v '^$' | head -{lines} > '{}'",
            data.display(),
            out.join(file).display()
        );
        let _ = Command::new("sh").args(["-c", &report]).status();
    }
    println!("==> profile: {}", out.join("s1-gateway.perf.txt").display());
    Ok(())
}

/// Scenario 2: Redis + 3 gateways + chat-lb, a publisher per room: (a) as fast as acks allow, in
/// rounds, (b) paced; then the floor alone, at 2b's rate and a tenth of it.
fn cluster_fanout(suite: &Suite) -> Result<()> {
    let s = &suite.sizes;
    println!(
        "==> scenario 2: Redis + 3 gateways + chat-lb, {} rooms x {} members, 1 publisher per room",
        s.s2_rooms, s.s2_members
    );
    let mut procs = Procs::new(&suite.logs);
    let cluster = start_cluster(suite, &mut procs, "s2")?;
    let url = format!("ws://{}/ws", cluster.lb);
    let watch = format!("redis={},{}", cluster.redis_pid, cluster.watch.join(","));
    for round in 1..=s.rounds {
        let mut run = fanout_args(suite, &url, s.s2_rooms, s.s2_members, 0);
        run.extend(args(&[
            "--watch-pid",
            &watch,
            "--label",
            "cluster, as fast as acks allow",
        ]));
        suite.bench(&round_name("s2a-fanout-max", round), &run)?;
    }
    let deliveries = s.s2_rooms * s.s2_members * s.s2b_rate;
    let mut run = fanout_args(suite, &url, s.s2_rooms, s.s2_members, s.s2b_rate);
    run.extend(args(&[
        "--watch-pid",
        &watch,
        "--label",
        &format!("cluster, {deliveries} deliveries/s"),
    ]));
    suite.bench("s2b-fanout-paced", &run)?;
    // The floor runs alone: the cluster is stopped.
    procs.stop_all();
    for rate in s.floor_rates() {
        let deliveries = s.s2_rooms * s.s2_members * rate;
        suite.bench(
            &format!("s2-floor-{deliveries}"),
            &args(&[
                "floor",
                "--rooms",
                &s.s2_rooms.to_string(),
                "--members",
                &s.s2_members.to_string(),
                "--rate",
                &rate.to_string(),
                "--payload",
                "80",
                "--duration",
                s.duration,
                "--warmup",
                s.warmup,
                "--label",
                &format!("floor, {deliveries} deliveries/s"),
            ]),
        )?;
    }
    Ok(())
}

/// `connections` flags of scenario 3.
fn connections_args(suite: &Suite, url: &str, n: usize, watch: &str, label: &str) -> Vec<String> {
    let s = &suite.sizes;
    args(&[
        "connections",
        "--url",
        url,
        "--n",
        &n.to_string(),
        "--rate",
        &s.s3_rate.to_string(),
        "--hold",
        s.s3_hold,
        "--local-ips",
        LOCAL_IPS,
        "--watch-pid",
        watch,
        "--label",
        label,
    ])
}

/// Scenario 3, idle connections: (a) on one gateway, (b) through chat-lb to a cluster.
fn idle_connections(suite: &Suite) -> Result<()> {
    let s = &suite.sizes;
    println!("==> scenario 3a: {} idle members on one gateway", s.s3a_n);
    let mut procs = Procs::new(&suite.logs);
    let (pid, addr) = start_gateway(suite, &mut procs, "s3-gateway", &[])?;
    let url = format!("ws://{addr}/ws");
    suite.bench(
        "s3a-connections",
        &connections_args(
            suite,
            &url,
            s.s3a_n,
            &format!("gateway={pid}"),
            "one gateway",
        ),
    )?;
    procs.stop_all();

    println!(
        "==> scenario 3b: {} idle members through chat-lb (Redis + 3 gateways)",
        s.s3b_n
    );
    let cluster = start_cluster(suite, &mut procs, "s3")?;
    let url = format!("ws://{}/ws", cluster.lb);
    suite.bench(
        "s3b-connections-lb",
        &connections_args(
            suite,
            &url,
            s.s3b_n,
            &cluster.watch.join(","),
            "through chat-lb",
        ),
    )
}

/// Scenario 4: TCP ping-pong on the same three echo backends: direct, through chat-lb, HAProxy
/// (`mode tcp`) and the minimal relay; latency on 1 connection, throughput on many; rounds
/// interleaved (direct, chat-lb, HAProxy, relay, then again).
fn pingpong(suite: &Suite) -> Result<()> {
    println!("==> scenario 4: TCP ping-pong direct, through chat-lb and through HAProxy (same 3 echo backends)");
    let s = &suite.sizes;
    let mut procs = Procs::new(&suite.logs);
    let targets = start_pingpong_targets(suite, &mut procs)?;
    for round in 1..=s.rounds {
        for (label, url, watch) in &targets {
            suite.bench(
                &round_name(&format!("s4-latency-{label}"), round),
                &args(&[
                    "pingpong",
                    "--url",
                    url,
                    "--conns",
                    "1",
                    "--depth",
                    "1",
                    "--size",
                    "64",
                    "--duration",
                    s.s4_duration,
                    "--warmup",
                    "1s",
                    "--watch-pid",
                    watch,
                    "--label",
                    label,
                ]),
            )?;
        }
        for (label, url, watch) in &targets {
            suite.bench(
                &round_name(&format!("s4-throughput-{label}"), round),
                &args(&[
                    "pingpong",
                    "--url",
                    url,
                    "--conns",
                    &s.s4_conns.to_string(),
                    "--depth",
                    "4",
                    "--size",
                    "64",
                    "--duration",
                    s.s4_duration,
                    "--warmup",
                    "1s",
                    "--local-ips",
                    LOCAL_IPS,
                    "--watch-pid",
                    watch,
                    "--label",
                    label,
                ]),
            )?;
        }
    }
    for (kind, title) in [
        (
            "latency",
            "64-byte ping-pong round trip, 1 connection".to_owned(),
        ),
        (
            "throughput",
            format!(
                "64-byte ping-pong round trip, {} connections x 4 in flight",
                s.s4_conns
            ),
        ),
    ] {
        let mut plot = Command::new(&suite.bench);
        plot.arg("plot")
            .arg("--out")
            .arg(suite.out.join(format!("s4-{kind}.svg")))
            .args(["--title", &title]);
        for target in PINGPONG_TARGETS {
            plot.arg(suite.out.join(format!("s4-{kind}-{target}.json")));
        }
        let _ = plot.status();
    }
    Ok(())
}

/// The echo servers and the three ways to them; returns (label, URL, processes to watch)
/// for each target in [`PINGPONG_TARGETS`] order.
fn start_pingpong_targets(
    suite: &Suite,
    procs: &mut Procs,
) -> Result<Vec<(String, String, String)>> {
    let ports = [free_port(), free_port(), free_port()];
    let echoes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut echo = Command::new(&suite.bench);
    echo.args([
        "--threads",
        "1",
        "echo-server",
        "--listen",
        &echoes.join(","),
    ]);
    let (echo_pid, _) =
        procs.start_and_read("echo", echo, &format!("listening on {}", echoes[2]), ' ')?;
    let (lb_pid, lb) = start_lb(suite, procs, "s4-lb", &echoes, &[])?;
    let mut relay = Command::new(&suite.bench);
    relay.args(["relay", "--listen", "127.0.0.1:0", "--backend", &echoes[0]]);
    let (relay_pid, relay_addr) = procs.start_and_read("relay", relay, "listening on ", ' ')?;
    let haproxy_port = free_port();
    let haproxy_pid = start_haproxy(&suite.out, procs, haproxy_port, &echoes)?;
    Ok(vec![
        (
            "direct".into(),
            format!("tcp://{}", echoes[0]),
            format!("echo={echo_pid}"),
        ),
        (
            "chat-lb".into(),
            format!("tcp://{lb}"),
            format!("chat-lb={lb_pid},echo={echo_pid}"),
        ),
        (
            "haproxy".into(),
            format!("tcp://127.0.0.1:{haproxy_port}"),
            format!("haproxy={haproxy_pid},echo={echo_pid}"),
        ),
        (
            "relay".into(),
            format!("tcp://{relay_addr}"),
            format!("relay={relay_pid},echo={echo_pid}"),
        ),
    ])
}

/// HAProxy in `mode tcp`, round-robin over `echoes`, on `port`; returns its pid.
fn start_haproxy(out: &Path, procs: &mut Procs, port: u16, echoes: &[String]) -> Result<u32> {
    let mut config = format!(
        "global\n    # Two sockets per connection within the 20,000 files a process may open.\n    maxconn 9000\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\
         frontend bench\n    bind 127.0.0.1:{port}\n    default_backend echo\n\
         backend echo\n    balance roundrobin\n"
    );
    for (i, echo) in echoes.iter().enumerate() {
        config.push_str(&format!("    server e{} {echo}\n", i + 1));
    }
    let path = out.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .context("running haproxy")?;
    anyhow::ensure!(
        check.status.success(),
        "invalid haproxy config: {}",
        path.display()
    );
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&path);
    let pid = procs.start("haproxy", command)?;
    wait_for_port(([127, 0, 0, 1], port).into())
        .context("haproxy did not start: see logs/haproxy.log")?;
    Ok(pid)
}

/// Scenario 5, failover: chat-bench starts the gateways and chat-lb itself (it kills one and, in 5b,
/// restarts it with the same id and address); Redis is fresh for each variant.
fn failover(suite: &Suite) -> Result<()> {
    let s = &suite.sizes;
    for (variant, label) in [
        ("a", "gateway killed"),
        ("b", "gateway killed and restarted"),
    ] {
        println!(
            "==> scenario 5{variant}: {} members via chat-lb on 3 gateways, {label}",
            s.s5_n
        );
        let mut procs = Procs::new(&suite.logs);
        let (redis_pid, redis) = start_redis(suite, &mut procs)?;
        let log_dir = suite.logs.join(format!("s5{variant}"));
        let mut run = args(&[
            "failover",
            "--redis",
            &redis,
            "--members",
            &s.s5_n.to_string(),
            "--room-size",
            "30",
            "--rooms-per-member",
            "2",
            "--rate",
            "1",
            "--warmup",
            s.warmup,
            "--duration",
            s.s5_duration,
            "--local-ips",
            LOCAL_IPS,
            "--chat-gateway-bin",
            &suite.gateway.display().to_string(),
            "--chat-lb-bin",
            &suite.lb.display().to_string(),
            "--log-dir",
            &log_dir.display().to_string(),
            "--watch-pid",
            &format!("redis={redis_pid}"),
        ]);
        if variant == "b" {
            run.push("--restart".into());
        }
        run.extend(args(&["--label", &format!("{label}, {} members", s.s5_n)]));
        suite.bench(&format!("s5{variant}-failover"), &run)?;
    }
    Ok(())
}
