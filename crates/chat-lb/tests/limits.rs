//! Hostile clients against the real `chat-lb` binary: silent and half-sent connections, the
//! first-byte deadline, per-source caps and rates, the idle timeout, a descriptor-exhausting
//! flood, and a live connection that the defaults never cut.

mod support;

use std::time::Duration;

use support::{
    closed_by_peer, connect_from, eventually, loopback, Binary, Client, TestBackend, PATIENCE,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

const UP: &str = "chat_lb_backend_up";
const HEALTH_CHECKS: &str = "chat_lb_backend_health_checks_total";
const REJECTED: &str = "chat_lb_connections_rejected_total";
const AWAITING: &str = "chat_lb_awaiting_first_byte";
const TIMEOUTS: &str = "chat_lb_timeouts_total";

/// The attacker's source address; the normal client comes from another one.
const ATTACKER: u8 = 1;
const VISITOR: u8 = 2;

/// Health check results for `backend` so far: (successes, failures).
async fn health(lb: &Binary, backend: &TestBackend) -> (u64, u64) {
    let metrics = lb.metrics().await;
    let label = backend.addr_string();
    let get = |result| {
        metrics
            .get(HEALTH_CHECKS, &[("backend", &label), ("result", result)])
            .unwrap()
    };
    (get("success"), get("failure"))
}

async fn gauge(lb: &Binary, name: &str) -> Option<u64> {
    lb.metrics().await.get(name, &[])
}

/// Opens `n` connections from `source` that send nothing.
async fn silent(lb: &Binary, source: u8, n: usize) -> Vec<(TcpStream, Instant)> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = connect_from(loopback(source), lb.proxy).await.unwrap();
        sockets.push((stream, Instant::now()));
    }
    sockets
}

/// Silent clients, ten times more than the backend can hold, and half-sent requests: the
/// silent ones never reach the backend and are closed at their deadline, the half-sent ones
/// are relayed as they are, a visitor from another address is relayed, and the backend's
/// health checks keep passing the whole time.
#[tokio::test]
async fn silent_clients_never_reach_the_backend_and_are_closed_at_their_deadline() {
    // Like a gateway with --max-connections 4: a fifth connection, health check or not, is
    // closed at once. Before the first-byte deadline, 40 silent clients through chat-lb
    // filled it, its health checks failed and chat-lb took it out of rotation.
    let a = TestBackend::start_with_limit("a", 4).await;
    let deadline = Duration::from_secs(2);
    let lb = Binary::start(&[
        "--backend",
        &a.addr_string(),
        "--health-interval",
        "100ms",
        "--client-first-byte-timeout",
        "2s",
    ]);
    eventually("a first health check", || async { a.health_checks() > 0 }).await;

    let mut quiet = silent(&lb, ATTACKER, 40).await;
    let mut half_sent = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(loopback(ATTACKER), lb.proxy).await.unwrap();
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: chat\r\nUpgr")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    eventually("40 clients waiting for their first byte", || async {
        gauge(&lb, AWAITING).await == Some(40)
    })
    .await;
    // The half-sent requests were relayed as they are; the silent clients cost nothing.
    eventually("the half-sent requests at the backend", || async {
        a.data_connections() == 2
    })
    .await;

    let mut visitor = Client::open_from(loopback(VISITOR), lb.proxy)
        .await
        .expect("a visitor is relayed during the flood");
    visitor.echo("hello during the flood").await;
    let (successes, _) = health(&lb, &a).await;
    eventually("health checks keep passing during the flood", || async {
        health(&lb, &a).await.0 >= successes + 3
    })
    .await;

    for (stream, opened) in &mut quiet {
        assert!(closed_by_peer(stream).await, "a silent client left open");
        let after = opened.elapsed();
        assert!(
            after >= deadline,
            "closed after {after:?}, before the deadline"
        );
        assert!(after < deadline + PATIENCE / 2, "closed after {after:?}");
    }
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get(TIMEOUTS, &[("timeout", "client_first_byte")]),
        Some(40)
    );
    assert_eq!(metrics.get(AWAITING, &[]), Some(0));
    assert_eq!(metrics.backend(UP, &a), Some(1));
    assert_eq!(health(&lb, &a).await.1, 0, "a health check failed");
    assert_eq!(a.data_connections(), 3, "half-sent twice and the visitor");
    assert_eq!(a.refused(), 0, "the backend was full at some point");
    visitor.echo("and after it").await;
    drop(half_sent);
}

