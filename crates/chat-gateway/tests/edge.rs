//! The gateway's edge: the PROXY protocol behind chat-lb and per-address
//! connection limits that use the real client address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chat_client::{Client, ClientError};
use chat_test_support::{eventually, BackendKind, Balancer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

fn ip(last: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

async fn upgrade_status(url: &str, from: Option<IpAddr>) -> Result<Client, u16> {
    match Client::connect_with(url, from).await {
        Ok(client) => Ok(client),
        Err(ClientError::Rejected { status }) => Err(status),
        Err(e) => panic!("unexpected connect error: {e}"),
    }
}

/// Sends raw bytes, returns whatever the gateway answered before closing.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

const PROXY_V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

#[tokio::test]
async fn per_address_limit_counts_the_real_client_behind_chat_lb() {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend
        .gateway(BIN, &["--proxy-protocol", "--max-connections-per-ip", "2"])
        .await
        .unwrap();
    let lb = Balancer::start(BIN, &[gateway.addr()], &["--send-proxy-v2"])
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        chat_test_support::http_get(lb.addr(), "/healthz")
            .await
            .map(|(s, _)| s == 200)
            .unwrap_or(false)
    })
    .await;

    // Two from 127.0.0.5 are fine, the third is refused with 429 ...
    let _a = upgrade_status(&lb.ws_url(), ip(5)).await.expect("first");
    let _b = upgrade_status(&lb.ws_url(), ip(5)).await.expect("second");
    assert_eq!(upgrade_status(&lb.ws_url(), ip(5)).await.err(), Some(429));
    // ... while another address behind the same balancer still gets in:
    // the gateway sees the client, not chat-lb's own address.
    let mut c = upgrade_status(&lb.ws_url(), ip(6))
        .await
        .expect("other address");
    c.hello("carol").await.unwrap();

    // A closed connection frees its slot.
    drop(_a);
    eventually(Duration::from_secs(5), || async {
        upgrade_status(&lb.ws_url(), ip(5)).await.is_ok()
    })
    .await;
    // (With --proxy-protocol the gateway answers only what comes through chat-lb.)
    let (_, metrics) = chat_test_support::http_get(lb.addr(), "/metrics")
        .await
        .unwrap();
    let refused = chat_test_support::metric_value(&metrics, "chat_connections_refused_total");
    assert!(refused >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn proxy_headers_are_garbage_unless_enabled() {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let plain = backend.gateway(BIN, &[]).await.unwrap();
    let mut request = PROXY_V2_LOCAL.to_vec();
    request.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(plain.addr(), &request).await;
    assert!(
        !answer.contains(" 200 "),
        "a PROXY header was accepted without --proxy-protocol: {answer:?}"
    );

    let proxied = backend.gateway(BIN, &["--proxy-protocol"]).await.unwrap();
    let answer = raw_exchange(proxied.addr(), &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // And with the flag, a connection without the header is refused.
    let answer = raw_exchange(
        proxied.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!answer.contains(" 200 "), "{answer:?}");
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend
        .gateway(BIN, &["--log-format", "json"])
        .await
        .unwrap();
    let mut client = gateway.client("logger").await.unwrap();
    client.join("logs").await.unwrap();
    let lines = eventually(Duration::from_secs(10), || async {
        let log = gateway.log_contents();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter(|line| !line.starts_with("[stdout]"))
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect();
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "serving")
            .then_some(lines)
    })
    .await;
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
}
