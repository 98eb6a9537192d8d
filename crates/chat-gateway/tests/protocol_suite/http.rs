//! The HTTP side: /healthz, /metrics, /api/rooms, and refused configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use chat_proto::v1::ErrorCode;
use chat_test_support::{eventually, metric_value, run_to_exit, BackendKind};

use super::{assert_code, start, BIN, WAIT};

pub(crate) async fn healthz_is_ok(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let (status, body) = server.get("/healthz").await?;
    assert_eq!((status, body.trim()), (200, "ok"));
    Ok(())
}

pub(crate) async fn metrics_lists_the_counters(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let before = server.metrics().await?;
    let info = format!("chat_gateway_info{{gateway_id=\"{}\"}}", server.id());
    let expected_before = [
        ("chat_connections_open", 0.0),
        ("chat_connections_total", 0.0),
        ("chat_connections_refused_total", 0.0),
        ("chat_frames_in_total", 0.0),
        ("chat_frames_out_total", 0.0),
        ("chat_messages_accepted_total", 0.0),
        ("chat_messages_duplicate_total", 0.0),
        ("chat_slow_consumers_dropped_total", 0.0),
        ("chat_bridge_up", 1.0),
        ("chat_draining", 0.0),
        (info.as_str(), 1.0),
    ];
    for (series, value) in expected_before {
        assert_eq!(
            metric_value(&before, series),
            Some(value),
            "{series} at start"
        );
    }
    let error_series = |code: ErrorCode| {
        format!(
            "chat_errors_total{{code=\"{}\"}}",
            code.as_str_name().trim_start_matches("ERROR_CODE_")
        )
    };
    for code in (1..=15).filter_map(|c| ErrorCode::try_from(c).ok()) {
        assert_eq!(
            metric_value(&before, &error_series(code)),
            Some(0.0),
            "{}",
            error_series(code)
        );
    }

    // Five frames in: Hello, Join, Send, its retry, a Send outside the room.
    let mut alice = server.client("alice").await?;
    alice.join("lobby").await?;
    alice.send_with_id("lobby", "hi", "k").await?;
    alice.send_with_id("lobby", "hi", "k").await?;
    assert_code(alice.send("nowhere", "hi").await, ErrorCode::NotInRoom);
    let expected_after = [
        ("chat_connections_open".to_owned(), 1.0),
        ("chat_connections_total".to_owned(), 1.0),
        ("chat_frames_in_total".to_owned(), 5.0),
        ("chat_messages_accepted_total".to_owned(), 1.0),
        ("chat_messages_duplicate_total".to_owned(), 1.0),
        (error_series(ErrorCode::NotInRoom), 1.0),
        (error_series(ErrorCode::BadFrame), 0.0),
    ];
    eventually(WAIT, || async {
        let now = server.metrics().await.ok()?;
        let wrong: Vec<_> = expected_after
            .iter()
            .filter(|(series, value)| metric_value(&now, series) != Some(*value))
            .map(|(series, value)| {
                format!(
                    "{series}: want {value}, have {:?}",
                    metric_value(&now, series)
                )
            })
            .collect();
        // Hello, Join, Ack, Ack, Error and alice's own message at least.
        let out = metric_value(&now, "chat_frames_out_total").unwrap_or(0.0);
        (wrong.is_empty() && out >= 6.0)
            .then_some(())
            .ok_or(format!("{wrong:?}, frames out {out}"))
            .ok()
    })
    .await;
    Ok(())
}

pub(crate) async fn api_rooms_lists_rooms_with_members(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let rooms = || async {
        let (status, body) = server.get("/api/rooms").await?;
        ensure!(status == 200, "/api/rooms answered {status}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        let mut rooms = BTreeMap::new();
        for room in json["rooms"]
            .as_array()
            .with_context(|| format!("no rooms array in {body}"))?
        {
            let name = room["name"]
                .as_str()
                .with_context(|| format!("no name in {room}"))?;
            let members = room["members"]
                .as_u64()
                .with_context(|| format!("no members in {room}"))?;
            rooms.insert(name.to_owned(), members);
        }
        anyhow::Ok(rooms)
    };
    let expect = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(n, m)| ((*n).to_owned(), *m))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(rooms().await?, expect(&[]));

    let mut alice = server.client("alice").await?;
    alice.join("alpha").await?;
    alice.join("beta").await?;
    let mut bob = server.client("bob").await?;
    bob.join("alpha").await?;
    // Served from a snapshot at most a second old.
    let want = expect(&[("alpha", 2), ("beta", 1)]);
    eventually(WAIT, || async { rooms().await.ok().filter(|r| *r == want) }).await;

    bob.leave("alpha").await?;
    let want = expect(&[("alpha", 1), ("beta", 1)]);
    eventually(WAIT, || async { rooms().await.ok().filter(|r| *r == want) }).await;
    alice.close().await?;
    eventually(WAIT, || async {
        rooms().await.ok().filter(BTreeMap::is_empty)
    })
    .await;
    Ok(())
}

pub(crate) async fn zero_valued_flags_are_refused_with_exit_64(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let fixture = kind.setup().await?;
    let flags = [
        "--max-text-bytes",
        "--max-rooms",
        "--messages-per-second",
        "--message-burst",
        "--history-len",
        "--outbound-queue",
        "--max-connections",
        "--ping-interval-secs",
        "--idle-timeout-secs",
        "--drain-timeout-ms",
    ];
    let backend_args = fixture.backend().args();
    for flag in flags {
        let mut args = vec!["--listen", "127.0.0.1:0", flag, "0"];
        args.extend(backend_args.iter().map(String::as_str));
        let output = run_to_exit(BIN, &args, Duration::from_secs(20)).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{flag} 0: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(
            lines.len() == 1 && lines[0].contains(flag),
            "{flag} 0: expected one line naming the flag, got {stderr:?}"
        );
        ensure!(output.stdout.is_empty(), "{flag} 0: nothing is served");
    }
    Ok(())
}
