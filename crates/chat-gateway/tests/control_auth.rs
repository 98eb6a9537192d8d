//! The control path between gateways, with a cluster secret
//! (`--cluster-secret-file`): commands published by hand on the control
//! channel (as anyone with write access to Redis could) are carried out only
//! when signed with the secret, fresh and new. Unsigned, badly signed,
//! stale and replayed ones do nothing and are counted in
//! `chat_control_rejected_total{reason}`; a command signed by a peer
//! gateway (a kick through the other gateway's admin API) works.
//!
//! The signatures here are made independently of the gateway's code, from
//! the documented format (`chat_bridge`'s `control_auth.rs`, the README):
//! `S<ms>\n<nonce>\n<hex HMAC-SHA256>\n<command>`, the MAC over the
//! length-prefixed channel name, timestamp, nonce and command.

use std::path::PathBuf;
use std::time::Duration;

use chat_admin_proto::chat_admin_client::ChatAdminClient;
use chat_admin_proto::KickUserRequest;
use chat_bridge::RedisKeys;
use chat_proto::rules::now_ms;
use chat_test_support::{
    admin_addr, artifacts_dir, eventually, kicked, run_to_exit, BackendKind, Cluster, Gateway,
    RedisServer,
};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "the-control-path-secret-0123456789";

fn secret_file(name: &str, contents: &str) -> PathBuf {
    let dir = artifacts_dir().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A command signed as the documented format says.
fn sign(secret: &str, channel: &str, ts_ms: u64, nonce: &str, command: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    let ts = ts_ms.to_string();
    for part in [channel, &ts, nonce, command] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    let tag = hex(&mac.finalize().into_bytes());
    format!("S{ts}\n{nonce}\n{tag}\n{command}")
}

fn nonce(n: u32) -> String {
    format!("{n:032x}")
}

async fn publish(redis: &RedisServer, payload: &str) {
    let channel = RedisKeys::new("chat").control();
    redis
        .command(&["PUBLISH", &channel, payload])
        .await
        .expect("PUBLISH");
}

async fn rejected(gateway: &Gateway, reason: &str) -> f64 {
    let series = format!("chat_control_rejected_total{{reason=\"{reason}\"}}");
    gateway.metric(&series).await.unwrap().unwrap_or(-1.0)
}

#[tokio::test]
async fn only_fresh_commands_signed_with_the_cluster_secret_are_carried_out() {
    let secret = secret_file("control", &format!("{SECRET}\n"));
    let cluster = Cluster::start(
        BIN,
        2,
        BackendKind::Redis,
        &["--cluster-secret-file", secret.to_str().unwrap()],
    )
    .await
    .expect("redis + 2 gateways");
    let (g0, g1) = (cluster.gateway(0), cluster.gateway(1));
    let redis = cluster.redis().expect("redis");
    let channel = RedisKeys::new("chat").control();
    let mut ann = g0.client("Ann").await.expect("hello");
    let mut bob = g1.client("Bob").await.expect("hello");

    // Forged: unsigned kicks and drains, a kick signed with another secret,
    // one altered after signing, and a stale and a future one.
    publish(redis, "Kann\n\nforged").await;
    publish(redis, &format!("D{}", g0.id())).await;
    let now = now_ms();
    publish(
        redis,
        &sign(
            "another-secret-0123456789",
            &channel,
            now,
            &nonce(1),
            "Kann\n\nforged",
        ),
    )
    .await;
    let altered = sign(SECRET, &channel, now, &nonce(2), "Kbob\n\nforged").replace("Kbob", "Kann");
    publish(redis, &altered).await;
    publish(redis, "S12\nnot-a-nonce\nnot-a-mac\nKann\n\nforged").await;
    publish(
        redis,
        &sign(SECRET, &channel, now - 31_000, &nonce(3), "Kann\n\nforged"),
    )
    .await;
    publish(
        redis,
        &sign(SECRET, &channel, now + 31_000, &nonce(4), "Kann\n\nforged"),
    )
    .await;
    for gateway in [g0, g1] {
        eventually(WAIT, || async {
            rejected(gateway, "unsigned").await == 2.0
                && rejected(gateway, "bad_signature").await == 3.0
                && rejected(gateway, "stale").await == 2.0
        })
        .await;
        assert_eq!(
            gateway.get("/healthz").await.unwrap().0,
            200,
            "not draining"
        );
    }
    ann.ping().await.expect("Ann is still connected");
    bob.ping().await.expect("Bob is still connected");

    // A fresh command signed with the secret is carried out, once: its
    // replay is dropped and counted.
    let valid = sign(SECRET, &channel, now_ms(), &nonce(5), "Kann\n\nvalid");
    publish(redis, &valid).await;
    assert_eq!(
        kicked(&mut ann, WAIT).await,
        (Some(4001), Some("valid".to_owned()))
    );
    // The kicked session frees the name as it ends, soon after the close.
    let mut ann = eventually(WAIT, || async { g0.client("Ann").await.ok() }).await;
    publish(redis, &valid).await;
    for gateway in [g0, g1] {
        eventually(WAIT, || async {
            rejected(gateway, "replayed").await == 1.0
        })
        .await;
    }
    ann.ping().await.expect("the replay did nothing");

    // A peer gateway's signed command works: a kick through gateway 1's admin
    // API reaches Ann on gateway 0.
    let addr = admin_addr(g1).await.unwrap();
    let mut admin = ChatAdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let request = KickUserRequest {
        username: "ann".into(),
        room: String::new(),
        reason: "from a peer".into(),
    };
    assert_eq!(
        admin
            .kick_user(request)
            .await
            .unwrap()
            .into_inner()
            .sessions_kicked,
        1
    );
    assert_eq!(
        kicked(&mut ann, WAIT).await,
        (Some(4001), Some("from a peer".to_owned()))
    );
    bob.ping().await.expect("Bob is still connected");
    assert_eq!(
        rejected(g0, "unsigned").await,
        2.0,
        "peers sign what they send"
    );
}

#[tokio::test]
async fn a_gateway_without_a_secret_warns_and_a_bad_secret_file_is_refused() {
    let redis = RedisServer::start().await.expect("redis");
    let url = redis.url();
    // Unreadable and too short: exit 64 with one line naming the flag.
    let missing = artifacts_dir().join("secrets/does-not-exist");
    let short = secret_file("short", "tiny\n");
    for file in [&missing, &short] {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--cluster-secret-file",
            file.to_str().unwrap(),
        ];
        let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--cluster-secret-file"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    // Without the flag the control path works unsigned, with a warning.
    let cluster = Cluster::start(BIN, 1, BackendKind::Redis, &[])
        .await
        .unwrap();
    let gateway = cluster.gateway(0);
    assert!(gateway
        .log_contents()
        .contains("the control path is unauthenticated"));
    let mut ann = gateway.client("Ann").await.unwrap();
    publish(cluster.redis().unwrap(), "Kann\n\nunsigned").await;
    assert_eq!(
        kicked(&mut ann, WAIT).await,
        (Some(4001), Some("unsigned".to_owned()))
    );
}
