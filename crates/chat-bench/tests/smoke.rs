//! Smoke runs of the `chat-bench` binary against real servers: each scenario
//! for a few seconds with small sizes. The JSON report must be well-formed
//! and clean (zero loss, no failures). No timing thresholds: the targets are
//! checked by running the benchmark (scripts/bench.sh), not here.
//!
//! The gateway and chat-lb binaries are taken from the same target directory
//! as `chat-bench` (scripts/test.sh builds the whole workspace first).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chat_test_support::{BackendKind, Gateway, RedisServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Generous bound on a whole smoke run (start-up, set-up, run, drain).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A sibling binary of chat-bench in the target directory, or a clear failure.
fn sibling(name: &str) -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_chat-bench"));
    let bin = bench.with_file_name(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, as scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs chat-bench with the whitespace-separated `args` plus `--json`, and
/// returns the parsed report.
async fn bench(args: &str) -> Value {
    let args: Vec<&str> = args.split_whitespace().collect();
    let run = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(&args)
        .args(["--json", "--no-progress"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("chat-bench finished in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chat-bench {args:?} failed: {}\n{stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A gateway on the embedded bridge with rate limits out of the way.
async fn gateway() -> (chat_test_support::BackendFixture, Gateway) {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend
        .gateway(
            sibling("chat-gateway"),
            &[
                "--messages-per-second",
                "1000000",
                "--message-burst",
                "1000000",
            ],
        )
        .await
        .unwrap();
    (backend, gateway)
}

/// Checks the frame every report shares.
fn check_common(report: &Value, scenario: &str) {
    assert_eq!(report["scenario"], scenario);
    assert!(report["tool"].as_str().unwrap().starts_with("chat-bench "));
    assert!(report["params"].is_object());
    let latency = &report["latency"];
    let p = |key: &str| {
        latency[key]
            .as_f64()
            .unwrap_or_else(|| panic!("latency.{key} in {latency}"))
    };
    assert!(latency["count"].as_u64().unwrap() > 0, "{latency}");
    assert!(
        p("min_us") <= p("p50_us") && p("p50_us") <= p("p90_us") && p("p90_us") <= p("p99_us"),
        "{latency}"
    );
    assert!(
        p("p99_us") <= p("p999_us") && p("p999_us") <= p("max_us"),
        "{latency}"
    );
    assert!(!latency["distribution"].as_array().unwrap().is_empty());
    assert!(!report["timeline"].as_array().unwrap().is_empty());
    for key in ["user_secs", "system_secs", "wall_secs", "cores_used"] {
        assert!(report["bench_cpu"][key].is_f64(), "bench_cpu.{key}");
    }
    assert_eq!(report["clean"], true, "not clean: {report:#}");
}

fn check_fanout(report: &Value) {
    check_common(report, "fanout");
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {report:#}"))
    };
    assert!(n("acked") > 0);
    assert_eq!(n("sent"), n("acked") + n("send_errors"));
    assert_eq!(n("expected_deliveries"), n("acked") * n("members_per_room"));
    assert_eq!(n("received"), n("expected_deliveries"));
    assert_eq!(n("loss"), 0);
    assert_eq!(n("duplicates"), 0);
    assert_eq!(n("disconnects"), 0);
    assert_eq!(report["latency"]["count"], report["received"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_as_fast_as_acks_allow_is_clean() {
    let (_backend, gateway) = gateway().await;
    let pid = format!("gateway={}", gateway.pid().unwrap());
    let report = bench(&format!(
        "fanout --url {} --rooms 2 --members 10 --publishers 2 --duration 2s --warmup 500ms \
         --local-ips 127.0.0.1-127.0.0.3 --watch-pid {pid}",
        gateway.ws_url()
    ))
    .await;
    check_fanout(&report);
    assert_eq!(report["connections"], 20);
    assert_eq!(report["processes"][0]["name"], "gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_fanout_is_clean() {
    let (_backend, gateway) = gateway().await;
    let report = bench(&format!(
        "fanout --url {} --rooms 3 --members 5 --rate 50 --duration 2s --warmup 500ms",
        gateway.ws_url()
    ))
    .await;
    check_fanout(&report);
    assert_eq!(report["params"]["rate"], 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_clean_and_measured() {
    let (_backend, gateway) = gateway().await;
    let pid = format!("gateway={}", gateway.pid().unwrap());
    let report = bench(&format!(
        "connections --url {} --n 60 --members 20 --rate 200 --hold 1s --watch-pid {pid}",
        gateway.ws_url()
    ))
    .await;
    check_common(&report, "connections");
    assert_eq!(report["connected"], 60);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["dropped"], 0);
    assert_eq!(report["open_at_end"], 60);
    assert!(
        report["rss_per_connection_bytes"]["gateway"].is_f64(),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_of_a_restarted_gateway_is_clean() {
    // The scenario starts its own gateways and chat-lb, next to chat-bench.
    sibling("chat-gateway");
    sibling("chat-lb");
    let redis = RedisServer::start().await.unwrap();
    let report = bench(&format!(
        "failover --redis {} --members 60 --room-size 20 --warmup 1s --duration 2s --restart",
        redis.url()
    ))
    .await;
    check_common(&report, "failover");
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {report:#}"))
    };
    assert_eq!(n("members"), 60);
    assert_eq!(report["restarted"], true);
    let hit = n("on_killed_gateway");
    assert!(hit > 0, "chat-lb put nobody on the first gateway");
    assert_eq!(n("resumed"), hit);
    assert_eq!(n("resumed_by_token"), hit);
    assert_eq!(report["latency"]["count"], hit);
    assert!(n("acked") > 0);
    assert_eq!(n("received"), n("expected_deliveries"));
    for zero in [
        "locked_out",
        "presence_flicker",
        "lost",
        "duplicates",
        "out_of_order",
        "rooms_listed_wrong",
        "unexpected_disconnects",
    ] {
        assert_eq!(n(zero), 0, "{zero}");
    }
}

/// Starts a process and returns it with the first stdout line containing `marker`.
async fn start(mut command: Command, marker: &str) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let find = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(marker) {
                return line;
            }
        }
        panic!("exited without printing {marker:?}");
    };
    let line = tokio::time::timeout(Duration::from_secs(30), find)
        .await
        .expect("started in time");
    (child, line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingpong_direct_and_through_chat_lb_is_clean() {
    let mut echo = Command::new(env!("CARGO_BIN_EXE_chat-bench"));
    echo.args(["--threads", "1", "echo-server", "--listen", "127.0.0.1:0"]);
    let (_echo, line) = start(echo, "echo-server listening on ").await;
    let backend = line.rsplit(' ').next().unwrap().to_owned();

    // chat-lb logs its bound addresses in JSON on stderr, so read them there.
    let mut lb = Command::new(sibling("chat-lb"));
    lb.args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ])
    .args(["--backend", &backend])
    .env("RUST_LOG", "info")
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let mut lb = lb.spawn().unwrap();
    let mut lb_log = BufReader::new(lb.stderr.take().unwrap()).lines();
    let proxy = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lb_log.next_line().await.unwrap() {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "listening" {
                return entry["fields"]["proxy"].as_str().unwrap().to_owned();
            }
        }
        panic!("chat-lb exited without its listening line");
    })
    .await
    .expect("chat-lb started in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lb_log.next_line().await {} });

    for (url, label) in [
        (format!("tcp://{backend}"), "direct"),
        (format!("tcp://{proxy}"), "chat-lb"),
    ] {
        let report = bench(&format!(
            "pingpong --url {url} --conns 4 --depth 2 --duration 1s --warmup 200ms --label {label}"
        ))
        .await;
        check_common(&report, "pingpong");
        assert_eq!(report["label"], label);
        assert_eq!(report["connected"], 4);
        assert_eq!(report["errors"], 0);
        assert_eq!(report["latency"]["count"], report["round_trips"]);
    }
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_is_clean_and_shows_each_stage() {
    let report =
        bench("floor --rooms 3 --members 10 --rate 100 --duration 1s --warmup 300ms").await;
    check_common(&report, "floor");
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {report:#}"))
    };
    assert!(n("sent") > 0);
    assert_eq!(n("expected"), n("sent") * 10);
    assert_eq!(n("received"), n("expected"));
    assert_eq!(n("loss"), 0);
    assert_eq!(report["latency"]["count"], report["received"]);
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["source", "relay", "sink"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingpong_through_the_minimal_relay_is_clean() {
    let mut echo = Command::new(env!("CARGO_BIN_EXE_chat-bench"));
    echo.args(["--threads", "1", "echo-server", "--listen", "127.0.0.1:0"]);
    let (_echo, line) = start(echo, "echo-server listening on ").await;
    let backend = line.rsplit(' ').next().unwrap().to_owned();
    let mut relay = Command::new(env!("CARGO_BIN_EXE_chat-bench"));
    relay.args(["relay", "--listen", "127.0.0.1:0", "--backend", &backend]);
    let (_relay, line) = start(relay, "relay listening on ").await;
    let relay_addr = line.rsplit(' ').next().unwrap();

    let report = bench(&format!(
        "pingpong --url tcp://{relay_addr} --conns 4 --depth 2 --duration 1s --warmup 200ms --label relay"
    ))
    .await;
    check_common(&report, "pingpong");
    assert_eq!(report["connected"], 4);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["latency"]["count"], report["round_trips"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_scenario_1_and_summarises_it_from_the_report() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["suite", "--quick", "--only", "1", "--out"])
        .arg(out.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("the suite finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("s1-fanout.json")).unwrap())
            .unwrap();
    check_fanout(&report);
    assert!(out.path().join("s1-fanout.svg").exists());
    assert!(out.path().join("logs/s1-gateway.log").exists());
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    let row = summary
        .lines()
        .find(|l| l.starts_with("| 1. one gateway, 1 x 200, as fast as acks allow | "))
        .unwrap_or_else(|| panic!("no scenario 1 row in:\n{summary}"));
    let deliveries = report["deliveries_per_sec"].as_f64().unwrap().floor();
    assert!(
        row.contains(&format!("| {deliveries} deliveries/s, loss 0, p99 ")),
        "{row}"
    );
    assert!(!summary.contains("Runs that failed"), "{summary}");
    assert!(summary.contains("mode: quick"), "{summary}");
}
