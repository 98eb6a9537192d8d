//! The admin gRPC API and the `chat-admin` CLI against real clusters
//! (redis-server + two gateway processes): listings that follow sessions on
//! both gateways, kicks and drains that cross gateways, system messages in
//! order, the bearer token, health and reflection.
//!
//! The CLI test runs `target/debug/chat-admin`, found next to the gateway
//! binary: build the workspace first (`cargo build --workspace`, as
//! `scripts/test.sh` does).

use std::process::Output;
use std::time::Duration;

use chat_admin_proto::chat_admin_client::ChatAdminClient;
use chat_admin_proto::{
    DrainGatewayRequest, KickUserRequest, ListGatewaysRequest, ListRoomsRequest, ListUsersRequest,
    SendSystemMessageRequest,
};
use chat_client::{Client, ClientError};
use chat_proto::v1::{presence_change, server_frame, ErrorCode, ServerFrame};
use chat_test_support::{
    admin_addr, eventually, run_chat_admin, run_to_exit, BackendKind, Cluster, Gateway,
};
use tonic::transport::Channel;
use tonic::{Code, Request};

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
/// Senders must not be slowed by the per-connection rate limit.
const FAST: &[&str] = chat_test_support::FAST_SENDS;
/// Bound on every wait for the cluster to converge.
const WAIT: Duration = Duration::from_secs(20);

type Admin = ChatAdminClient<Channel>;

/// Two gateways on a fresh Redis (or Redis Cluster) with `extra` flags.
async fn redis_cluster_of(kind: BackendKind, extra: &[&str]) -> Cluster {
    let args: Vec<&str> = FAST.iter().chain(extra).copied().collect();
    Cluster::start(BIN, 2, kind, &args)
        .await
        .expect("starting redis + 2 gateways")
}

async fn redis_cluster(extra: &[&str]) -> Cluster {
    redis_cluster_of(BackendKind::Redis, extra).await
}

/// Instantiates each case (an `async fn(BackendKind)`) on one Redis and on a
/// Redis Cluster: operator commands and listings cross gateways through
/// keys and a control channel that are not a room's, on both deployments.
macro_rules! on_both_redis_deployments {
    ($($case:ident),* $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(chat_test_support::BackendKind::Redis).await
                }
            )*
        }
        mod on_redis_cluster {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(chat_test_support::BackendKind::RedisCluster).await
                }
            )*
        }
    };
}

on_both_redis_deployments!(
    listings_follow_sessions_on_both_gateways_and_drop_a_killed_gateway,
    kick_reaches_sessions_on_another_gateway_in_both_forms,
    drain_called_on_the_other_gateway_moves_clients_without_losing_messages,
    a_system_message_is_ordered_history_with_system_set_and_no_username,
    a_drain_reports_the_connections_the_gateway_actually_told,
    listings_drop_a_crashed_process_sessions_after_the_cleanup,
);

async fn admin(gateway: &Gateway) -> Admin {
    let addr = admin_addr(gateway).await.expect("admin address");
    ChatAdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connecting to the admin api")
}

async fn member(gateway: &Gateway, name: &str, rooms: &[&str]) -> Client {
    let mut client = gateway.client(name).await.expect("hello");
    for room in rooms {
        client.join(room).await.expect("join");
    }
    client
}

/// (username, rooms, gateway ids, connections), as listed.
type UserRow = (String, Vec<String>, Vec<String>, u32);

async fn users(admin: &Admin, room: &str) -> Vec<UserRow> {
    let request = ListUsersRequest {
        room: room.to_owned(),
    };
    let users = admin
        .clone()
        .list_users(request)
        .await
        .expect("ListUsers")
        .into_inner()
        .users;
    users
        .into_iter()
        .map(|u| (u.username, u.rooms, u.gateway_ids, u.connections))
        .collect()
}

/// (name, member count) of every listed room.
async fn rooms(admin: &Admin) -> Vec<(String, u32)> {
    let rooms = admin
        .clone()
        .list_rooms(ListRoomsRequest {})
        .await
        .expect("ListRooms")
        .into_inner()
        .rooms;
    rooms
        .into_iter()
        .map(|r| (r.name, r.member_count))
        .collect()
}

