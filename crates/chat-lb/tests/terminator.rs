//! A TLS terminator in front of chat-lb (`--accept-proxy-from`): its PROXY v2 header names the
//! client that backends are told about and that per-source limits count; nobody else may send
//! one. Real sockets: the "terminator" and the clients are loopback addresses of their own.

mod support;

use std::net::SocketAddr;

use support::{
    closed_by_peer, connect_from, eventually, loopback, read_line, Binary, Lb, TestBackend,
    PROXY_V2_SIGNATURE,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const REJECTED: &str = "chat_lb_connections_rejected_total";
/// The terminator's address, and an address that is not trusted.
const TERMINATOR: u8 = 7;
const STRANGER: u8 = 8;

/// A PROXY v2 header for a TCP/IPv4 `client` arriving at `dst`, written out independently of
/// chat-net.
fn header(client: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (client, dst) else {
        panic!("IPv4 only")
    };
    let mut h = PROXY_V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

fn local_header() -> Vec<u8> {
    [&PROXY_V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat()
}

/// Connects from the terminator's address, writes `first` (a header, usually) and a line, and
/// returns the stream once the backend has answered with its name and the echoed line.
async fn through_terminator(lb: SocketAddr, first: &[u8]) -> Option<TcpStream> {
    let mut stream = connect_from(loopback(TERMINATOR), lb).await.ok()?;
    stream.write_all(first).await.ok()?;
    stream.write_all(b"hi\n").await.ok()?;
    read_line(&mut stream).await?;
    assert_eq!(read_line(&mut stream).await.as_deref(), Some("hi"));
    Some(stream)
}

/// The client addresses backend `a` was told about in PROXY headers (LOCAL ones left out).
fn announced(a: &TestBackend) -> Vec<SocketAddr> {
    a.proxy_headers()
        .into_iter()
        .filter(|h| h[12] == 0x21)
        .map(|h| {
            let ip = std::net::Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            SocketAddr::from((ip, u16::from_be_bytes([h[24], h[25]])))
        })
        .collect()
}

async fn rejected(lb: &Lb, reason: &str) -> u64 {
    lb.metrics()
        .await
        .get(REJECTED, &[("reason", reason)])
        .unwrap()
}

fn config(a: &TestBackend) -> chat_lb::Config {
    let mut config = support::config(&[a]);
    config.send_proxy_v2 = true;
    config.accept_proxy_from = vec!["127.0.0.7".parse().unwrap()];
    config
}

#[tokio::test]
async fn the_client_a_trusted_terminator_names_is_the_one_announced_to_backends() {
    let a = TestBackend::start("a").await;
    let lb = Lb::start(config(&a)).await;
    let client: SocketAddr = "203.0.113.9:4444".parse().unwrap();

    let stream = through_terminator(lb.addr, &header(client, lb.addr))
        .await
        .expect("relayed");
    assert_eq!(
        announced(&a),
        [client],
        "the terminator's client, not the terminator"
    );
    drop(stream);

    // A LOCAL header (the terminator's own check) is relayed as the terminator itself.
    let stream = through_terminator(lb.addr, &local_header())
        .await
        .expect("relayed");
    let terminator = stream.local_addr().unwrap();
    assert_eq!(announced(&a).last(), Some(&terminator));
    lb.stop().await;
}

#[tokio::test]
async fn a_trusted_peer_without_a_valid_header_is_closed_and_counted() {
    let a = TestBackend::start("a").await;
    let lb = Lb::start(config(&a)).await;
    for garbage in [
        &b"hi\n"[..],
        &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x13, 0, 0, 0,
        ],
    ] {
        let mut stream = connect_from(loopback(TERMINATOR), lb.addr).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        assert!(closed_by_peer(&mut stream).await, "{garbage:?}");
    }
    eventually("both counted", || async {
        rejected(&lb, "proxy_invalid").await == 2
    })
    .await;
    assert_eq!(a.data_connections(), 0, "nothing reached the backend");
    lb.stop().await;
}

#[tokio::test]
async fn a_proxy_header_from_anyone_else_is_refused_even_in_pieces() {
    let a = TestBackend::start("a").await;
    let lb = Lb::start(config(&a)).await;
    let spoofed = header("198.51.100.1:1".parse().unwrap(), lb.addr);

    // Whole, and split after its first bytes (as if to slip past a check of the first read).
    let mut whole = connect_from(loopback(STRANGER), lb.addr).await.unwrap();
    whole.write_all(&spoofed).await.unwrap();
    assert!(closed_by_peer(&mut whole).await);
    let awaiting = || async { lb.metrics().await.get("chat_lb_awaiting_first_byte", &[]) };
    let mut split = connect_from(loopback(STRANGER), lb.addr).await.unwrap();
    eventually("accepted", || async { awaiting().await == Some(1) }).await;
    split.write_all(&spoofed[..2]).await.unwrap();
    eventually("the first piece arrived", || async {
        awaiting().await == Some(0)
    })
    .await;
    split.write_all(&spoofed[2..]).await.unwrap();
    assert!(closed_by_peer(&mut split).await);
    eventually("both counted", || async {
        rejected(&lb, "proxy_untrusted").await == 2
    })
    .await;
    assert!(
        announced(&a).iter().all(|c| c.port() != 1),
        "no spoofed client announced"
    );

    // Bytes that only start like the signature are relayed unchanged.
    let mut lookalike = connect_from(loopback(STRANGER), lb.addr).await.unwrap();
    lookalike.write_all(b"\r\n\r\nhi\n").await.unwrap();
    assert_eq!(read_line(&mut lookalike).await.as_deref(), Some("a"));
    assert_eq!(read_line(&mut lookalike).await.as_deref(), Some("\r"));
    assert_eq!(read_line(&mut lookalike).await.as_deref(), Some("\r"));
    assert_eq!(read_line(&mut lookalike).await.as_deref(), Some("hi"));
    let stranger = lookalike.local_addr().unwrap();
    assert_eq!(
        announced(&a).last(),
        Some(&stranger),
        "a stranger is announced as itself"
    );
    lb.stop().await;
}

#[tokio::test]
async fn per_source_limits_count_the_real_client_not_the_terminator() {
    let a = TestBackend::start("a").await;
    let mut config = config(&a);
    config.per_source.max_connections = 1;
    let lb = Lb::start(config).await;
    let alice: SocketAddr = "203.0.113.1:1000".parse().unwrap();
    let bob: SocketAddr = "203.0.113.2:1000".parse().unwrap();

    // One each for alice and bob through the one terminator address...
    let _alice = through_terminator(lb.addr, &header(alice, lb.addr))
        .await
        .expect("alice relayed");
    let _bob = through_terminator(lb.addr, &header(bob, lb.addr))
        .await
        .expect("bob relayed");
    // ... but not a second for alice.
    let mut again = connect_from(loopback(TERMINATOR), lb.addr).await.unwrap();
    again.write_all(&header(alice, lb.addr)).await.unwrap();
    again.write_all(b"hi\n").await.unwrap();
    assert!(closed_by_peer(&mut again).await);
    eventually("counted", || async {
        rejected(&lb, "max_conns_per_source").await == 1
    })
    .await;
    assert_eq!(announced(&a), [alice, bob]);
    lb.stop().await;
}

#[tokio::test]
async fn the_binary_takes_the_flag_and_refuses_a_bad_block() {
    let a = TestBackend::start("a").await;
    let backend = a.addr_string();
    let lb = Binary::start(&[
        "--backend",
        &backend,
        "--send-proxy-v2",
        "--accept-proxy-from",
        "127.0.0.7,10.0.0.0/8",
    ]);
    let client: SocketAddr = "192.0.2.33:5555".parse().unwrap();
    let stream = through_terminator(lb.proxy, &header(client, lb.proxy))
        .await
        .expect("relayed");
    assert_eq!(announced(&a), [client]);
    drop(stream);

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-lb"))
        .args(["--backend", &backend, "--accept-proxy-from", "10.0.0.0/99"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("accept-proxy-from"), "{stderr}");
}
