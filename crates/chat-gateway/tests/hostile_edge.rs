//! The gateway's edge against hostile clients (issue 14), through the real
//! binary: idle and half-sent sockets, connection bursts, forged PROXY
//! headers, /metrics from outside, security headers, the web root, and
//! /api/rooms as a cached, capped, rate-limited snapshot. "Another address"
//! is another loopback address (127.0.0.0/8 is all local on Linux).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_test_support::{eventually, http_get, metric_value, BackendKind, Gateway};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

/// Bound on anything that should happen promptly.
const WAIT: Duration = Duration::from_secs(10);

const CSP: &str = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn lo(b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, b, c, d))
}

async fn gateway(args: &[&str]) -> Gateway {
    let backend = BackendKind::Memory.setup().await.unwrap();
    backend.gateway(BIN, args).await.unwrap()
}

/// A TCP connection to `addr` from the local address `from`.
async fn connect_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `bytes`, reads until the gateway closes; `None` if it closed
/// without answering.
async fn exchange(mut stream: TcpStream, bytes: &[u8]) -> Option<Answer> {
    let _ = stream.write_all(bytes).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the gateway neither answered nor closed");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn get_request(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `method path` from `from`, after `prefix` (a PROXY header, or nothing).
async fn request(
    addr: SocketAddr,
    from: IpAddr,
    prefix: &[u8],
    method: &str,
    path: &str,
) -> Option<Answer> {
    let mut bytes = prefix.to_vec();
    bytes.extend(get_request(method, path));
    exchange(connect_from(addr, from).await, &bytes).await
}

async fn get(addr: SocketAddr, from: IpAddr, path: &str) -> Option<Answer> {
    request(addr, from, &[], "GET", path).await
}

/// A PROXY v2 header saying the connection is from `client`.
fn proxy_header(client: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match client {
        SocketAddr::V4(v4) => {
            h.extend([0x21, 0x11, 0, 12]);
            h.extend(v4.ip().octets());
            h.extend([127, 0, 0, 1]);
        }
        SocketAddr::V6(v6) => {
            h.extend([0x21, 0x21, 0, 36]);
            h.extend(v6.ip().octets());
            h.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        }
    }
    h.extend(client.port().to_be_bytes());
    h.extend(8080u16.to_be_bytes());
    h
}

/// The header chat-lb sends on its own connections.
const PROXY_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// One series of the gateway's metrics, read from 127.0.0.1 (through a
/// LOCAL PROXY header when the gateway expects one).
async fn metric(gw: &Gateway, proxied: bool, series: &str) -> f64 {
    let prefix = if proxied { PROXY_LOCAL } else { &[] };
    let answer = request(gw.addr(), lo(0, 0, 1), prefix, "GET", "/metrics")
        .await
        .expect("metrics answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    metric_value(&answer.body, series).unwrap_or_else(|| panic!("no {series}"))
}

/// Waits until the gateway closes `stream` (EOF or reset); returns when.
async fn closed_at(mut stream: TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn idle_and_half_sent_sockets_past_max_connections_lock_nobody_out() {
    // 16 WebSockets + 256: the accept permits. One address may hold 24
    // sockets, and they get 3 s to send a request head.
    let gw = gateway(&[
        "--max-connections",
        "16",
        "--max-sockets-per-ip",
        "24",
        "--header-read-timeout-ms",
        "3000",
    ])
    .await;
    let attacker = lo(0, 0, 2);
    let mut sockets = JoinSet::new();
    for i in 0..16 + 256 {
        let mut stream = connect_from(gw.addr(), attacker).await;
        let half_sent = i % 2 == 1;
        if half_sent {
            // Half a request head, never finished.
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\nX-Slow: ")
                .await;
        }
        let opened = Instant::now();
        sockets.spawn(async move { (half_sent, opened, closed_at(stream).await) });
    }
    // Meanwhile, /healthz answers and a normal client gets in ...
    let (status, _) = http_get(gw.addr(), "/healthz").await.unwrap();
    assert_eq!(status, 200);
    let mut alice = gw.client("alice").await.unwrap();
    alice.join("lobby").await.unwrap();
    // ... while the attacker's admitted sockets are still open.
    let open = metric(&gw, false, "chat_tcp_connections_open").await;
    assert!(open >= 24.0 + 1.0, "{open} sockets open");

    // Everything past the attacker's cap was closed at accept, the rest at
    // their deadline, idle and half-sent alike.
    let mut held = (0, 0);
    while let Some(joined) = tokio::time::timeout(WAIT, sockets.join_next())
        .await
        .expect("every socket is closed")
    {
        let (half_sent, opened, closed) = joined.unwrap();
        let lived = closed - opened;
        if lived >= Duration::from_millis(2500) {
            assert!(lived < Duration::from_secs(8), "closed after {lived:?}");
            if half_sent {
                held.1 += 1;
            } else {
                held.0 += 1;
            }
        }
    }
    assert!(held.0 + held.1 <= 24, "{held:?}");
    assert!(held.0 >= 1 && held.1 >= 1, "{held:?}");
    let refused = metric(&gw, false, "chat_tcp_refused_total{reason=\"address_cap\"}").await
        + metric(
            &gw,
            false,
            "chat_tcp_refused_total{reason=\"address_rate\"}",
        )
        .await;
    assert!(refused >= f64::from(16 + 256 - 24), "{refused}");
    let timeouts = metric(&gw, false, "chat_http_header_timeouts_total").await;
    assert!(timeouts >= f64::from(held.0 + held.1), "{timeouts}");
    // The client that got in is still fine.
    alice.send("lobby", "still here").await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_its_timeout() {
    let gw = gateway(&[
        "--header-read-timeout-ms",
        "8000",
        "--keep-alive-timeout-ms",
        "300",
    ])
    .await;
    let mut stream = connect_from(gw.addr(), lo(0, 0, 1)).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"ok\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let answered = Instant::now();
    let closed = tokio::time::timeout(WAIT, closed_at(stream)).await.unwrap();
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(4),
        "closed after {idle:?} of keep-alive"
    );
    assert!(metric(&gw, false, "chat_http_keepalive_closed_total").await >= 1.0);
}

#[tokio::test]
async fn one_address_opening_connections_too_fast_is_cut_at_its_rate() {
    let gw = gateway(&[
        "--connection-rate-per-ip",
        "1",
        "--connection-burst-per-ip",
        "5",
    ])
    .await;
    let burst = lo(0, 0, 2);
    let mut answered = 0;
    for _ in 0..12 {
        if get(gw.addr(), burst, "/healthz").await.is_some() {
            answered += 1;
        }
    }
    // The burst, plus what one token a second refilled meanwhile.
    assert!((5..=7).contains(&answered), "{answered} of 12 answered");
    // Another address is not affected, and the first gets tokens back.
    assert_eq!(
        get(gw.addr(), lo(0, 0, 3), "/healthz")
            .await
            .unwrap()
            .status,
        200
    );
    eventually(WAIT, || async {
        get(gw.addr(), burst, "/healthz").await.is_some()
    })
    .await;
    let refused = metric(
        &gw,
        false,
        "chat_tcp_refused_total{reason=\"address_rate\"}",
    )
    .await;
    assert!(refused >= 5.0, "{refused}");
}

#[tokio::test]
async fn ipv6_clients_share_the_limits_of_their_64() {
    // Behind a trusted proxy (loopback), the socket cap applies to the
    // address its header names, after the header.
    let gw = gateway(&["--proxy-protocol", "--max-sockets-per-ip", "2"]).await;
    let client = |addr: &str| SocketAddr::new(addr.parse().unwrap(), 40000);
    let mut held = Vec::new();
    for addr in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        let mut stream = connect_from(gw.addr(), lo(0, 0, 1)).await;
        stream.write_all(&proxy_header(client(addr))).await.unwrap();
        held.push(stream);
    }
    eventually(WAIT, || async {
        // The two held and the metrics request itself.
        metric(&gw, true, "chat_tcp_connections_open").await >= 3.0
    })
    .await;
    let same_64 = proxy_header(client("2001:db8:1:2:ffff::3"));
    let answer = request(gw.addr(), lo(0, 0, 1), &same_64, "GET", "/healthz").await;
    assert!(answer.is_none(), "a third socket of one /64: {answer:?}");
    let next_64 = proxy_header(client("2001:db8:1:3::1"));
    let answer = request(gw.addr(), lo(0, 0, 1), &next_64, "GET", "/healthz").await;
    assert_eq!(answer.unwrap().status, 200);
    drop(held);
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_peer_closes_the_connection() {
    let gw = gateway(&["--proxy-protocol", "--proxy-protocol-from", "127.0.0.1/32"]).await;
    let forged = proxy_header("127.0.0.1:5555".parse().unwrap());
    // 127.0.0.2 is not trusted: claiming to be 127.0.0.1 gets nothing.
    let answer = request(gw.addr(), lo(0, 0, 2), &forged, "GET", "/healthz").await;
    assert!(answer.is_none(), "{answer:?}");
    // Without a header it is served as itself.
    let answer = get(gw.addr(), lo(0, 0, 2), "/healthz").await.unwrap();
    assert_eq!(answer.status, 200);
    // The trusted peer's header is believed ...
    let answer = request(gw.addr(), lo(0, 0, 1), &forged, "GET", "/healthz").await;
    assert_eq!(answer.unwrap().status, 200);
    // ... and the trusted peer must send one.
    assert!(get(gw.addr(), lo(0, 0, 1), "/healthz").await.is_none());
    let untrusted = metric(
        &gw,
        true,
        "chat_tcp_refused_total{reason=\"proxy_untrusted\"}",
    )
    .await;
    assert_eq!(untrusted, 1.0);
    let invalid = metric(
        &gw,
        true,
        "chat_tcp_refused_total{reason=\"proxy_invalid\"}",
    )
    .await;
    assert_eq!(invalid, 1.0);
}

#[tokio::test]
async fn metrics_answer_only_allowed_addresses_and_behind_a_proxy_the_real_one() {
    let gw = gateway(&["--metrics-allow", "127.0.0.1"]).await;
    assert_eq!(
        get(gw.addr(), lo(0, 0, 1), "/metrics")
            .await
            .unwrap()
            .status,
        200
    );
    let denied = get(gw.addr(), lo(0, 0, 2), "/metrics").await.unwrap();
    let missing = get(gw.addr(), lo(0, 0, 2), "/no-such-page").await.unwrap();
    assert_eq!(denied.status, 404);
    assert_eq!(
        denied.body, missing.body,
        "a refusal looks like a missing page"
    );
    assert!(!denied.body.contains("chat_"), "{}", denied.body);
    assert!(metric(&gw, false, "chat_metrics_refused_total").await >= 1.0);

    // Behind chat-lb (a trusted peer with PROXY v2) the client's address
    // counts, not the balancer's (default allow list: loopback).
    let gw = gateway(&["--proxy-protocol"]).await;
    let outside = proxy_header("203.0.113.9:4000".parse().unwrap());
    let answer = request(gw.addr(), lo(0, 0, 1), &outside, "GET", "/metrics").await;
    assert_eq!(answer.unwrap().status, 404);
    let inside = proxy_header("127.0.0.1:4000".parse().unwrap());
    let answer = request(gw.addr(), lo(0, 0, 1), &inside, "GET", "/metrics").await;
    assert_eq!(answer.unwrap().status, 200);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "chat-hostile-edge-{}-{name}-{}",
            std::process::id(),
            chat_client::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_web_root_serves_no_dotfiles_and_nothing_outside_it() {
    let outside = TempDir::new("outside");
    outside.write("secret.txt", "OUTSIDE-SECRET");
    let root = TempDir::new("root");
    root.write("index.html", "<!doctype html><title>chat</title>");
    root.write("sub/page.txt", "plain page");
    root.write(".env", "DOT-SECRET");
    root.write(".git/config", "DOT-SECRET");
    root.write("sub/.hidden", "DOT-SECRET");
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, root.path().join(name)).unwrap();
    };
    link(&outside.path().join("secret.txt"), "leak.txt");
    link(outside.path(), "leakdir");
    link(&root.path().join(".env"), "env.txt");
    link(&root.path().join("sub/page.txt"), "alias.txt");
    let web_root = root.path().to_str().unwrap();
    let gw = gateway(&["--web-root", web_root]).await;
    let from = lo(0, 0, 1);

    for (path, want) in [
        ("/", Some("<!doctype html>")),
        ("/sub/page.txt", Some("plain page")),
        ("/alias.txt", Some("plain page")), // a symlink inside the root
        ("/.env", None),
        ("/.git/config", None),
        ("/sub/.hidden", None),
        ("/leak.txt", None),
        ("/leakdir/secret.txt", None),
        ("/env.txt", None), // a symlink to a dotfile
        ("/sub", None),     // a directory
        ("/sub/../.env", None),
        ("/%2e%2e/secret.txt", None),
    ] {
        let answer = get(gw.addr(), from, path).await.unwrap();
        match want {
            Some(body) => {
                assert_eq!(answer.status, 200, "{path}: {answer:?}");
                assert!(answer.body.starts_with(body), "{path}: {answer:?}");
            }
            None => {
                assert_eq!(answer.status, 404, "{path}: {answer:?}");
                assert_eq!(answer.body, "not found\n", "{path}");
            }
        }
    }

    // Without a built client, the page says so without showing where it looked.
    let empty = TempDir::new("empty");
    let gw = gateway(&["--web-root", empty.path().to_str().unwrap()]).await;
    let answer = get(gw.addr(), from, "/").await.unwrap();
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains("not built"), "{answer:?}");
    assert!(
        !answer.body.contains(empty.path().to_str().unwrap()),
        "{answer:?}"
    );
    assert!(!answer.body.contains("/tmp"), "{answer:?}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let root = TempDir::new("headers");
    root.write("index.html", "<!doctype html>");
    root.write("app.js", "console.log(1)");
    let gw = gateway(&[
        "--web-root",
        root.path().to_str().unwrap(),
        "--metrics-allow",
        "127.0.0.1",
        "--api-rooms-per-second",
        "1",
    ])
    .await;
    let from = lo(0, 0, 1);
    let mut answers = Vec::new();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/app.js"),
        ("HEAD", "/"),
        ("GET", "/missing"),
        ("GET", "/.env"),
        ("GET", "/favicon.ico"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/ws"), // not an upgrade: 400
        ("POST", "/api/rooms"),
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms"), // 429 by now (burst 2)
    ] {
        let answer = request(gw.addr(), from, &[], method, path).await.unwrap();
        answers.push((format!("{method} {path}"), answer));
    }
    let denied = get(gw.addr(), lo(0, 0, 2), "/metrics").await.unwrap();
    answers.push(("GET /metrics from elsewhere".into(), denied));
    // The WebSocket handshake's 101 too.
    let mut ws = connect_from(gw.addr(), from).await;
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(ws.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    answers.push(("upgrade".into(), parse(&head).unwrap()));

    let statuses: Vec<u16> = answers.iter().map(|(_, a)| a.status).collect();
    for want in [101, 200, 204, 400, 404, 405, 429] {
        assert!(statuses.contains(&want), "no {want} among {statuses:?}");
    }
    for (what, answer) in &answers {
        assert_eq!(
            answer.header("content-security-policy"),
            Some(CSP),
            "{what}"
        );
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            answer.header("referrer-policy"),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{what}");
    }
}

#[tokio::test]
async fn api_rooms_is_a_snapshot_of_the_50_busiest_rooms_rebuilt_at_most_once_a_second() {
    let gw = gateway(&[
        "--max-rooms",
        "64",
        "--room-ops-per-second",
        "1000",
        "--api-rooms-per-second",
        "1000",
    ])
    .await;
    let mut quiet = gw.client("quiet").await.unwrap();
    for i in 0..60 {
        quiet.join(&format!("r{i:02}")).await.unwrap();
    }
    let mut busy = gw.client("busy").await.unwrap();
    for i in 55..60 {
        busy.join(&format!("r{i:02}")).await.unwrap();
    }
    let from = lo(0, 0, 1);
    let listed = eventually(WAIT, || async {
        let answer = get(gw.addr(), from, "/api/rooms").await?;
        let json: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        let rooms: Vec<(String, u64)> = json["rooms"]
            .as_array()?
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["members"].as_u64().unwrap(),
                )
            })
            .collect();
        (rooms.len() == 50 && rooms[0].1 == 2).then_some(rooms)
    })
    .await;
    let expected: Vec<(String, u64)> = (55..60)
        .map(|i| (format!("r{i:02}"), 2))
        .chain((0..45).map(|i| (format!("r{i:02}"), 1)))
        .collect();
    assert_eq!(listed, expected, "the busiest first, then by name");

    // However many ask at once, the bridge is asked about once a second.
    let before = metric(&gw, false, "chat_api_rooms_refreshes_total").await;
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..60u8 {
        let addr = gw.addr();
        requests.spawn(async move { get(addr, lo(0, 1, i + 1), "/api/rooms").await });
    }
    while let Some(answer) = requests.join_next().await {
        assert_eq!(answer.unwrap().unwrap().status, 200);
    }
    let elapsed = started.elapsed();
    let refreshes = metric(&gw, false, "chat_api_rooms_refreshes_total").await - before;
    assert!(
        refreshes <= elapsed.as_secs_f64().ceil() + 1.0,
        "{refreshes} rebuilds for 60 requests in {elapsed:?}"
    );
}

#[tokio::test]
async fn api_rooms_is_rate_limited_per_address() {
    let gw = gateway(&["--api-rooms-per-second", "1"]).await;
    let eager = lo(0, 0, 2);
    let mut limited = None;
    for _ in 0..6 {
        let answer = get(gw.addr(), eager, "/api/rooms").await.unwrap();
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let limited = limited.expect("a burst of 2 at 1 a second runs out");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.body, r#"{"error":"rate limited"}"#);
    assert_eq!(
        get(gw.addr(), lo(0, 0, 3), "/api/rooms")
            .await
            .unwrap()
            .status,
        200
    );
    assert!(metric(&gw, false, "chat_api_rooms_limited_total").await >= 1.0);
}
