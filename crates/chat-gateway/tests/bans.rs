//! Bans through real gateways: `BanUser` kicks the user on whichever gateway
//! holds it (Error KICKED with the reason, close 4001), its Hellos are refused
//! the same way on every gateway until the ban ends or is lifted, and
//! `ListBans` shows what holds; on Redis (two gateways with a cluster
//! secret) and on the embedded bridge, and through the `chat-admin` CLI
//! (build the workspace first, as `scripts/test.sh` does).

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use chat_admin_proto::chat_admin_client::ChatAdminClient;
use chat_admin_proto::{BanUserRequest, ListBansRequest, UnbanUserRequest};
use chat_client::Client;
use chat_proto::v1::ErrorCode;
use chat_test_support::{
    admin_addr, artifacts_dir, eventually, kicked, run_chat_admin, BackendKind, Cluster, Gateway,
};
use tonic::transport::Channel;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
/// Bound on every wait for the cluster to converge.
const WAIT: Duration = Duration::from_secs(20);

type Admin = ChatAdminClient<Channel>;

/// A fresh secret file under the test artifacts.
fn secret_file(name: &str) -> PathBuf {
    let dir = artifacts_dir().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}", std::process::id()));
    std::fs::write(&path, "a-cluster-secret-for-tests-0123456789\n").unwrap();
    path
}

async fn admin(gateway: &Gateway) -> Admin {
    let addr = admin_addr(gateway).await.expect("admin address");
    ChatAdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connecting to the admin api")
}

fn ban(username: &str, duration_ms: u64, reason: &str) -> BanUserRequest {
    BanUserRequest {
        username: username.into(),
        duration_ms,
        reason: reason.into(),
        banned_by: "ops".into(),
    }
}

/// (user, reason, banned_by, until_ms), as listed.
async fn bans(admin: &Admin) -> Vec<(String, String, String, u64)> {
    let bans = admin
        .clone()
        .list_bans(ListBansRequest {})
        .await
        .expect("ListBans")
        .into_inner()
        .bans;
    bans.into_iter()
        .map(|b| (b.user, b.reason, b.banned_by, b.until_ms))
        .collect()
}

/// Says Hello as `name`: `Err((code, message, close code))` when refused.
async fn hello(gateway: &Gateway, name: &str) -> Result<Client, (ErrorCode, String, Option<u16>)> {
    let mut client = gateway.connect().await.expect("connect");
    match client.hello(name).await {
        Ok(_) => Ok(client),
        Err(e) => {
            let code = e.code().expect("an Error frame");
            let message = match e {
                chat_client::ClientError::Server { message, .. } => message,
                other => other.to_string(),
            };
            let close = client.wait_closed(WAIT).await.expect("closed");
            Err((code, message, close.map(|c| c.code)))
        }
    }
}

#[tokio::test]
async fn a_ban_kicks_everywhere_refuses_hellos_until_it_ends_and_unban_lifts_it() {
    bans_kick_everywhere(BackendKind::Redis).await;
}

/// The same on a Redis Cluster: the ban keys and the control channel are
/// not a room's, and work there too.
#[tokio::test]
async fn a_ban_kicks_everywhere_on_a_redis_cluster_too() {
    bans_kick_everywhere(BackendKind::RedisCluster).await;
}