/// The cap counts every connection a source holds, silent ones included; past it, new ones
/// are closed at once and counted, while other sources are served.
#[tokio::test]
async fn the_per_source_cap_closes_the_excess_at_once_and_spares_other_sources() {
    let a = TestBackend::start("a").await;
    let lb = Binary::start(&[
        "--backend",
        &a.addr_string(),
        "--max-conns-per-source",
        "5",
        // Far beyond the test: the silent clients hold their places throughout.
        "--client-first-byte-timeout",
        "1h",
    ]);
    let mut relayed = Client::open_from(loopback(ATTACKER), lb.proxy)
        .await
        .expect("relayed");
    let mut quiet = silent(&lb, ATTACKER, 4).await;
    eventually("4 silent clients held", || async {
        gauge(&lb, AWAITING).await == Some(4)
    })
    .await;

    let mut excess = connect_from(loopback(ATTACKER), lb.proxy).await.unwrap();
    assert!(closed_by_peer(&mut excess).await, "the sixth was kept");
    let rejected = [("reason", "max_conns_per_source")];
    assert_eq!(lb.metrics().await.get(REJECTED, &rejected), Some(1));
    let mut visitor = Client::open_from(loopback(VISITOR), lb.proxy)
        .await
        .expect("another source is relayed");
    visitor.echo("not affected").await;
    relayed.echo("still relayed").await;
    assert_eq!(
        gauge(&lb, "chat_lb_sources_tracked").await,
        Some(2),
        "one entry per source"
    );

    // A closed connection gives its place back.
    quiet.pop();
    eventually("a place is free again", || async {
        gauge(&lb, AWAITING).await == Some(3)
    })
    .await;
    Client::open_from(loopback(ATTACKER), lb.proxy)
        .await
        .expect("relayed once a place was freed");
    assert_eq!(lb.metrics().await.get(REJECTED, &rejected), Some(1));
}

/// The rate is a token bucket per source: a burst, then refused at once until tokens come
/// back at the configured rate; other sources have their own bucket.
#[tokio::test]
async fn the_per_source_rate_refuses_beyond_the_burst_until_tokens_come_back() {
    let a = TestBackend::start("a").await;
    let lb = Binary::start(&[
        "--backend",
        &a.addr_string(),
        "--conn-rate-per-source",
        "1",
        "--conn-burst-per-source",
        "3",
    ]);
    let started = Instant::now();
    for i in 0..3 {
        Client::open_from(loopback(ATTACKER), lb.proxy)
            .await
            .unwrap_or_else(|| panic!("connection {i} of the burst refused"));
    }
    let mut fourth = connect_from(loopback(ATTACKER), lb.proxy).await.unwrap();
    assert!(closed_by_peer(&mut fourth).await, "beyond the burst, kept");
    let rejected = [("reason", "conn_rate_per_source")];
    assert_eq!(lb.metrics().await.get(REJECTED, &rejected), Some(1));
    Client::open_from(loopback(VISITOR), lb.proxy)
        .await
        .expect("another source has its own bucket");

    // One a second: the next token comes a second after the first connection.
    eventually("a token is back", || async {
        Client::open_from(loopback(ATTACKER), lb.proxy)
            .await
            .is_some()
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(a.data_connections(), 5);
}

/// On a dual-stack listener IPv4 clients arrive as `::ffff:a.b.c.d`; each IPv4 address is
/// still a source of its own (not all of them one `::ffff:0:0/64`), and IPv6 clients are
/// counted by their /64.
#[tokio::test]
async fn a_dual_stack_listener_counts_ipv4_clients_by_their_own_address() {
    let a = TestBackend::start("a").await;
    let lb = Binary::start_with(
        "[::]:0",
        None,
        &[
            "--backend",
            &a.addr_string(),
            "--max-conns-per-source",
            "1",
            "--client-first-byte-timeout",
            "1h",
        ],
    );
    let v4 = lb.proxy_from(loopback(1).unwrap());
    let v6 = lb.proxy_from("::1".parse().unwrap());
    let _held = connect_from(loopback(ATTACKER), v4).await.unwrap();
    eventually("the silent client held", || async {
        gauge(&lb, AWAITING).await == Some(1)
    })
    .await;
    let mut other_v4 = Client::open_from(loopback(VISITOR), v4)
        .await
        .expect("another IPv4 address is another source");
    let mut ipv6 = Client::open_from(None, v6)
        .await
        .expect("an IPv6 client is another source");
    let mut excess = connect_from(loopback(ATTACKER), v4).await.unwrap();
    assert!(
        closed_by_peer(&mut excess).await,
        "a second from one address"
    );
    let mut excess_v6 = connect_from(None, v6).await.unwrap();
    assert!(
        closed_by_peer(&mut excess_v6).await,
        "a second from one /64"
    );
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get(REJECTED, &[("reason", "max_conns_per_source")]),
        Some(2)
    );
    assert_eq!(metrics.get("chat_lb_sources_tracked", &[]), Some(3));
    other_v4.echo("v4").await;
    ipv6.echo("v6").await;
}

/// With nothing but a backend given, a connection that exchanges bytes now and then is never
/// cut: not by the first-byte deadline once it has spoken, and not during a silence longer
/// than the gateway's 25 s ping interval.
#[tokio::test]
async fn a_live_connection_is_never_cut_by_the_defaults() {
    let a = TestBackend::start("a").await;
    let lb = Binary::start(&["--backend", &a.addr_string()]);
    let mut client = Client::open(lb.proxy).await.expect("relayed");
    // The pauses are the workload (a WebSocket between two pings), not a synchronisation.
    for (i, pause) in [26, 2, 2].into_iter().enumerate() {
        sleep(Duration::from_secs(pause)).await;
        client.echo(&format!("after {pause} s ({i})")).await;
    }
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get(TIMEOUTS, &[("timeout", "client_first_byte")]),
        Some(0)
    );
    assert_eq!(metrics.get(TIMEOUTS, &[("timeout", "idle")]), Some(0));
}

