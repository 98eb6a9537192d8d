//! TLS through the real binaries, with certificates the tests make (rcgen):
//! a chat over `wss://`, a SIGHUP reload while a client stays connected (and
//! a failed reload that keeps the old certificate), `wss://` through chat-lb
//! (which passes TLS through), the admin API requiring client certificates
//! (with the real `chat-admin`), refused TLS files, and `rediss://` with an
//! ACL user against a redis-server serving TLS.
//!
//! The chat-lb and chat-admin tests run the binaries next to the gateway's:
//! build the workspace first (`cargo build --workspace`).

mod tls_support;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use chat_client::rustls::ClientConfig;
use chat_client::Client;
use chat_proto::v1::server_frame;
use chat_test_support::{
    admin_addr, eventually, run_chat_admin, run_to_exit, Backend, BackendKind, Balancer, Gateway,
    RedisServer, RedisTls,
};
use tls_support::{https_get, Ca, Leaf};

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(20);

/// A gateway on the embedded backend serving `leaf` over TLS.
async fn tls_gateway(leaf: &Leaf, extra: &[&str]) -> (chat_test_support::BackendFixture, Gateway) {
    let backend = BackendKind::Memory.setup().await.unwrap();
    let mut args = leaf.gateway_args();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = backend.gateway(BIN, &args).await.expect("tls gateway");
    (backend, gateway)
}

fn wss_url(addr: SocketAddr) -> String {
    format!("wss://{addr}/ws")
}