async fn bans_kick_everywhere(kind: BackendKind) {
    let secret = secret_file("bans");
    let secret = secret.to_str().unwrap();
    let cluster = Cluster::start(BIN, 2, kind, &["--cluster-secret-file", secret])
        .await
        .expect("redis + 2 gateways");
    let (g0, g1) = (cluster.gateway(0), cluster.gateway(1));
    let admin1 = admin(g1).await;
    let mut ann = g0.client("Ann").await.expect("hello");
    ann.join("lobby").await.expect("join");
    let mut bob = g1.client("Bob").await.expect("hello");
    bob.join("lobby").await.expect("join");

    // Banned through gateway 1 (any case of the name): Ann, on gateway 0,
    // is kicked with the reason.
    let answer = admin1
        .clone()
        .ban_user(ban("ANN", 3_000, "spam"))
        .await
        .expect("BanUser")
        .into_inner();
    assert_eq!(answer.sessions_kicked, 1);
    assert!(answer.until_ms > 0);
    assert_eq!(
        kicked(&mut ann, WAIT).await,
        (Some(4001), Some("spam".to_owned()))
    );
    let listed = bans(&admin(g0).await).await;
    assert_eq!(
        listed,
        [(
            "ann".to_owned(),
            "spam".to_owned(),
            "ops".to_owned(),
            answer.until_ms
        )]
    );

    // Refused at Hello on both gateways, as a kick, until the ban ends.
    for gateway in [g0, g1] {
        let refused = hello(gateway, "Ann").await.err();
        assert_eq!(
            refused,
            Some((ErrorCode::Kicked, "spam".to_owned(), Some(4001)))
        );
    }
    bob.ping().await.expect("others stay connected");
    eventually(WAIT, || async { hello(g1, "ann").await.is_ok() }).await;
    assert_eq!(bans(&admin1).await, []);

    // A ban until lifted; unban lifts it (on the other gateway).
    let answer = admin1
        .clone()
        .ban_user(ban("Bob", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.sessions_kicked, answer.until_ms), (1, 0));
    let (close, message) = kicked(&mut bob, WAIT).await;
    assert_eq!(close, Some(4001));
    assert_eq!(message.as_deref(), Some("banned by an operator"));
    assert!(hello(g0, "Bob").await.is_err());
    assert_eq!(bans(&admin1).await[0].3, 0, "until lifted");
    let admin0 = admin(g0).await;
    let unban = |name: &str| UnbanUserRequest {
        username: name.into(),
    };
    assert!(
        admin0
            .clone()
            .unban_user(unban("bob"))
            .await
            .unwrap()
            .into_inner()
            .was_banned
    );
    assert!(hello(g1, "Bob").await.is_ok());
    assert!(
        !admin0
            .clone()
            .unban_user(unban("bob"))
            .await
            .unwrap()
            .into_inner()
            .was_banned
    );
    let invalid = admin0
        .clone()
        .ban_user(ban("", 1000, ""))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_embedded_bridge_bans_and_unbans_on_its_one_gateway() {
    let cluster = Cluster::start(BIN, 1, BackendKind::Memory, &[])
        .await
        .expect("one gateway");
    let gateway = cluster.gateway(0);
    let admin = admin(gateway).await;
    let mut ann = gateway.client("Ann").await.expect("hello");
    let answer = admin
        .clone()
        .ban_user(ban("ann", 60_000, "flooding"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.sessions_kicked, 1);
    assert_eq!(
        kicked(&mut ann, WAIT).await,
        (Some(4001), Some("flooding".to_owned()))
    );
    assert_eq!(
        hello(gateway, "ANN").await.err(),
        Some((ErrorCode::Kicked, "flooding".to_owned(), Some(4001)))
    );
    assert_eq!(bans(&admin).await.len(), 1);
    // A banned user who is not online is recorded all the same.
    let answer = admin
        .clone()
        .ban_user(ban("Carol", 1_000, "later"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.sessions_kicked, 0);
    assert!(hello(gateway, "Carol").await.is_err());
    eventually(WAIT, || async { hello(gateway, "Carol").await.is_ok() }).await;
    let request = UnbanUserRequest {
        username: "Ann".into(),
    };
    assert!(
        admin
            .clone()
            .unban_user(request)
            .await
            .unwrap()
            .into_inner()
            .was_banned
    );
    assert!(hello(gateway, "Ann").await.is_ok());
    assert_eq!(bans(&admin).await, []);
}

/// Runs the real `chat-admin` with `args` against `server`.
async fn cli(server: &str, args: &[&str]) -> Output {
    let args = [&["--server", server][..], args].concat();
    run_chat_admin(BIN, args).await.expect("chat-admin ran")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "chat-admin failed: {output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn the_cli_bans_lists_and_unbans() {
    let cluster = Cluster::start(BIN, 1, BackendKind::Memory, &[])
        .await
        .expect("one gateway");
    let gateway = cluster.gateway(0);
    let server = format!("http://{}", admin_addr(gateway).await.unwrap());
    let mut ann = gateway.client("Ann").await.expect("hello");

    let out = stdout(
        &cli(
            &server,
            &[
                "ban", "Ann", "--for", "1h", "--reason", "spam", "--by", "eve",
            ],
        )
        .await,
    );
    assert!(out.starts_with("banned Ann until "), "{out}");
    assert!(out.ends_with(": 1 session closed\n"), "{out}");
    assert_eq!(
        kicked(&mut ann, WAIT).await,
        (Some(4001), Some("spam".to_owned()))
    );
    let out = stdout(&cli(&server, &["bans"]).await);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].starts_with("USER"), "{out}");
    assert!(
        rows[1].starts_with("ann ") && rows[1].contains(" eve ") && rows[1].ends_with(" spam"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&server, &["bans", "--json"]).await)).unwrap();
    assert_eq!(json["bans"][0]["user"], "ann");
    assert_eq!(json["bans"][0]["reason"], "spam");
    assert_eq!(
        stdout(&cli(&server, &["unban", "ANN"]).await),
        "unbanned ANN\n"
    );
    assert_eq!(
        stdout(&cli(&server, &["unban", "ann"]).await),
        "ann was not banned\n"
    );
    assert!(hello(gateway, "Ann").await.is_ok());
    let bad = cli(&server, &["ban", "Ann", "--for", "soon"]).await;
    assert_eq!(bad.status.code(), Some(2), "a usage error: {bad:?}");
}
