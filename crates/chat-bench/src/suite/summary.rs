//! The suite's summary table, read from the reports the runs wrote. Every figure is read
//! through the report types that wrote it (`Report<FanoutResults>` and the like), so the
//! JSON layout has one owner: a renamed field breaks the build or these tests, not a script.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::connections::ConnectionsResults;
use crate::failover::FailoverResults;
use crate::fanout::FanoutResults;
use crate::pingpong::PingpongResults;
use crate::report::Report;
use chat_yardstick::FloorResults;

use super::{round_name, Sizes, PINGPONG_TARGETS, S6_SETUPS};

/// Reads the report `NAME.json` in `dir`, if that run wrote one.
fn read<R: DeserializeOwned>(dir: &Path, name: &str) -> Option<Report<R>> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// `"median (min-max over N runs)"` of whole numbers (each value rounded down); the
/// median of an even count is the upper one; `n/a` without values.
pub(super) fn spread(values: &[f64]) -> String {
    let mut whole: Vec<i64> = values.iter().map(|v| v.floor() as i64).collect();
    whole.sort_unstable();
    match whole.as_slice() {
        [] => "n/a".into(),
        [one] => one.to_string(),
        all => format!(
            "{} ({}-{} over {} runs)",
            all[all.len() / 2],
            all[0],
            all[all.len() - 1],
            all.len()
        ),
    }
}

/// The spread of one figure over every round's report of `name`.
fn rounds<R: DeserializeOwned>(
    dir: &Path,
    name: &str,
    sizes: &Sizes,
    figure: impl Fn(&Report<R>) -> f64,
) -> String {
    let values: Vec<f64> = (1..=sizes.rounds)
        .filter_map(|round| read::<R>(dir, &round_name(name, round)))
        .map(|report| figure(&report))
        .collect();
    spread(&values)
}

/// Rounds down, as the table shows every figure but the per-connection memory.
fn int(value: f64) -> i64 {
    value.floor() as i64
}

/// The table rows (`| scenario | measured | target |`) for every report found in `dir`.
pub(super) fn rows(dir: &Path, sizes: &Sizes) -> Vec<String> {
    let mut rows = Vec::new();
    fanout_rows(dir, sizes, &mut rows);
    connections_rows(dir, sizes, &mut rows);
    pingpong_rows(dir, sizes, &mut rows);
    failover_rows(dir, &mut rows);
    redis_cluster_rows(dir, sizes, &mut rows);
    rows
}

fn fanout_rows(dir: &Path, sizes: &Sizes, rows: &mut Vec<String>) {
    if let Some(r) = read::<FanoutResults>(dir, "s1-fanout") {
        rows.push(format!(
            "| 1. one gateway, 1 x {}, as fast as acks allow | {} deliveries/s, loss {}, p99 {} µs | >= 1,000,000/s, 0 loss |",
            sizes.s1_members,
            int(r.results.deliveries_per_sec),
            r.results.loss,
            int(r.latency.p99_us)
        ));
    }
    if read::<FanoutResults>(dir, "s2a-fanout-max").is_some() {
        let s2a = |f: fn(&Report<FanoutResults>) -> f64| rounds(dir, "s2a-fanout-max", sizes, f);
        rows.push(format!(
            "| 2a. cluster via chat-lb, {} x {}, as fast as acks allow | {} deliveries/s, loss {}, p99 {} µs | >= 1,000,000/s, 0 loss |",
            sizes.s2_rooms,
            sizes.s2_members,
            s2a(|r| r.results.deliveries_per_sec),
            s2a(|r| r.results.loss as f64),
            s2a(|r| r.latency.p99_us),
        ));
        let paced = match read::<FanoutResults>(dir, "s2b-fanout-paced") {
            Some(r) => format!(
                "{} deliveries/s, loss {}, p50 {} µs, p99 {} µs",
                int(r.results.deliveries_per_sec),
                r.results.loss,
                int(r.latency.p50_us),
                int(r.latency.p99_us)
            ),
            None => "n/a".into(),
        };
        rows.push(format!(
            "| 2b. cluster via chat-lb, paced | {paced} | p99 <= 5 ms at 100,000/s |"
        ));
    }
    for rate in sizes.floor_rates() {
        let name = format!("s2-floor-{}", sizes.s2_rooms * sizes.s2_members * rate);
        let Some(r) = read::<FloorResults>(dir, &name) else {
            continue;
        };
        let cores: f64 = r.results.stages.iter().map(|s| s.cpu.cores_used).sum();
        rows.push(format!(
            "| floor: 2b's shape, sockets and one relay hop only | {} deliveries/s, p50 {} µs, p99 {} µs, {} % of one core | (yardstick) |",
            int(r.results.deliveries_per_sec),
            int(r.latency.p50_us),
            int(r.latency.p99_us),
            int(cores * 100.0)
        ));
    }
}