/// (id, connections, draining) of every live gateway.
async fn gateways(admin: &Admin) -> Vec<(String, u32, bool)> {
    let gateways = admin
        .clone()
        .list_gateways(ListGatewaysRequest {})
        .await
        .expect("ListGateways")
        .into_inner();
    gateways
        .gateways
        .into_iter()
        .map(|g| (g.id, g.connections, g.draining))
        .collect()
}

fn row(name: &str, rooms: &[&str], gateways: &[&str], connections: u32) -> UserRow {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    (
        name.to_owned(),
        strings(rooms),
        strings(gateways),
        connections,
    )
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn presence_of(frame: &ServerFrame) -> Option<(String, String, presence_change::Kind)> {
    match &frame.kind {
        Some(server_frame::Kind::Presence(p)) => {
            Some((p.room.clone(), p.username.clone(), p.kind()))
        }
        _ => None,
    }
}

fn message_of(frame: &ServerFrame) -> Option<(String, String, String, bool)> {
    match &frame.kind {
        Some(server_frame::Kind::Message(m)) => {
            Some((m.id.clone(), m.username.clone(), m.text.clone(), m.system))
        }
        _ => None,
    }
}

/// Waits for `who` to be announced as having left `room`.
async fn wait_left(client: &mut Client, room: &str, who: &str) {
    let (room, who) = (room.to_owned(), who.to_owned());
    client
        .wait_for(|f| {
            presence_of(f)
                .filter(|p| p.0 == room && p.1 == who && p.2 == presence_change::Kind::Left)
        })
        .await
        .unwrap_or_else(|e| panic!("no PresenceChange LEFT of {who} in {room}: {e}"));
}

async fn listings_follow_sessions_on_both_gateways_and_drop_a_killed_gateway(kind: BackendKind) {
    let mut cluster = redis_cluster_of(kind, &[]).await;
    let (g0, g1) = (
        cluster.gateway(0).id().to_owned(),
        cluster.gateway(1).id().to_owned(),
    );
    let admin0 = admin(cluster.gateway(0)).await;
    let admin1 = admin(cluster.gateway(1)).await;

    let _alice = member(cluster.gateway(0), "Alice", &["lobby"]).await;
    let mut bob = member(cluster.gateway(1), "Bob", &["lobby", "dev"]).await;
    let _carol = member(cluster.gateway(1), "Carol", &[]).await;

    // Both gateways give the same cluster-wide answer (once each has
    // announced itself with its first heartbeat).
    eventually(WAIT, || async {
        gateways(&admin0).await.len() == 2 && gateways(&admin1).await.len() == 2
    })
    .await;
    let expected = vec![
        row("Alice", &["lobby"], &[&g0], 1),
        row("Bob", &["dev", "lobby"], &[&g1], 1),
        row("Carol", &[], &[&g1], 1),
    ];
    for admin in [&admin0, &admin1] {
        assert_eq!(users(admin, "").await, expected);
        assert_eq!(
            rooms(admin).await,
            [("dev".to_owned(), 1), ("lobby".to_owned(), 2)]
        );
    }
    // One room: its members, with every room they are in.
    assert_eq!(
        users(&admin0, "dev").await,
        [row("Bob", &["dev", "lobby"], &[&g1], 1)]
    );
    assert_eq!(users(&admin0, "nowhere").await, []);
    let bad = admin0
        .clone()
        .list_users(ListUsersRequest {
            room: " lobby".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Gateways with their load (written by each gateway's heartbeat).
    let want = sorted(vec![(g0.clone(), 1, false), (g1.clone(), 2, false)]);
    eventually(WAIT, || async { gateways(&admin1).await == want }).await;
    let listed = admin0
        .clone()
        .list_gateways(ListGatewaysRequest {})
        .await
        .unwrap()
        .into_inner()
        .gateways;
    let first = listed
        .iter()
        .find(|g| g.id == g0)
        .expect("gateway 0 listed");
    assert_eq!(first.address, cluster.gateway(0).addr().to_string());
    assert!(
        first.started_at_ms > 0 && first.last_heartbeat_ms >= first.started_at_ms,
        "{first:?}"
    );

    // A message shows as the room's last one.
    let ack = bob.send("lobby", "hello").await.unwrap();
    let listed = admin0
        .clone()
        .list_rooms(ListRoomsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rooms;
    let lobby = listed.iter().find(|r| r.name == "lobby").unwrap();
    assert_eq!(
        (lobby.last_message_id.as_str(), lobby.last_message_at_ms),
        (ack.id.as_str(), ack.sent_at_ms)
    );

    // Leaving: a room without members and without messages is gone.
    bob.leave("dev").await.unwrap();
    assert_eq!(rooms(&admin0).await, [("lobby".to_owned(), 2)]);
    assert_eq!(
        users(&admin0, "").await[1],
        row("Bob", &["lobby"], &[&g1], 1)
    );
    // A room with a recent message stays listed without members.
    admin1
        .clone()
        .send_system_message(SendSystemMessageRequest {
            room: "news".into(),
            text: "hi".into(),
        })
        .await
        .unwrap();
    // The activity index is written apart from the message (at once, or
    // within 250 ms under load), so that it never holds a message up.
    eventually(WAIT, || async {
        rooms(&admin0).await == [("lobby".to_owned(), 2), ("news".to_owned(), 0)]
    })
    .await;

    // Gateway 1 crashes: its users, their presence and the gateway itself
    // leave the listings (its heartbeat expires within 10 s).
    cluster.gateway_mut(1).sigkill().await.unwrap();
    eventually(WAIT, || async {
        users(&admin0, "").await == [row("Alice", &["lobby"], &[&g0], 1)]
    })
    .await;
    assert_eq!(
        rooms(&admin0).await,
        [("lobby".to_owned(), 1), ("news".to_owned(), 0)]
    );
    assert_eq!(gateways(&admin0).await, [(g0.clone(), 1, false)]);
}

async fn kick_reaches_sessions_on_another_gateway_in_both_forms(kind: BackendKind) {
    let cluster = redis_cluster_of(kind, &[]).await;
    let admin1 = admin(cluster.gateway(1)).await;
    let mut alice = member(cluster.gateway(0), "Alice", &["a", "b"]).await;
    let mut bob = member(cluster.gateway(1), "Bob", &["a", "b"]).await;
    let mut carol = member(cluster.gateway(0), "Carol", &["a"]).await;

    // Unknown user, or not in the room: nobody is kicked.
    let kick = |username: &str, room: &str, reason: &str| KickUserRequest {
        username: username.into(),
        room: room.into(),
        reason: reason.into(),
    };
    let none = admin1
        .clone()
        .kick_user(kick("nobody", "", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.sessions_kicked, 0);
    let none = admin1
        .clone()
        .kick_user(kick("Carol", "b", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.sessions_kicked, 0);
    let invalid = admin1
        .clone()
        .kick_user(kick("", "", ""))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);

    // With a room (asked on gateway 1, Alice is on gateway 0, name in any case):
    // she gets Left and stays connected; the others see her leave.
    let kicked = admin1
        .clone()
        .kick_user(kick("ALICE", "a", "off topic"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.sessions_kicked, 1);
    let left = alice
        .wait_for(|f| match &f.kind {
            Some(server_frame::Kind::Left(left)) => Some((f.r#ref, left.room.clone())),
            _ => None,
        })
        .await
        .expect("a Left push");
    assert_eq!(left, (0, "a".to_owned()));
    wait_left(&mut bob, "a", "Alice").await;
    wait_left(&mut carol, "a", "Alice").await;
    alice
        .send("b", "still here")
        .await
        .expect("still connected and in b");
    let err = alice.send("a", "let me in").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotInRoom));
    assert_eq!(
        users(&admin1, "a")
            .await
            .iter()
            .map(|u| u.0.as_str())
            .collect::<Vec<_>>(),
        ["Bob", "Carol"]
    );

    // Without a room: Error KICKED with the reason, then close 4001; the
    // rooms see her leave.
    let kicked = admin1
        .clone()
        .kick_user(kick("alice", "", "spam"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.sessions_kicked, 1);
    let close = alice.wait_closed(WAIT).await.expect("closed by the server");
    assert_eq!(close.map(|c| c.code), Some(4001));
    let error = alice.buffered_events().find_map(|f| match &f.kind {
        Some(server_frame::Kind::Error(e)) => Some((e.code(), e.message.clone())),
        _ => None,
    });
    assert_eq!(error, Some((ErrorCode::Kicked, "spam".to_owned())));
    wait_left(&mut bob, "b", "Alice").await;
    eventually(WAIT, || async {
        users(&admin1, "").await.iter().all(|u| u.0 != "Alice")
    })
    .await;
    // The name is free again.
    cluster
        .gateway(1)
        .client("Alice")
        .await
        .expect("the name was released");
}

async fn drain_called_on_the_other_gateway_moves_clients_without_losing_messages(
    kind: BackendKind,
) {
    let mut cluster = redis_cluster_of(kind, &["--drain-timeout-ms", "3000"]).await;
    let g0 = cluster.gateway(0).id().to_owned();
    let admin1 = admin(cluster.gateway(1)).await;
    let mut alice = member(cluster.gateway(0), "Alice", &["ops"]).await;
    let mut bob = member(cluster.gateway(1), "Bob", &["ops"]).await;

    let unknown = admin1
        .clone()
        .drain_gateway(DrainGatewayRequest {
            gateway_id: "gw-nope".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(bob.send("ops", &format!("m{i}")).await.unwrap().id);
    }
    let mut got: Vec<String> = Vec::new();
    while got.len() < 3 {
        got.push(alice.wait_for(message_of).await.unwrap().0);
    }

    eventually(WAIT, || async {
        gateways(&admin1)
            .await
            .iter()
            .any(|g| g.0 == g0 && g.1 == 1)
    })
    .await;
    let drained = admin1
        .clone()
        .drain_gateway(DrainGatewayRequest {
            gateway_id: g0.clone(),
        })
        .await
        .unwrap();
    assert_eq!(drained.into_inner().connections, 1);
    alice
        .wait_for(|f| matches!(f.kind, Some(server_frame::Kind::Reconnect(_))).then_some(()))
        .await
        .expect("a Reconnect push");
    eventually(WAIT, || async {
        gateways(&admin1).await.iter().any(|g| g.0 == g0 && g.2)
    })
    .await;

    // Messages keep coming while Alice moves.
    for i in 3..6 {
        sent.push(bob.send("ops", &format!("m{i}")).await.unwrap().id);
    }
    // Messages that arrived before she left count too.
    while let Some(frame) = alice.try_next_event() {
        got.extend(message_of(&frame).map(|m| m.0));
    }
    let since = got.last().cloned().unwrap();
    alice.close().await.unwrap();
    let mut alice = eventually(WAIT, || async {
        let mut client = cluster
            .gateway(1)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        match client.hello("Alice").await {
            Ok(_) => Ok(client),
            Err(
                e @ ClientError::Server {
                    code: ErrorCode::UsernameTaken,
                    ..
                },
            ) => Err(e.to_string()),
            Err(e) => panic!("hello on the other gateway: {e}"),
        }
    })
    .await;
    let joined = alice.join_with("ops", &since, 0).await.unwrap();
    got.extend(joined.history.into_iter().map(|m| m.id));
    sent.push(bob.send("ops", "m6").await.unwrap().id);
    got.push(alice.wait_for(message_of).await.unwrap().0);
    assert_eq!(got, sent, "every message exactly once, in order");

    // The drained gateway exits after its deadline.
    let status = cluster
        .gateway_mut(0)
        .wait_exit(WAIT)
        .await
        .expect("the drained gateway exits");
    assert!(status.success(), "{status}");
}

async fn a_system_message_is_ordered_history_with_system_set_and_no_username(kind: BackendKind) {
    let cluster = redis_cluster_of(kind, &["--max-text-bytes", "64"]).await;
    let admin0 = admin(cluster.gateway(0)).await;
    let mut alice = member(cluster.gateway(0), "Alice", &["lobby"]).await;
    let mut bob = member(cluster.gateway(1), "Bob", &["lobby"]).await;

    bob.send("lobby", "before").await.unwrap();
    let say = SendSystemMessageRequest {
        room: "lobby".into(),
        text: "maintenance at noon".into(),
    };
    let id = admin0
        .clone()
        .send_system_message(say)
        .await
        .unwrap()
        .into_inner()
        .id;
    bob.send("lobby", "after").await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(alice.wait_for(message_of).await.unwrap());
    }
    let texts: Vec<(&str, &str, bool)> = seen
        .iter()
        .map(|(_, u, t, s)| (u.as_str(), t.as_str(), *s))
        .collect();
    assert_eq!(
        texts,
        [
            ("Bob", "before", false),
            ("", "maintenance at noon", true),
            ("Bob", "after", false)
        ]
    );
    assert_eq!(seen[1].0, id);
    // In the stored history too, for whoever joins later.
    let mut carol = member(cluster.gateway(1), "Carol", &[]).await;
    let history = carol.join("lobby").await.unwrap().history;
    let system: Vec<_> = history
        .iter()
        .filter(|m| m.system)
        .map(|m| (m.id.as_str(), m.username.as_str()))
        .collect();
    assert_eq!(system, [(id.as_str(), "")]);

    for (room, text) in [
        ("", "x"),
        (" lobby", "x"),
        ("lobby", ""),
        ("lobby", "   "),
        ("lobby", &"x".repeat(65)),
    ] {
        let request = SendSystemMessageRequest {
            room: room.into(),
            text: text.to_owned(),
        };
        let status = admin0
            .clone()
            .send_system_message(request)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{room:?} {text:?}: {status:?}"
        );
    }
}

#[tokio::test]
async fn the_embedded_bridge_answers_for_its_one_gateway_and_enforces_the_token() {
    let fixture = BackendKind::Memory.setup().await.unwrap();
    let gateway = fixture
        .gateway(BIN, &["--admin-token", "s3cret"])
        .await
        .unwrap();
    let addr = admin_addr(&gateway).await.unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = ChatAdminClient::new(channel.clone());
    let authed = |header: &str| {
        let mut request = Request::new(ListGatewaysRequest {});
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        request
    };

    // The token is enforced: missing, wrong, or without the scheme is UNAUTHENTICATED.
    let refused = [
        Request::new(ListGatewaysRequest {}),
        authed("Bearer wrong"),
        authed("s3cret"),
    ];
    for request in refused {
        let status = admin.list_gateways(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let listed = admin
        .list_gateways(authed("Bearer s3cret"))
        .await
        .unwrap()
        .into_inner()
        .gateways;
    assert_eq!(
        listed.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        [gateway.id()]
    );

    let mut admin =
        ChatAdminClient::with_interceptor(channel.clone(), |mut request: Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", "Bearer s3cret".parse().unwrap());
            Ok(request)
        });
    let mut alice = member(&gateway, "Alice", &["lobby"]).await;
    let mut bob = member(&gateway, "Bob", &["lobby"]).await;
    let users = admin
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .users;
    let names: Vec<_> = users
        .iter()
        .map(|u| (u.username.as_str(), u.gateway_ids.clone(), u.connections))
        .collect();
    assert_eq!(
        names,
        [
            ("Alice", vec![gateway.id().to_owned()], 1),
            ("Bob", vec![gateway.id().to_owned()], 1)
        ]
    );
    let rooms = admin
        .list_rooms(ListRoomsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rooms;
    assert_eq!(
        rooms
            .iter()
            .map(|r| (r.name.as_str(), r.member_count))
            .collect::<Vec<_>>(),
        [("lobby", 2)]
    );
    let request = KickUserRequest {
        username: "bob".into(),
        room: String::new(),
        reason: "bye".into(),
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
        bob.wait_closed(WAIT).await.unwrap().map(|c| c.code),
        Some(4001)
    );
    wait_left(&mut alice, "lobby", "Bob").await;

    // Health and reflection need the token too ("every call").
    let bearer = |mut request: Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        Ok(request)
    };
    let check = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    let mut anonymous = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    assert_eq!(
        anonymous
            .check(check("chat.admin.v1.ChatAdmin"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let mut health =
        tonic_health::pb::health_client::HealthClient::with_interceptor(channel.clone(), bearer);
    let status = health
        .check(check("chat.admin.v1.ChatAdmin"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(
        health
            .check(check("no.such.Service"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let services = reflected_services(channel, bearer).await;
    assert!(
        services.contains(&"chat.admin.v1.ChatAdmin".to_owned()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
}

/// The services listed by server reflection (v1).
async fn reflected_services(
    channel: Channel,
    auth: impl tonic::service::Interceptor,
) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::with_interceptor(channel, auth);
    let mut answers = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

// ------------------------------------------------------------------ the CLI

/// Runs the real `chat-admin` with `args` against `server`.
async fn cli(server: &str, args: &[&str]) -> Output {
    let args = [&["--server", server][..], args].concat();
    run_chat_admin(BIN, args).await.expect("chat-admin ran")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "chat-admin failed: {output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("not JSON ({e}): {output:?}"))
}

/// The table's rows split into cells (on runs of two or more spaces).
fn table(output: &Output) -> Vec<Vec<String>> {
    stdout(output)
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_cli_prints_tables_and_json_for_every_subcommand() {
    let mut cluster = redis_cluster(&["--drain-timeout-ms", "1000"]).await;
    let (g0, g1) = (
        cluster.gateway(0).id().to_owned(),
        cluster.gateway(1).id().to_owned(),
    );
    let server = format!("http://{}", admin_addr(cluster.gateway(1)).await.unwrap());
    let admin1 = admin(cluster.gateway(1)).await;
    let mut alice = member(cluster.gateway(0), "Alice", &["lobby", "dev"]).await;
    let mut bob = member(cluster.gateway(1), "Bob", &["lobby"]).await;
    let ack = bob.send("lobby", "hi").await.unwrap();
    eventually(WAIT, || async {
        gateways(&admin1).await.iter().all(|g| g.1 == 1)
    })
    .await;

    // rooms
    let rows = table(&cli(&server, &["rooms"]).await);
    assert_eq!(
        rows[0],
        ["ROOM", "MEMBERS", "LAST MESSAGE", "LAST MESSAGE ID"]
    );
    assert_eq!(rows[1], ["dev", "1", "-", "-"]);
    assert_eq!(rows[2][0..2], ["lobby", "2"]);
    assert_eq!(rows[2][3], ack.id);
    let value = json(&cli(&server, &["rooms", "--json"]).await);
    assert_eq!(value["rooms"][1]["name"], "lobby");
    assert_eq!(value["rooms"][1]["member_count"], 2);
    assert_eq!(value["rooms"][1]["last_message_id"], ack.id.as_str());

    // users, users --room
    let rows = table(&cli(&server, &["users"]).await);
    assert_eq!(rows[0], ["USER", "CONNECTIONS", "GATEWAYS", "ROOMS"]);
    assert_eq!(rows[1], ["Alice", "1", g0.as_str(), "dev,lobby"]);
    assert_eq!(rows[2], ["Bob", "1", g1.as_str(), "lobby"]);
    let rows = table(&cli(&server, &["users", "--room", "dev"]).await);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let value = json(&cli(&server, &["--json", "users", "--room", "lobby"]).await);
    assert_eq!(value["users"][0]["username"], "Alice");
    assert_eq!(
        value["users"][0]["rooms"],
        serde_json::json!(["dev", "lobby"])
    );
    assert_eq!(value["users"][1]["gateway_ids"], serde_json::json!([g1]));
    assert_eq!(value["users"][1]["connections"], 1);

    // gateways
    let rows = table(&cli(&server, &["gateways"]).await);
    assert_eq!(
        rows[0],
        [
            "GATEWAY",
            "ADDRESS",
            "CONNECTIONS",
            "STATE",
            "STARTED",
            "LAST HEARTBEAT"
        ]
    );
    let mut ids: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    ids.sort();
    assert_eq!(ids, sorted(vec![g0.as_str(), g1.as_str()]));
    assert!(
        rows[1..].iter().all(|r| r[2] == "1" && r[3] == "serving"),
        "{rows:?}"
    );
    let value = json(&cli(&server, &["gateways", "--json"]).await);
    let listed = value["gateways"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|g| g["draining"] == false && g["connections"] == 1),
        "{value}"
    );

    // say
    let out = stdout(&cli(&server, &["say", "lobby", "restart at noon"]).await);
    assert!(out.starts_with("posted to lobby as message "), "{out}");
    let (_, username, text, system) = bob
        .wait_for(|f| message_of(f).filter(|m| m.3))
        .await
        .unwrap();
    assert_eq!(
        (username.as_str(), text.as_str(), system),
        ("", "restart at noon", true)
    );
    let value = json(&cli(&server, &["say", "lobby", "again", "--json"]).await);
    assert!(
        value["id"].as_str().is_some_and(|id| id.contains('-')),
        "{value}"
    );

    // kick --room, kick
    let out = stdout(&cli(&server, &["kick", "alice", "--room", "dev"]).await);
    assert_eq!(out, "removed alice from dev: 1 session\n");
    let value = json(&cli(&server, &["kick", "nobody", "--json"]).await);
    assert_eq!(value["sessions_kicked"], 0);
    let out = stdout(&cli(&server, &["kick", "Alice", "--reason", "enough"]).await);
    assert_eq!(out, "kicked Alice: 1 session closed\n");
    assert_eq!(
        alice.wait_closed(WAIT).await.unwrap().map(|c| c.code),
        Some(4001)
    );

    // Errors: one line, non-zero exit.
    let out = cli(&server, &["say", " lobby", "x"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("chat-admin: invalid argument: "),
        "{out:?}"
    );
    let out = cli(&server, &["drain", "gw-nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    let out = cli("http://127.0.0.1:1", &["rooms"]).await;
    assert_eq!(out.status.code(), Some(69));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the admin API at http://127.0.0.1:1"),
        "{out:?}"
    );

    // drain (table) of the other gateway, then (JSON) of the one asked
    eventually(WAIT, || async {
        gateways(&admin1)
            .await
            .iter()
            .any(|g| g.0 == g0 && g.1 == 0)
    })
    .await;
    let out = stdout(&cli(&server, &["drain", &g0]).await);
    assert_eq!(
        out,
        format!("gateway {g0} is draining: 0 connections told to reconnect\n")
    );
    cluster.gateway_mut(0).wait_exit(WAIT).await.unwrap();
    let value = json(&cli(&server, &["drain", &g1, "--json"]).await);
    assert_eq!(
        value,
        serde_json::json!({ "gateway_id": g1, "connections": 1 })
    );
    bob.wait_for(|f| matches!(f.kind, Some(server_frame::Kind::Reconnect(_))).then_some(()))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_cli_needs_the_token_when_one_is_set() {
    let fixture = BackendKind::Memory.setup().await.unwrap();
    let gateway = fixture
        .gateway(BIN, &["--admin-token", "s3cret"])
        .await
        .unwrap();
    let server = format!("http://{}", admin_addr(&gateway).await.unwrap());

    for args in [&["gateways"][..], &["--token", "wrong", "gateways"]] {
        let out = cli(&server, args).await;
        assert_eq!(out.status.code(), Some(77), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("token") && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
    let rows = table(&cli(&server, &["--token", "s3cret", "gateways"]).await);
    assert_eq!(rows[1][0], gateway.id());
}

#[tokio::test]
async fn admin_flags_are_checked_at_startup() {
    // A busy admin port is a startup error that names the flag.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let args = ["--listen", "127.0.0.1:0", "--admin-listen", &addr];
    let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--admin-listen"), "{stderr}");

    // An empty token would silently mean "no token": refused with 64.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token",
        "",
    ];
    let out = run_to_exit(BIN, &args, WAIT).await.unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--admin-token"),
        "{out:?}"
    );
}

/// A drain right after connections opened counts them: the answer comes from
/// the drained gateway (what it told), not from its last heartbeat.
async fn a_drain_reports_the_connections_the_gateway_actually_told(kind: BackendKind) {
    let cluster = redis_cluster_of(kind, &["--drain-timeout-ms", "3000"]).await;
    let g0 = cluster.gateway(0).id().to_owned();
    let admin1 = admin(cluster.gateway(1)).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(member(cluster.gateway(0), &format!("u{i}"), &[]).await);
    }
    let drained = admin1
        .clone()
        .drain_gateway(DrainGatewayRequest { gateway_id: g0 })
        .await
        .unwrap();
    assert_eq!(drained.into_inner().connections, 8);
    for client in &mut clients {
        client
            .wait_for(|f| matches!(f.kind, Some(server_frame::Kind::Reconnect(_))).then_some(()))
            .await
            .unwrap();
    }
}

/// After a gateway crashes, no listing shows its sessions once it has been
/// cleaned up, even though a new process took its id at once.
async fn listings_drop_a_crashed_process_sessions_after_the_cleanup(kind: BackendKind) {
    let mut cluster = redis_cluster_of(kind, &[]).await;
    let admin0 = admin(cluster.gateway(0)).await;
    let _ann = member(cluster.gateway(1), "Ann", &["crash"]).await;
    let _obs = member(cluster.gateway(0), "Obs", &["crash"]).await;
    eventually(WAIT, || async { users(&admin0, "").await.len() == 2 }).await;
    cluster.gateway_mut(1).restart().await.unwrap();
    eventually(WAIT, || async {
        let users = users(&admin0, "").await;
        let rooms = rooms(&admin0).await;
        users.len() == 1 && users[0].0 == "Obs" && rooms == [("crash".to_owned(), 1)]
    })
    .await;
    let listed = gateways(&admin0).await;
    assert_eq!(
        listed.len(),
        2,
        "the restarted gateway is listed once: {listed:?}"
    );
    let g1 = cluster.gateway(1).id();
    assert!(listed.iter().any(|g| g.0 == g1 && g.1 == 0), "{listed:?}");
}