/// A member of `room` over `wss://`, trusting `tls`.
async fn member(url: &str, tls: &Arc<ClientConfig>, name: &str, room: &str) -> Client {
    let mut client = Client::connect_with_tls(url, tls.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: wss connect to {url}: {e}"));
    client.hello(name).await.expect("hello");
    client.join(room).await.expect("join");
    client
}

/// `from` says `text` in `room`; `to` receives it.
async fn says(from: &mut Client, to: &mut Client, room: &str, text: &str) {
    from.send(room, text).await.expect("send");
    let got = to
        .wait_for(|f| match &f.kind {
            Some(server_frame::Kind::Message(m)) if m.text == text => Some(m.username.clone()),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("{text:?} not received: {e}"));
    assert!(!got.is_empty());
}

#[tokio::test]
async fn a_chat_over_wss_with_a_certificate_made_by_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("chat test ca");
    let leaf = ca.server_leaf(dir.path(), "server");
    let (_backend, gateway) = tls_gateway(&leaf, &[]).await;
    let trust = ca.client_config();

    // By IP address and by name: the certificate carries both.
    let mut alice = member(&wss_url(gateway.addr()), &trust, "alice", "lobby").await;
    let by_name = format!("wss://localhost:{}/ws", gateway.addr().port());
    let mut bob = member(&by_name, &trust, "bob", "lobby").await;
    says(&mut alice, &mut bob, "lobby", "hello over tls").await;
    says(&mut bob, &mut alice, "lobby", "and back").await;

    // A client that trusts another CA refuses the certificate.
    let stranger = Ca::new("another ca").client_config();
    let refused = Client::connect_with_tls(&wss_url(gateway.addr()), stranger).await;
    assert!(
        refused.is_err(),
        "a certificate of an unknown CA was accepted"
    );
    // Plain HTTP and WebSocket get no answer from a TLS port.
    assert!(Client::connect(&gateway.ws_url()).await.is_err());
    assert!(!matches!(gateway.get("/healthz").await, Ok((200, _))));

    // HTTPS answers, and the failed handshakes were counted.
    let (status, _) = https_get(gateway.addr(), "/healthz", &trust).await;
    assert_eq!(status, 200);
    let (_, metrics) = https_get(gateway.addr(), "/metrics", &trust).await;
    let failures = chat_test_support::metric_value(&metrics, "chat_tls_handshake_failures_total");
    assert!(failures >= Some(2.0), "{metrics}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_established_connections_keep_chatting() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let leaf = old_ca.server_leaf(dir.path(), "server");
    let (_backend, gateway) = tls_gateway(&leaf, &[]).await;
    let url = wss_url(gateway.addr());
    let (old_trust, new_trust) = (old_ca.client_config(), new_ca.client_config());
    let mut alice = member(&url, &old_trust, "alice", "lobby").await;
    assert!(Client::connect_with_tls(&url, new_trust.clone())
        .await
        .is_err());

    // Same files, new contents (a renewed certificate from another CA), SIGHUP.
    new_ca.server_leaf_at(&leaf);
    gateway.sighup().unwrap();
    eventually(WAIT, || async {
        Client::connect_with_tls(&url, new_trust.clone())
            .await
            .is_ok()
    })
    .await;
    // New handshakes get the new certificate only ...
    assert!(Client::connect_with_tls(&url, old_trust.clone())
        .await
        .is_err());
    // ... while the connection made before the reload chats on.
    let mut bob = member(&url, &new_trust, "bob", "lobby").await;
    says(&mut alice, &mut bob, "lobby", "still here after the reload").await;
    says(&mut bob, &mut alice, "lobby", "welcome back").await;

    // A reload that fails (a broken certificate file) keeps the current one.
    std::fs::write(&leaf.cert, "not a certificate\n").unwrap();
    gateway.sighup().unwrap();
    eventually(WAIT, || async {
        gateway
            .log_contents()
            .contains("tls certificate not reloaded")
    })
    .await;
    let mut carol = member(&url, &new_trust, "carol", "lobby").await;
    says(&mut alice, &mut carol, "lobby", "the old certificate stays").await;
}

#[tokio::test]
async fn wss_passes_through_chat_lb() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("chat test ca");
    let leaf = ca.server_leaf(dir.path(), "server");
    let (_backend, gateway) = tls_gateway(&leaf, &[]).await;
    // The balancer cannot ask a TLS backend for /healthz: it checks TCP only.
    let lb = Balancer::start(BIN, &[gateway.addr()], &["--health-check", "tcp"])
        .await
        .expect("chat-lb");
    let trust = ca.client_config();
    let through_lb = wss_url(lb.addr());
    eventually(WAIT, || async {
        Client::connect_with_tls(&through_lb, trust.clone())
            .await
            .is_ok()
    })
    .await;
    // The certificate seen through chat-lb is the gateway's own: the
    // balancer relays TLS untouched.
    let mut alice = member(&through_lb, &trust, "alice", "lobby").await;
    let mut bob = member(&wss_url(gateway.addr()), &trust, "bob", "lobby").await;
    says(&mut alice, &mut bob, "lobby", "through the balancer").await;
    says(&mut bob, &mut alice, "lobby", "and straight back").await;
}

/// Runs the real chat-admin with `args` (environment cleared of CHAT_*).
async fn chat_admin(args: &[&str]) -> Output {
    run_chat_admin(BIN, args).await.expect("chat-admin ran")
}

#[tokio::test]
async fn the_admin_api_over_tls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("admin ca");
    let clients = Ca::new("admin clients ca");
    let server = ca.server_leaf(dir.path(), "admin");
    let operator = clients.client_leaf(dir.path(), "operator");
    let intruder = Ca::new("someone else").client_leaf(dir.path(), "intruder");
    let client_ca = clients.write(dir.path(), "clients-ca");
    let server_ca = ca.write(dir.path(), "server-ca");
    let backend = BackendKind::Memory.setup().await.unwrap();
    let args = [
        "--admin-tls-cert",
        server.cert.to_str().unwrap(),
        "--admin-tls-key",
        server.key.to_str().unwrap(),
        "--admin-tls-client-ca",
        client_ca.to_str().unwrap(),
    ];
    let gateway = backend.gateway(BIN, &args).await.unwrap();
    let https = format!("https://{}", admin_addr(&gateway).await.unwrap());
    let ca_file = server_ca.to_str().unwrap();
    let run = |cert: Option<&Leaf>| {
        let mut args = vec!["--server", https.as_str(), "--tls-ca", ca_file, "gateways"];
        if let Some(leaf) = cert {
            args.extend([
                "--tls-cert",
                leaf.cert.to_str().unwrap(),
                "--tls-key",
                leaf.key.to_str().unwrap(),
            ]);
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            chat_admin(&args).await
        }
    };

    // With a certificate the clients' CA signed: answered.
    let out = run(Some(&operator)).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(gateway.id()),
        "{out:?}"
    );
    // Without one, or with one from another CA: refused.
    for cert in [None, Some(&intruder)] {
        let out = run(cert).await;
        assert!(
            !out.status.success(),
            "answered without a valid client certificate: {out:?}"
        );
    }
    // Plain gRPC gets nothing from a TLS port.
    let plain = format!("http://{}", admin_addr(&gateway).await.unwrap());
    let out = chat_admin(&["--server", &plain, "--timeout-secs", "3", "gateways"]).await;
    assert!(!out.status.success(), "{out:?}");
}