fn connections_rows(dir: &Path, sizes: &Sizes, rows: &mut Vec<String>) {
    // KiB with one decimal, rounded down.
    let kib = |r: &Report<ConnectionsResults>, process: &str| {
        r.results.rss_per_connection_bytes.get(process).map_or_else(
            || "n/a".to_owned(),
            |bytes| format!("{}", (bytes / 1024.0 * 10.0).floor() / 10.0),
        )
    };
    if let Some(r) = read::<ConnectionsResults>(dir, "s3a-connections") {
        rows.push(format!(
            "| 3a. {} idle on one gateway | {} connected, {} failed, gateway {} KiB/connection | <= 8 KiB/connection |",
            sizes.s3a_n,
            r.results.connected,
            r.results.failed,
            kib(&r, "gateway")
        ));
    }
    if let Some(r) = read::<ConnectionsResults>(dir, "s3b-connections-lb") {
        rows.push(format!(
            "| 3b. {} idle through chat-lb | {} connected, {} failed, chat-lb {} KiB/connection | <= 2 KiB/connection |",
            sizes.s3b_n,
            r.results.connected,
            r.results.failed,
            kib(&r, "chat-lb")
        ));
    }
}

fn pingpong_rows(dir: &Path, sizes: &Sizes, rows: &mut Vec<String>) {
    if read::<PingpongResults>(dir, "s4-latency-direct").is_none() {
        return;
    }
    let latency = |target: &str, f: fn(&Report<PingpongResults>) -> f64| {
        rounds(dir, &format!("s4-latency-{target}"), sizes, f)
    };
    for target in PINGPONG_TARGETS {
        rows.push(format!(
            "| 4. ping-pong {target}, 1 connection | p50 {} µs, p99 {} µs | added p99 <= 50 µs |",
            latency(target, |r| r.latency.p50_us),
            latency(target, |r| r.latency.p99_us)
        ));
    }
    // What a balancer adds: its p99 minus direct's in the same round.
    for target in &PINGPONG_TARGETS[1..] {
        let added: Vec<f64> = (1..=sizes.rounds)
            .filter_map(|round| {
                let direct = read::<PingpongResults>(dir, &round_name("s4-latency-direct", round))?;
                let via = read::<PingpongResults>(
                    dir,
                    &round_name(&format!("s4-latency-{target}"), round),
                )?;
                Some(via.latency.p99_us - direct.latency.p99_us)
            })
            .collect();
        rows.push(format!(
            "| 4. added by {target} at p99, 1 connection | {} µs | <= 50 µs |",
            spread(&added)
        ));
    }
    for target in PINGPONG_TARGETS {
        rows.push(format!(
            "| 4. ping-pong {target}, {} x 4 in flight | {} round trips/s | chat-lb >= HAProxy |",
            sizes.s4_conns,
            rounds(
                dir,
                &format!("s4-throughput-{target}"),
                sizes,
                |r: &Report<PingpongResults>| { r.results.round_trips_per_sec }
            )
        ));
    }
}

