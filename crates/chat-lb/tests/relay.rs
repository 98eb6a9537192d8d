//! The data path: half-close, PROXY v2 header, connection limit, idle timeout, drain deadline.

mod support;

use std::time::Duration;

use support::{
    closed_by_peer, eventually, read_line, Client, Lb, TestBackend, PATIENCE, PROXY_V2_SIGNATURE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn half_close_is_passed_on_and_the_reply_still_arrives() {
    let a = TestBackend::start("a").await;
    let lb = Lb::start(support::config(&[&a])).await;

    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    // The backend writes "bye" only after it has seen our FIN, so this arrives only if the
    // balancer passed the FIN on and kept the backend-to-client direction open.
    let mut reply = String::new();
    timeout(PATIENCE, client.read_to_string(&mut reply))
        .await
        .expect("no reply after half-close")
        .unwrap();
    assert_eq!(reply, "a\nhellobye\n");

    let label = a.addr_string();
    eventually("bytes counted once the connection ended", || async {
        let metrics = lb.metrics().await;
        let bytes = |direction| {
            metrics.get(
                "chat_lb_backend_bytes_total",
                &[("backend", &label), ("direction", direction)],
            )
        };
        bytes("to_backend") == Some(5) && bytes("to_client") == Some(reply.len() as u64)
    })
    .await;
    lb.stop().await;
}

#[tokio::test]
async fn proxy_v2_header_is_sent_byte_for_byte() {
    let a = TestBackend::start("a").await;
    let mut config = support::config(&[&a]);
    config.send_proxy_v2 = true;
    let lb = Lb::start(config).await;

    let client = Client::open(lb.addr).await.expect("relayed");
    let (src, dst) = (client.stream.local_addr().unwrap(), lb.addr);

    let mut expected = PROXY_V2_SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    expected.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    expected.extend_from_slice(&src.port().to_be_bytes());
    expected.extend_from_slice(&dst.port().to_be_bytes());
    let relayed: Vec<_> = a
        .proxy_headers()
        .into_iter()
        .filter(|h| h[12] == 0x21)
        .collect();
    assert_eq!(relayed, [expected]);

    // Health checks carry the LOCAL command, so a PROXY-only backend accepts them too.
    eventually("a health check", || async { a.health_checks() > 0 }).await;
    let local: Vec<u8> = [&PROXY_V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat();
    let checks: Vec<_> = a
        .proxy_headers()
        .into_iter()
        .filter(|h| h[12] != 0x21)
        .collect();
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|h| *h == local), "{checks:?}");
    drop(client);
    lb.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let a = TestBackend::start("a").await;
    let mut config = support::config(&[&a]);
    config.max_connections = 2;
    let lb = Lb::start(config).await;

    let first = Client::open(lb.addr).await.expect("first relayed");
    let mut second = Client::open(lb.addr).await.expect("second relayed");
    let mut third = TcpStream::connect(lb.addr).await.unwrap();
    assert!(
        closed_by_peer(&mut third).await,
        "third connection left open"
    );
    assert_eq!(a.data_connections(), 2);

    let metrics = lb.metrics().await;
    let rejected = &[("reason", "max_connections")];
    assert_eq!(
        metrics.get("chat_lb_connections_rejected_total", rejected),
        Some(1)
    );
    assert_eq!(
        metrics.get("chat_lb_connections_accepted_total", &[]),
        Some(3)
    );
    assert_eq!(metrics.get("chat_lb_active_connections", &[]), Some(2));

    // A freed slot is usable again; the survivors are untouched.
    drop(first);
    eventually("slot released", || async {
        lb.metrics().await.get("chat_lb_active_connections", &[]) == Some(1)
    })
    .await;
    let mut fourth = Client::open(lb.addr).await.expect("fourth relayed");
    second.echo("still here").await;
    fourth.echo("me too").await;
    drop((second, fourth));
    lb.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_when_an_idle_timeout_is_set() {
    let a = TestBackend::start("a").await;
    let mut config = support::config(&[&a]);
    config.idle_timeout = Some(Duration::from_millis(300));
    let lb = Lb::start(config).await;

    let mut client = Client::open(lb.addr).await.expect("relayed");
    let started = tokio::time::Instant::now();
    assert!(closed_by_peer(&mut client.stream).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    lb.stop().await;
}

#[tokio::test]
async fn shutdown_refuses_new_clients_and_closes_the_rest_at_the_drain_deadline() {
    let a = TestBackend::start("a").await;
    let mut config = support::config(&[&a]);
    config.drain_timeout = Duration::from_secs(2);
    let lb = Lb::start(config).await;
    let mut client = Client::open(lb.addr).await.expect("relayed");

    lb.begin_shutdown();
    eventually("listener closed", || async {
        TcpStream::connect(lb.addr).await.is_err()
    })
    .await;
    let (status, _) = support::http_get(lb.admin, "/healthz").await;
    assert_eq!(status, 503, "admin /healthz should report draining");
    client.echo("during drain").await;

    assert!(
        closed_by_peer(&mut client.stream).await,
        "not closed at the drain deadline"
    );
    lb.finished().await;
    assert_eq!(read_line(&mut client.stream).await, None);
}