#[tokio::test]
async fn missing_or_unpaired_tls_files_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = Ca::new("ca").server_leaf(dir.path(), "server");
    let (cert, key) = (leaf.cert.to_str().unwrap(), leaf.key.to_str().unwrap());
    let base = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", cert], "--tls-key"),
        (
            &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key],
            "/nonexistent/cert.pem",
        ),
        (&["--tls-cert", cert, "--tls-key", cert], "--tls-key"),
        (&["--admin-tls-client-ca", cert], "--admin-tls-client-ca"),
    ];
    for (flags, named) in cases {
        let args: Vec<&str> = base.iter().chain(flags).copied().collect();
        let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flags:?}: {stderr}");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[tokio::test]
async fn rediss_with_an_acl_user_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("redis ca");
    let leaf = ca.server_leaf(dir.path(), "redis");
    let ca_file = ca.write(dir.path(), "redis-ca");
    let redis = RedisServer::start_tls(RedisTls {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        ca: ca_file.clone(),
    })
    .await
    .expect("redis-server with tls");
    let setuser = [
        "ACL",
        "SETUSER",
        "chatgw",
        "on",
        ">s3cret-pw",
        "~*",
        "&*",
        "+@all",
    ];
    redis.command(&setuser).await.unwrap();
    let tls_port = redis.tls_port().unwrap();
    let url = |password: &str| format!("rediss://chatgw:{password}@127.0.0.1:{tls_port}");
    let ca_arg = ca_file.to_str().unwrap();

    // Two gateways over TLS, authenticated as chatgw: one cluster.
    let backend = Backend::Redis {
        url: url("s3cret-pw"),
        prefix: None,
    };
    let a = Gateway::start(BIN, &backend, &["--redis-tls-ca", ca_arg])
        .await
        .expect("gateway over rediss://");
    let b = Gateway::start(BIN, &backend, &["--redis-tls-ca", ca_arg])
        .await
        .expect("second gateway over rediss://");
    let mut alice = a.client("alice").await.unwrap();
    alice.join("lobby").await.unwrap();
    let mut bob = b.client("bob").await.unwrap();
    bob.join("lobby").await.unwrap();
    says(&mut alice, &mut bob, "lobby", "across gateways over rediss").await;
    // Their Redis connections are chatgw's.
    let clients = match redis.command(&["CLIENT", "LIST"]).await.unwrap() {
        chat_test_support::RespValue::Bulk(Some(text)) => String::from_utf8(text).unwrap(),
        other => panic!("CLIENT LIST answered {other:?}"),
    };
    assert!(clients.contains("user=chatgw"), "{clients}");

    assert_eq!(a.metric("chat_bridge_up").await.unwrap(), Some(1.0));

    // A wrong password, or a CA that did not sign the server's certificate:
    // the gateway starts (Redis may come later) but is not connected, and
    // says why without showing the password.
    let other_ca = Ca::new("not redis' ca").write(dir.path(), "other-ca");
    let refusals = [
        (url("wrong-pw"), ca_arg.to_owned()),
        (url("s3cret-pw"), other_ca.to_str().unwrap().to_owned()),
    ];
    for (url, ca) in refusals {
        let backend = Backend::Redis { url, prefix: None };
        let refused = Gateway::start(BIN, &backend, &["--redis-tls-ca", &ca])
            .await
            .unwrap();
        assert_eq!(
            refused.metric("chat_bridge_up").await.unwrap(),
            Some(0.0),
            "connected with {ca}"
        );
        let log = refused.log_contents();
        assert!(log.contains("rediss://***@127.0.0.1"), "{log}");
        assert!(
            !log.contains("s3cret-pw") && !log.contains("wrong-pw"),
            "a password was logged: {log}"
        );
    }
    // The bridge's CA file needs a rediss:// url (exit 64).
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--redis",
        &redis.url(),
        "--redis-tls-ca",
        ca_arg,
    ];
    let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}