fn failover_rows(dir: &Path, rows: &mut Vec<String>) {
    for variant in ['a', 'b'] {
        let Some(r) = read::<FailoverResults>(dir, &format!("s5{variant}-failover")) else {
            continue;
        };
        let f = &r.results;
        rows.push(format!(
            "| 5{variant}. failover, {} ({} on it) | loss -> back in all rooms p50 {} ms, p99 {} ms, max {} ms; {} by token, {} locked out; lost {}, duplicates {}, out of order {}, presence flicker {}, rooms listed wrong {} | p99 <= 1 s, max <= 2 s, 0 lost, 0 duplicates, 0 flicker |",
            r.label,
            f.on_killed_gateway,
            int(f.recovery.p50_ms),
            int(f.recovery.p99_ms),
            int(f.recovery.max_ms),
            f.resumed_by_token,
            f.locked_out,
            f.lost,
            f.duplicates,
            f.out_of_order,
            f.presence_flicker,
            f.rooms_listed_wrong
        ));
    }
}

/// The median of whole numbers (the upper one of an even count), as text; `n/a` without values.
fn median(mut values: Vec<i64>) -> String {
    values.sort_unstable();
    values
        .get(values.len() / 2)
        .map_or_else(|| "n/a".into(), ToString::to_string)
}

/// The CPU cell of scenario 6 from one setup's reports (the rounds of one measurement):
/// each watched process's median % of one core, the busiest Redis process named first.
fn cpu_cell(reports: &[Report<FanoutResults>]) -> String {
    let Some(first) = reports.first() else {
        return "n/a".into();
    };
    // Median % of one core of the process watched as `name`, over the reports.
    let pct = |name: &str| -> Vec<i64> {
        reports
            .iter()
            .filter_map(|r| r.processes.iter().find(|p| p.name == name))
            .map(|p| int(p.cpu.cores_used * 100.0))
            .collect()
    };
    let names = |prefix: &str, suffix: &str| -> Vec<&str> {
        first
            .processes
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| name.starts_with(prefix) && name.ends_with(suffix))
            .collect()
    };
    let joined = |names: &[&str]| {
        let all: Vec<String> = names.iter().map(|name| median(pct(name))).collect();
        all.join("/")
    };
    let busiest = names("redis", "")
        .into_iter()
        .filter_map(|name| Some((name, median(pct(name)).parse::<i64>().ok()?)))
        .max_by_key(|&(_, pct)| pct);
    let mut cell = match busiest {
        Some((name, pct)) => format!("busiest Redis {name} {pct} %"),
        None => "Redis n/a".into(),
    };
    for role in ["primary", "replica"] {
        let nodes = names("redis", &format!("-{role}"));
        if !nodes.is_empty() {
            cell.push_str(&format!(", {role} nodes {} %", joined(&nodes)));
        }
    }
    let bench = reports
        .iter()
        .map(|r| int(r.bench_cpu.cores_used * 100.0))
        .collect();
    format!(
        "{cell}; gateways {} %; chat-lb {} %; bench {} %",
        joined(&names("gateway-", "")),
        median(pct("chat-lb")),
        median(bench)
    )
}