/// An idle timeout, when set, counts from the last byte either way: a connection busier than
/// the timeout is never cut, a silent one is closed once the timeout passes.
#[tokio::test]
async fn the_idle_timeout_cuts_only_silence() {
    let a = TestBackend::start("a").await;
    let idle = Duration::from_millis(800);
    let lb = Binary::start(&["--backend", &a.addr_string(), "--idle-timeout", "800ms"]);
    let mut client = Client::open(lb.proxy).await.expect("relayed");
    // Three times the timeout, a byte every 300 ms.
    let mut last = Instant::now();
    for i in 0..8 {
        sleep(Duration::from_millis(300)).await;
        // Before the bytes: chat-lb sees the last of them (the echo) after this instant.
        last = Instant::now();
        client.echo(&format!("busy {i}")).await;
    }
    assert!(closed_by_peer(&mut client.stream).await, "never cut");
    let after = last.elapsed();
    // chat-lb keeps the time of the last byte in whole milliseconds.
    assert!(
        after >= idle - Duration::from_millis(1),
        "cut {after:?} after the last byte"
    );
    let metrics = lb.metrics().await;
    assert_eq!(metrics.get(TIMEOUTS, &[("timeout", "idle")]), Some(1));
}

/// A flood of silent clients that uses up chat-lb's file descriptors makes its health
/// checks fail to open a socket. That says nothing about the backend: it stays up, and once
/// the silent clients have met their deadline a visitor is relayed.
#[tokio::test]
async fn running_out_of_descriptors_is_not_held_against_the_backend() {
    let a = TestBackend::start("a").await;
    // About 17 descriptors are in use once started with one relay thread: 48 leave room for
    // a slower start elsewhere, and 60 silent clients still use up the rest.
    let lb = Binary::start_with(
        "127.0.0.1:0",
        Some(48),
        &[
            "--backend",
            &a.addr_string(),
            "--threads",
            "1",
            "--health-interval",
            "100ms",
            "--client-first-byte-timeout",
            "2s",
        ],
    );
    eventually("a first health check", || async { a.health_checks() > 0 }).await;

    let mut quiet = silent(&lb, ATTACKER, 60).await;
    for (stream, _) in &mut quiet {
        assert!(closed_by_peer(stream).await, "a silent client left open");
    }
    let metrics = lb.metrics().await;
    assert!(
        metrics.get("chat_lb_accept_errors_total", &[]) > Some(0),
        "the flood did not use up the descriptors"
    );
    assert_eq!(health(&lb, &a).await.1, 0, "held against the backend");
    assert_eq!(metrics.backend(UP, &a), Some(1));
    assert!(
        metrics.get("chat_lb_local_connect_errors_total", &[]) > Some(0),
        "no health check ran out of descriptors"
    );
    let mut visitor = Client::open_from(loopback(VISITOR), lb.proxy)
        .await
        .expect("relayed after the flood");
    visitor.echo("back to normal").await;
}
