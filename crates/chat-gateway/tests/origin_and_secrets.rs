//! Through the real gateway binary: the `Origin` check of WebSocket upgrades
//! (own host by default, `--allowed-origin`, `--require-origin`, behind
//! chat-lb), and secrets read from files (`--admin-token-file`, chat-admin's
//! `--token-file`) that never show on a command line or in an error.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use chat_test_support::{
    admin_addr, eventually, run_chat_admin, run_to_exit, BackendKind, Balancer, Gateway,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
const WAIT: Duration = Duration::from_secs(10);

/// The status of a WebSocket upgrade sent to `addr` with these `Host` and
/// `Origin` headers (a header is left out when `None`), as a browser sends it.
async fn upgrade(addr: SocketAddr, host: Option<&str>, origin: Option<&str>) -> u16 {
    let mut request = String::from("GET /ws HTTP/1.1\r\n");
    if let Some(host) = host {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str(
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        head.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("upgrade answered")
}

async fn rejected(gateway: &Gateway) -> f64 {
    gateway
        .metric("chat_origin_rejected_total")
        .await
        .unwrap()
        .expect("chat_origin_rejected_total is exported")
}

#[tokio::test]
async fn a_foreign_origin_is_refused_with_403_and_counted_and_the_own_host_is_allowed() {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend.gateway(BIN, &[]).await.unwrap();
    let addr = gateway.addr();
    let host = addr.to_string();
    assert_eq!(rejected(&gateway).await, 0.0);

    let evil = upgrade(addr, Some(&host), Some("https://evil.example")).await;
    assert_eq!(evil, 403);
    // Same host name, another port or scheme-port: another origin.
    let other_port = format!("http://127.0.0.1:{}", addr.port().wrapping_add(1));
    assert_eq!(upgrade(addr, Some(&host), Some(&other_port)).await, 403);
    assert_eq!(upgrade(addr, Some(&host), Some("null")).await, 403);
    assert_eq!(rejected(&gateway).await, 3.0);

    // The page the gateway serves itself: its origin is the Host it was asked by.
    let own = format!("http://{host}");
    assert_eq!(upgrade(addr, Some(&host), Some(&own)).await, 101);
    // A native client sends no Origin.
    assert_eq!(upgrade(addr, Some(&host), None).await, 101);
    let mut alice = gateway.client("alice").await.unwrap();
    alice.join("lobby").await.unwrap();
    assert_eq!(rejected(&gateway).await, 3.0);
}

#[tokio::test]
async fn allowed_origins_replace_the_default_and_require_origin_refuses_native_clients() {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend
        .gateway(
            BIN,
            &[
                "--allowed-origin",
                "https://chat.example.com,http://localhost:5173",
                "--allowed-origin",
                "https://other.example",
                "--require-origin",
            ],
        )
        .await
        .unwrap();
    let addr = gateway.addr();
    let host = addr.to_string();
    for allowed in [
        "https://chat.example.com",
        "https://CHAT.example.com:443",
        "http://localhost:5173",
        "https://other.example",
    ] {
        assert_eq!(
            upgrade(addr, Some(&host), Some(allowed)).await,
            101,
            "{allowed}"
        );
    }
    for refused in [
        format!("http://{host}"),
        "http://chat.example.com".to_owned(),
        "https://evil.example".to_owned(),
    ] {
        assert_eq!(
            upgrade(addr, Some(&host), Some(&refused)).await,
            403,
            "{refused}"
        );
    }
    assert_eq!(upgrade(addr, Some(&host), None).await, 403, "no Origin");
    assert!(
        gateway.connect().await.is_err(),
        "a native client is refused"
    );
    assert!(rejected(&gateway).await >= 4.0);

    // `*` only when given: then anything goes.
    let open = backend
        .gateway(BIN, &["--allowed-origin", "*"])
        .await
        .unwrap();
    let open_host = open.addr().to_string();
    let status = upgrade(open.addr(), Some(&open_host), Some("https://evil.example")).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn behind_chat_lb_the_browser_origin_is_the_balancers_address() {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend.gateway(BIN, &["--proxy-protocol"]).await.unwrap();
    let lb = Balancer::start(BIN, &[gateway.addr()], &["--send-proxy-v2"])
        .await
        .unwrap();
    eventually(WAIT, || async {
        chat_test_support::http_get(lb.addr(), "/healthz")
            .await
            .is_ok_and(|(status, _)| status == 200)
    })
    .await;
    // What a browser on the page http://LB/ sends: Host and Origin both name the balancer.
    let lb_host = lb.addr().to_string();
    let own = format!("http://{lb_host}");
    assert_eq!(upgrade(lb.addr(), Some(&lb_host), Some(&own)).await, 101);
    let evil = upgrade(lb.addr(), Some(&lb_host), Some("http://evil.example")).await;
    assert_eq!(evil, 403);
    // The gateway expects a PROXY header from loopback: its metrics through chat-lb too.
    let (status, metrics) = chat_test_support::http_get(lb.addr(), "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let rejected = chat_test_support::metric_value(&metrics, "chat_origin_rejected_total");
    assert_eq!(rejected, Some(1.0));
}

#[tokio::test]
async fn a_malformed_allowed_origin_is_a_configuration_error() {
    for bad in [
        "chat.example.com",
        "https://chat.example.com/path",
        "ftp://x",
    ] {
        let args = ["--listen", "127.0.0.1:0", "--allowed-origin", bad];
        let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--allowed-origin"), "{stderr}");
    }
}

async fn chat_admin(server: SocketAddr, args: &[&str]) -> Output {
    let server = format!("http://{server}");
    let args = [&["--server", server.as_str()][..], args].concat();
    run_chat_admin(BIN, args).await.expect("chat-admin ran")
}

#[tokio::test]
async fn the_admin_token_comes_from_a_file_and_stays_off_the_command_line() {
    const TOKEN: &str = "t0ken-from-a-file";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_path = token_file.to_str().unwrap();

    let backend = BackendKind::Memory.setup().await.unwrap();
    let gateway = backend
        .gateway(BIN, &["--admin-token-file", token_path])
        .await
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", gateway.pid().unwrap())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));
    let server = admin_addr(&gateway).await.unwrap();

    // Without the token, refused; with the same file (or the token itself), answered.
    let out = chat_admin(server, &["gateways"]).await;
    assert!(!out.status.success(), "{out:?}");
    for args in [
        &["--token-file", token_path, "gateways"][..],
        &["--token", TOKEN, "gateways"][..],
    ] {
        let out = chat_admin(server, args).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(gateway.id()));
    }
    // A wrong token from a file is refused and not repeated in the error.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let out = chat_admin(
        server,
        &["--token-file", wrong.to_str().unwrap(), "gateways"],
    )
    .await;
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-the-token"));
    // A missing token file is a usage error of one line (64), for both binaries.
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let out = chat_admin(server, &["--token-file", missing, "gateways"]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
    let out = chat_admin(
        server,
        &["--token-file", token_path, "--token", TOKEN, "gateways"],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(TOKEN),
        "{out:?}"
    );

    let args = ["--listen", "127.0.0.1:0", "--admin-token-file", missing];
    let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        TOKEN,
        "--admin-token-file",
        token_path,
    ];
    let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(TOKEN),
        "{out:?}"
    );
    assert!(
        !gateway.log_contents().contains(TOKEN),
        "the token is never logged"
    );
}