/// Scenario 6: one Redis and the Redis Cluster side by side, as fast as acks allow (median
/// and range over the rounds) and paced, each with the CPU of its processes.
fn redis_cluster_rows(dir: &Path, sizes: &Sizes, rows: &mut Vec<String>) {
    let max = |setup: &str| format!("s6a-{setup}-max");
    if S6_SETUPS
        .iter()
        .all(|setup| read::<FanoutResults>(dir, &max(setup)).is_none())
    {
        return;
    }
    let shape = format!("{} x {}", sizes.s6_rooms, sizes.s6_members);
    let both = |f: &dyn Fn(&str) -> String| {
        let [one, cluster] = S6_SETUPS.map(f);
        format!("{one} / {cluster}")
    };
    let all_rounds = |setup: &str| -> Vec<Report<FanoutResults>> {
        (1..=sizes.rounds)
            .filter_map(|round| read(dir, &round_name(&max(setup), round)))
            .collect()
    };
    rows.push(format!(
        "| 6a. {shape} via chat-lb, as fast as acks allow: one Redis / Redis Cluster (3 primaries + 3 replicas) | {} deliveries/s; loss {}; p99 {} µs | (comparison) |",
        both(&|setup| rounds(dir, &max(setup), sizes, |r: &Report<FanoutResults>| r.results.deliveries_per_sec)),
        both(&|setup| rounds(dir, &max(setup), sizes, |r: &Report<FanoutResults>| r.results.loss as f64)),
        both(&|setup| rounds(dir, &max(setup), sizes, |r: &Report<FanoutResults>| r.latency.p99_us)),
    ));
    let names = ["one Redis", "Redis Cluster"];
    let targets = ["(comparison)", "no Redis process busier than a gateway"];
    for ((setup, name), target) in S6_SETUPS.iter().zip(names).zip(targets) {
        rows.push(format!(
            "| 6a. CPU, {name} (% of one core, median over the runs) | {} | {target} |",
            cpu_cell(&all_rounds(setup))
        ));
    }
    let deliveries = sizes.s6_rooms * sizes.s6_members * sizes.s6_rate;
    let paced = |setup: &str| read::<FanoutResults>(dir, &format!("s6b-{setup}-paced"));
    let figure = |f: fn(&Report<FanoutResults>) -> String| {
        both(&|setup| paced(setup).as_ref().map_or("n/a".into(), f))
    };
    rows.push(format!(
        "| 6b. {shape} via chat-lb, paced at {deliveries} deliveries/s: one Redis / Redis Cluster | {} deliveries/s; loss {}; p50 {} µs; p99 {} µs | (comparison) |",
        figure(|r| int(r.results.deliveries_per_sec).to_string()),
        figure(|r| r.results.loss.to_string()),
        figure(|r| int(r.latency.p50_us).to_string()),
        figure(|r| int(r.latency.p99_us).to_string()),
    ));
    for (setup, name) in S6_SETUPS.iter().zip(names) {
        rows.push(format!(
            "| 6b. CPU, {name}, paced (% of one core) | {} | (comparison) |",
            cpu_cell(&paced(setup).into_iter().collect::<Vec<_>>())
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_median_and_the_range_of_whole_numbers() {
        assert_eq!(spread(&[]), "n/a");
        assert_eq!(spread(&[12.9]), "12");
        assert_eq!(spread(&[3.5, 1.2, 2.7]), "2 (1-3 over 3 runs)");
        assert_eq!(spread(&[4.0, 1.0]), "4 (1-4 over 2 runs)");
        assert_eq!(spread(&[-1.5, 2.0]), "2 (-2-2 over 2 runs)");
    }

    #[test]
    fn rows_come_from_the_reports_found_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = Sizes::new(false);
        assert!(rows(dir.path(), &sizes).is_empty());
        // A report as `chat-bench connections --json-file` writes it (its frame and results).
        let report = serde_json::json!({
            "scenario": "connections", "label": "one gateway", "tool": "chat-bench 0",
            "started_unix_ms": 0, "params": {}, "clean": true,
            "requested": 10, "members_per_room": 5, "connected": 10, "failed": 0,
            "failure_reasons": {}, "connect_secs": 1.0, "connects_per_sec": 10.0,
            "held_secs": 1.0, "open_at_end": 10, "dropped": 0, "drop_reasons": {},
            "rss_per_connection_bytes": {"gateway": 5_500.0},
            "latency_kind": "connect", "latency": {"count": 0, "min_us": 0.0, "mean_us": 0.0,
                "p50_us": 0.0, "p90_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "max_us": 0.0,
                "distribution": []},
            "timeline_unit": "connections", "timeline": [],
            "bench_cpu": {"user_secs": 0.0, "system_secs": 0.0, "wall_secs": 1.0, "cores_used": 0.0},
            "processes": []
        });
        std::fs::write(dir.path().join("s3a-connections.json"), report.to_string()).unwrap();
        assert_eq!(
            rows(dir.path(), &sizes),
            ["| 3a. 15000 idle on one gateway | 10 connected, 0 failed, gateway 5.3 KiB/connection | <= 8 KiB/connection |"]
        );
    }

    /// A fan-out report as `chat-bench fanout --json-file` writes it, with `processes`
    /// as (name, % of one core).
    fn fanout_report(deliveries: f64, p99_us: f64, processes: &[(&str, f64)]) -> String {
        let cpu = |pct: f64| {
            serde_json::json!({"user_secs": 0.0, "system_secs": 0.0,
            "wall_secs": 1.0, "cores_used": pct / 100.0})
        };
        let processes: Vec<serde_json::Value> = processes
            .iter()
            .map(|&(name, pct)| {
                serde_json::json!({"name": name, "pid": 1, "cpu": cpu(pct),
                "rss_before_kib": 0, "rss_after_kib": 0})
            })
            .collect();
        serde_json::json!({
            "scenario": "fanout", "label": "", "tool": "chat-bench 0",
            "started_unix_ms": 0, "params": {}, "clean": true,
            "rooms": 30, "members_per_room": 5, "publishers_per_room": 1, "connections": 150,
            "setup_secs": 1.0, "measured_secs": 1.0, "sent": 1, "acked": 1, "send_errors": 0,
            "errors_by_code": {}, "expected_deliveries": 5, "received": 5, "loss": 0,
            "loss_ratio": 0.0, "duplicates": 0, "messages_per_sec": 1.0,
            "deliveries_per_sec": deliveries, "disconnects": 0, "disconnect_reasons": {},
            "max_pacing_lag_ms": 0.0, "drain_secs": 0.0,
            "latency_kind": "end-to-end", "latency": {"count": 1, "min_us": 0.0, "mean_us": 0.0,
                "p50_us": 100.0, "p90_us": 0.0, "p99_us": p99_us, "p999_us": 0.0, "max_us": 0.0,
                "distribution": []},
            "timeline_unit": "deliveries/s", "timeline": [],
            "bench_cpu": cpu(70.0),
            "processes": processes
        })
        .to_string()
    }

    #[test]
    fn scenario_6_compares_the_setups_and_names_the_busiest_redis() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = Sizes::new(true);
        let gateways = [
            ("gateway-1", 60.0),
            ("gateway-2", 55.5),
            ("gateway-3", 58.5),
        ];
        let mut one = vec![("redis", 90.0)];
        one.extend(gateways);
        one.push(("chat-lb", 40.0));
        let mut cluster = vec![
            ("redis-7001-primary", 30.0),
            ("redis-7002-primary", 35.9),
            ("redis-7003-replica", 5.0),
        ];
        cluster.extend(gateways);
        let write = |name: &str, report: String| {
            std::fs::write(dir.path().join(format!("{name}.json")), report).unwrap();
        };
        write("s6a-one-max", fanout_report(200_000.7, 9_000.0, &one));
        write(
            "s6a-cluster-max",
            fanout_report(250_000.0, 8_000.0, &cluster),
        );
        write("s6b-one-paced", fanout_report(3_000.0, 2_500.0, &one));
        let rows = rows(dir.path(), &sizes);
        assert_eq!(rows.len(), 6, "{rows:#?}");
        let expected = [
            (0, "| 200000 / 250000 deliveries/s; loss 0 / 0; p99 9000 / 8000 µs |"),
            (1, "| busiest Redis redis 90 %; gateways 60/55/58 %; chat-lb 40 %; bench 70 % |"),
            (2, "| busiest Redis redis-7002-primary 35 %, primary nodes 30/35 %, replica nodes 5 %; gateways 60/55/58 %; chat-lb n/a %; bench 70 % |"),
            (3, "paced at 3000 deliveries/s"),
            (3, "| 3000 / n/a deliveries/s; loss 0 / n/a; p50 100 / n/a µs; p99 2500 / n/a µs |"),
            (4, "| busiest Redis redis 90 %;"),
            (5, "| n/a |"),
        ];
        for (row, text) in expected {
            assert!(rows[row].contains(text), "row {row}: {}", rows[row]);
        }
    }
}
