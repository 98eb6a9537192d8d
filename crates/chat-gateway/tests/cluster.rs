//! Many gateways on one real redis-server behave like one server: shared
//! rooms and names, one message order, gapless resume on another gateway,
//! presence that heals after a gateway is SIGKILLed, and no lost or doubled
//! message across a Redis restart.

use std::collections::BTreeMap;
use std::time::Duration;

use chat_bridge::RedisKeys;
use chat_client::{Client, ClientError};
use chat_proto::v1::{presence_change, server_frame, ChatMessage, ErrorCode, ServerFrame};
use chat_proto::{Message as _, MessageId};
use chat_test_support::{eventually, BackendKind, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
/// Senders in these tests must not be slowed by the per-connection rate limit.
const FAST: &[&str] = chat_test_support::FAST_SENDS;

async fn cluster(n: usize) -> Cluster {
    Cluster::start(BIN, n, BackendKind::Redis, FAST)
        .await
        .expect("starting the cluster")
}

async fn member(cluster: &Cluster, gateway: usize, name: &str, room: &str) -> Client {
    let mut client = cluster.gateway(gateway).client(name).await.expect("hello");
    client.join(room).await.expect("join");
    client
}

fn message_of(frame: &ServerFrame) -> Option<(MessageId, String)> {
    match &frame.kind {
        Some(server_frame::Kind::Message(m)) => {
            Some((m.id.parse().expect("well-formed id"), m.text.clone()))
        }
        _ => None,
    }
}

/// Reads pushed messages until `n` have arrived (ids and texts, in arrival order).
async fn collect(client: &mut Client, n: usize) -> Vec<(MessageId, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match client
            .next_event_timeout(Duration::from_secs(15))
            .await
            .expect("connection")
        {
            Some(frame) => got.extend(message_of(&frame)),
            None => panic!("only {} of {n} messages arrived", got.len()),
        }
    }
    got
}

/// Sends message `i` with idempotency key `k{i}`.
async fn send(sender: &mut Client, i: usize) -> (String, Result<chat_proto::v1::Ack, ClientError>) {
    let text = format!("m{i}");
    let result = sender.send_with_id("outage", &text, &format!("k{i}")).await;
    (text, result)
}

fn presence_of(frame: &ServerFrame) -> Option<(String, presence_change::Kind)> {
    match &frame.kind {
        Some(server_frame::Kind::Presence(p)) => Some((p.username.clone(), p.kind())),
        _ => None,
    }
}

#[tokio::test]
async fn gateways_share_rooms_members_presence_and_names() {
    let cluster = cluster(3).await;
    let mut alice = member(&cluster, 0, "Alice", "lobby").await;
    let mut bob = member(&cluster, 1, "Bob", "lobby").await;
    assert_eq!(
        alice.wait_for(presence_of).await.unwrap(),
        ("Bob".to_owned(), presence_change::Kind::Joined),
        "a join on gateway 2 is pushed to gateway 1"
    );
    let mut carol = cluster.gateway(2).client("Carol").await.unwrap();
    let joined = carol.join("lobby").await.unwrap();
    assert_eq!(
        joined.members,
        ["Alice", "Bob", "Carol"],
        "members are cluster-wide and sorted"
    );

    // Messages both ways across gateways.
    let ack = alice.send("lobby", "hi from 1").await.unwrap();
    for client in [&mut bob, &mut carol] {
        let (id, text) = client.wait_for(message_of).await.unwrap();
        assert_eq!(
            (id.to_string(), text.as_str()),
            (ack.id.clone(), "hi from 1")
        );
    }
    let ack = carol.send("lobby", "hi from 3").await.unwrap();
    let text = alice
        .wait_for(|f| {
            message_of(f)
                .filter(|(id, _)| id.to_string() == ack.id)
                .map(|(_, text)| text)
        })
        .await
        .unwrap();
    assert_eq!(text, "hi from 3");

    // A name held on gateway 1 is refused on gateway 2, case-insensitively.
    let mut impostor = cluster.gateway(1).connect().await.unwrap();
    let err = impostor.hello("alice").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UsernameTaken), "{err}");

    // Leaving is seen on the other gateways, and the name is free again.
    drop(bob);
    assert_eq!(
        alice.wait_for(presence_of).await.unwrap(),
        ("Bob".to_owned(), presence_change::Kind::Left)
    );
    eventually(Duration::from_secs(5), || async {
        let mut c = cluster.gateway(2).connect().await.unwrap();
        c.hello("bob").await.is_ok()
    })
    .await;
    let (status, body) = cluster.gateway(2).get("/api/rooms").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(r#"{"name":"lobby","members":2}"#), "{body}");
}

#[tokio::test]
async fn concurrent_senders_on_different_gateways_give_everyone_one_order() {
    const PER_SENDER: usize = 60;
    let cluster = cluster(3).await;
    let mut receivers = Vec::new();
    for g in 0..3 {
        receivers.push(member(&cluster, g, &format!("reader{g}"), "race").await);
    }
    let mut senders = Vec::new();
    for g in 0..3 {
        senders.push(member(&cluster, g, &format!("writer{g}"), "race").await);
    }
    let total = PER_SENDER * senders.len();
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(g, mut sender)| {
            tokio::spawn(async move {
                for i in 0..PER_SENDER {
                    sender
                        .send("race", &format!("w{g}-{i}"))
                        .await
                        .expect("send");
                }
                sender
            })
        })
        .collect();
    let mut sequences = Vec::new();
    for receiver in &mut receivers {
        sequences.push(collect(receiver, total).await);
    }
    for task in sending {
        task.await.unwrap();
    }
    let first = &sequences[0];
    assert!(
        first.windows(2).all(|w| w[0].0 < w[1].0),
        "ids strictly increase in delivery order"
    );
    let mut texts: Vec<&str> = first.iter().map(|(_, t)| t.as_str()).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len(), total, "no gap and no duplicate");
    for (g, other) in sequences.iter().enumerate().skip(1) {
        assert_eq!(other, first, "receiver on gateway {g} saw another order");
    }
}

#[tokio::test]
async fn resume_on_another_gateway_is_gapless_while_others_publish() {
    const SENT: usize = 150;
    let cluster = cluster(3).await;
    let mut talker = member(&cluster, 1, "talker", "resume").await;
    let mut mover = member(&cluster, 0, "mover", "resume").await;

    let sending = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..SENT {
            ids.push(
                talker
                    .send("resume", &format!("m{i}"))
                    .await
                    .expect("send")
                    .id,
            );
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        (talker, ids)
    });

    // Read a few, then vanish mid-stream.
    let seen = collect(&mut mover, 20).await;
    let last = seen.last().unwrap().0;
    drop(mover);

    // Come back on another gateway (the name frees within 5 s) with since_id.
    let mut back = eventually(Duration::from_secs(10), || async {
        let mut c = cluster.gateway(2).connect().await.ok()?;
        c.hello("mover").await.ok()?;
        Some(c)
    })
    .await;
    let joined = back
        .join_with("resume", &last.to_string(), 0)
        .await
        .unwrap();
    assert!(!joined.history_truncated);
    let mut after: Vec<MessageId> = joined
        .history
        .iter()
        .map(|m| m.id.parse().unwrap())
        .collect();
    let (_talker, acked) = sending.await.unwrap();
    let acked: Vec<MessageId> = acked.iter().map(|id| id.parse().unwrap()).collect();
    let expected: Vec<MessageId> = acked.iter().copied().filter(|id| *id > last).collect();
    while after.len() < expected.len() {
        match back
            .next_event_timeout(Duration::from_secs(10))
            .await
            .unwrap()
        {
            Some(frame) => after.extend(message_of(&frame).map(|(id, _)| id)),
            None => break,
        }
    }
    assert_eq!(
        after, expected,
        "replay + live after since_id: every message once, in order"
    );
    let mut all: Vec<MessageId> = seen.iter().map(|(id, _)| *id).collect();
    all.extend(&after);
    assert_eq!(
        all, acked,
        "before and after the move together are the whole sequence"
    );
}

/// How soon the users of a crashed gateway who do not come back are shown
/// leaving, and their names are free (issue 16: 5 s).
const DEAD_NOTICED: Duration = Duration::from_secs(5);

#[tokio::test]
async fn sigkilled_gateway_users_leave_everywhere_within_5_seconds() {
    let mut cluster = cluster(2).await;
    let mut alice = member(&cluster, 0, "alice", "crash").await;
    let _bob = member(&cluster, 1, "bob", "crash").await;
    alice.wait_for(presence_of).await.unwrap();

    let started = std::time::Instant::now();
    cluster.gateway_mut(1).sigkill().await.unwrap();
    alice.set_timeout(DEAD_NOTICED);
    assert_eq!(
        alice.wait_for(presence_of).await.expect("LEFT within 5 s"),
        ("bob".to_owned(), presence_change::Kind::Left)
    );
    assert!(started.elapsed() < DEAD_NOTICED, "{:?}", started.elapsed());

    // Everywhere: a new member's snapshot is right, and the name is free.
    let mut carol = cluster.gateway(0).client("carol").await.unwrap();
    assert_eq!(
        carol.join("crash").await.unwrap().members,
        ["alice", "carol"]
    );
    let mut new_bob = cluster.gateway(0).connect().await.unwrap();
    new_bob
        .hello("bob")
        .await
        .expect("the dead gateway's name is free");
    assert!(started.elapsed() < DEAD_NOTICED, "{:?}", started.elapsed());
}

/// A Hello with `token` for `name` on `gateway`.
async fn resume(cluster: &Cluster, gateway: usize, name: &str, token: &str) -> Client {
    let mut client = cluster.gateway(gateway).connect().await.unwrap();
    client
        .hello_with(chat_proto::v1::Hello {
            username: name.to_owned(),
            resume_token: token.to_owned(),
            ..Default::default()
        })
        .await
        .expect("the token takes the name over");
    client
}

/// Sends `text` and checks that it is the next event of the sender and of
/// `observer`: nothing else (no PresenceChange) reached them before it.
async fn marker(sender: &mut Client, observer: &mut Client, room: &str, text: &str) {
    let ack = sender.send(room, text).await.unwrap();
    for client in [sender, observer] {
        let next = client.next_event().await.unwrap();
        assert_eq!(
            message_of(&next).map(|(id, text)| (id.to_string(), text)),
            Some((ack.id.clone(), text.to_owned())),
            "expected only the marker, got {next:?}"
        );
    }
}

#[tokio::test]
async fn a_session_is_taken_over_from_another_gateway_without_presence_flicker() {
    let cluster = cluster(2).await;
    let mut observer = member(&cluster, 0, "obs", "x").await;
    observer.join("y").await.unwrap();
    let mut ann = cluster.gateway(1).connect().await.unwrap();
    let token = ann.hello("ann").await.unwrap().resume_token;
    ann.join("x").await.unwrap();
    ann.join("y").await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            observer.wait_for(presence_of).await.unwrap(),
            ("ann".to_owned(), presence_change::Kind::Joined)
        );
    }

    let mut again = resume(&cluster, 0, "ann", &token).await;
    let close = ann.wait_closed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(close.map(|c| c.code), Some(4002));
    let error = ann.buffered_events().find_map(|f| match &f.kind {
        Some(server_frame::Kind::Error(e)) => Some((e.code(), f.r#ref)),
        _ => None,
    });
    assert_eq!(error, Some((ErrorCode::SessionReplaced, 0)));
    for room in ["x", "y"] {
        again.join(room).await.unwrap();
        marker(&mut again, &mut observer, room, room).await;
    }
}

#[tokio::test]
async fn a_gateway_restarted_after_a_crash_frees_what_its_process_held_and_returns_it_by_token() {
    let mut cluster = cluster(2).await;
    let mut observer = member(&cluster, 0, "obs", "r").await;
    let mut ann = cluster.gateway(1).connect().await.unwrap();
    ann.hello("ann").await.unwrap();
    ann.join("r").await.unwrap();
    let mut bob = cluster.gateway(1).connect().await.unwrap();
    let token = bob.hello("bob").await.unwrap().resume_token;
    bob.join("r").await.unwrap();
    for _ in 0..2 {
        observer.wait_for(presence_of).await.unwrap();
    }

    // SIGKILL and an immediate restart with the same id, as a supervisor does.
    let crashed = std::time::Instant::now();
    cluster.gateway_mut(1).restart().await.unwrap();
    // Bob comes back at once with his token, on the restarted gateway.
    let mut bob = resume(&cluster, 1, "bob", &token).await;
    let back = crashed.elapsed();
    assert!(
        back < Duration::from_secs(2),
        "welcomed {back:?} after the crash"
    );
    let joined = bob.join("r").await.unwrap();
    assert_eq!(
        joined.members,
        ["ann", "bob", "obs"],
        "ann not cleaned up yet"
    );

    // Ann does not come back: everyone sees her leave, within 5 s of the crash.
    observer.set_timeout(DEAD_NOTICED);
    assert_eq!(
        observer.wait_for(presence_of).await.unwrap(),
        ("ann".to_owned(), presence_change::Kind::Left)
    );
    assert!(crashed.elapsed() < DEAD_NOTICED, "{:?}", crashed.elapsed());
    assert_eq!(
        bob.wait_for(presence_of).await.unwrap(),
        ("ann".to_owned(), presence_change::Kind::Left)
    );
    // ... and nothing about Bob, who never left.
    marker(&mut bob, &mut observer, "r", "bob is back").await;
    let mut new_ann = cluster.gateway(0).connect().await.unwrap();
    new_ann.hello("ann").await.expect("her name is free again");
    assert!(crashed.elapsed() < DEAD_NOTICED, "{:?}", crashed.elapsed());

    // Nothing of the crashed process is left in Redis.
    use chat_test_support::RespValue;
    let keys = keys();
    assert_eq!(
        strings(redis_cmd(&cluster, &["HKEYS", &keys.members("r")]).await),
        ["bob", "obs"]
    );
    assert_eq!(
        redis_cmd(&cluster, &["HLEN", &keys.instances()]).await,
        RespValue::Integer(2),
        "one instance per live gateway"
    );
}

#[tokio::test]
async fn a_second_live_gateway_with_the_same_id_exits_78() {
    let cluster = cluster(1).await;
    let id = cluster.gateway(0).id().to_owned();
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--gateway-id",
        &id,
    ]
    .map(str::to_owned)
    .into();
    args.extend(cluster.backend().args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = chat_test_support::run_to_exit(BIN, &args, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("chat-gateway:"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("gateway id {id} is in use"))
            && line.contains(&cluster.gateway(0).addr().to_string()),
        "one line saying which id is in use and where: {stderr}"
    );
    // The live one was not disturbed.
    let mut client = cluster.gateway(0).client("still-here").await.unwrap();
    client.join("r").await.unwrap();
}

#[tokio::test]
async fn redis_restart_loses_nothing_that_was_acked() {
    let mut cluster = cluster(2).await;
    let mut sender = member(&cluster, 0, "sender", "outage").await;
    let mut near = member(&cluster, 0, "near", "outage").await;
    let mut far = member(&cluster, 1, "far", "outage").await;

    let mut acked: BTreeMap<MessageId, String> = BTreeMap::new();
    let mut unavailable = 0;
    for i in 0..20 {
        let (text, result) = send(&mut sender, i).await;
        acked.insert(result.expect("redis is up").id.parse().unwrap(), text);
    }

    cluster.redis_mut().unwrap().kill().await.unwrap();
    // While Redis is down: UNAVAILABLE, never an Ack.
    let mut pending = Vec::new();
    for i in 20..30 {
        let (text, result) = send(&mut sender, i).await;
        match result {
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            }) => {
                unavailable += 1;
                pending.push((i, text));
            }
            Err(e) => panic!("unexpected error while redis is down: {e}"),
            Ok(ack) => panic!("acked {ack:?} while redis is down"),
        }
    }
    assert_eq!(unavailable, 10);
    let (status, _) = cluster.gateway(0).get("/healthz").await.unwrap();
    assert_eq!(status, 200, "health stays 200 while redis is down");
    let metric = cluster.gateway(0).metric("chat_bridge_up").await.unwrap();
    assert_eq!(metric, Some(0.0));

    cluster.redis_mut().unwrap().restart().await.unwrap();
    // Retry what was refused, with the same keys, until accepted.
    for (i, _) in pending {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let (text, ack) = loop {
            match send(&mut sender, i).await {
                (text, Ok(ack)) => break (text, ack),
                (_, Err(e)) if std::time::Instant::now() < deadline => {
                    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
                    // Retry back-off while Redis comes back, as a client would.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (_, Err(e)) => panic!("still failing 20 s after redis came back: {e}"),
            }
        };
        acked.insert(ack.id.parse().unwrap(), text);
    }
    for i in 30..40 {
        let (text, result) = send(&mut sender, i).await;
        acked.insert(result.expect("redis is back").id.parse().unwrap(), text);
    }

    let expected: Vec<(MessageId, String)> = acked.into_iter().collect();
    for client in [&mut near, &mut far] {
        let got = collect(client, expected.len()).await;
        assert_eq!(got, expected, "every acked message exactly once, in order");
        let extra = client
            .next_event_timeout(Duration::from_millis(300))
            .await
            .unwrap();
        assert!(
            extra.as_ref().and_then(message_of).is_none(),
            "nothing doubled: {extra:?}"
        );
    }
    assert_eq!(
        cluster.gateway(1).metric("chat_bridge_up").await.unwrap(),
        Some(1.0)
    );
}

/// The names of the Redis keys the gateways use (with their default
/// `--redis-prefix`, as the clusters here start them): only chat-bridge
/// spells out key names.
fn keys() -> RedisKeys {
    use clap::Parser as _;
    let config = chat_gateway::Config::parse_from(["chat-gateway"]);
    RedisKeys::new(&config.redis_prefix)
}

async fn redis_cmd(cluster: &Cluster, args: &[&str]) -> chat_test_support::RespValue {
    cluster.redis().unwrap().command(args).await.unwrap()
}

/// The strings of an array reply, sorted.
fn strings(value: chat_test_support::RespValue) -> Vec<String> {
    use chat_test_support::RespValue;
    let RespValue::Array(Some(items)) = value else {
        panic!("expected an array, got {value:?}")
    };
    let mut out: Vec<String> = items
        .into_iter()
        .map(|item| match item {
            RespValue::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
            other => panic!("expected a string, got {other:?}"),
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_gateway_that_exits_cleanly_leaves_the_cluster_at_once() {
    use chat_test_support::RespValue;
    let mut cluster = cluster(2).await;
    let id = cluster.gateway(1).id().to_owned();
    let _member = member(&cluster, 1, "leaver", "exit").await;
    let keys = keys();
    eventually(Duration::from_secs(5), || async {
        redis_cmd(&cluster, &["HEXISTS", &keys.gateways(), &id]).await == RespValue::Integer(1)
    })
    .await;

    let instance = strings(redis_cmd(&cluster, &["HKEYS", &keys.instances()]).await)
        .into_iter()
        .find(|instance| instance.starts_with(&format!("{id}~")))
        .expect("the gateway's instance is registered");
    let alive = keys.alive(&instance);
    assert_eq!(
        redis_cmd(&cluster, &["EXISTS", &alive]).await,
        RespValue::Integer(1)
    );

    cluster.gateway(1).sigterm().unwrap();
    let status = cluster
        .gateway_mut(1)
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap();
    assert!(status.success(), "drained and exited with {status}");
    // Gone at once, not when the heartbeat expires; its member too.
    assert_eq!(
        redis_cmd(&cluster, &["HEXISTS", &keys.gateways(), &id]).await,
        RespValue::Integer(0)
    );
    assert_eq!(
        redis_cmd(&cluster, &["EXISTS", &alive]).await,
        RespValue::Integer(0)
    );
    assert_eq!(
        redis_cmd(&cluster, &["HEXISTS", &keys.instances(), &instance]).await,
        RespValue::Integer(0)
    );
    assert_eq!(
        redis_cmd(&cluster, &["HLEN", &keys.members("exit")]).await,
        RespValue::Integer(0)
    );
}

/// A payload a gateway cannot decode on a room channel (a newer gateway's
/// format, say) makes it re-read the room's stream: the message behind that
/// payload is still delivered, once, and in order.
#[tokio::test]
async fn an_undecodable_room_payload_is_recovered_from_the_stream() {
    let cluster = cluster(1).await;
    let mut alice = member(&cluster, 0, "alice", "lobby").await;
    alice.send("lobby", "first").await.expect("ack");
    assert_eq!(collect(&mut alice, 1).await[0].1, "first");

    // Stored by a writer whose pub/sub notice this gateway cannot read.
    let body = ChatMessage {
        username: "bob".into(),
        text: "from a newer gateway".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let body = String::from_utf8(body).expect("an ASCII-only message encodes as UTF-8");
    let keys = keys();
    redis_cmd(&cluster, &["XADD", &keys.stream("lobby"), "*", "m", &body]).await;
    redis_cmd(
        &cluster,
        &["PUBLISH", &keys.channel("lobby"), "Za future format"],
    )
    .await;

    alice.send("lobby", "after").await.expect("ack");
    let got: Vec<String> = collect(&mut alice, 2)
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(got, ["from a newer gateway", "after"]);
    let extra = alice
        .next_event_timeout(Duration::from_millis(300))
        .await
        .expect("connection");
    assert!(extra.is_none(), "nothing twice: {extra:?}");
}

/// Issue 14's attack, exactly: a room named `lobby}:dedupe:5:alice:z` and a
/// Send with client_msg_id `z}:members` used to write into the room `lobby`'s
/// keys (WRONGTYPE half-way through a batch: stored but never published, and
/// other people's Sends refused). Names are encoded into keys now: every
/// Send is acked and delivered live, and `lobby`'s keys keep their types.
#[tokio::test]
async fn no_room_name_or_message_id_can_reach_another_rooms_keys() {
    use chat_proto::v1::{client_frame, Send};
    let cluster = cluster(1).await;
    let mut bob = member(&cluster, 0, "bob", "lobby").await;
    let mut carol = member(&cluster, 0, "carol", "lobby").await;
    bob.wait_for(presence_of).await.unwrap();
    let forged_rooms = [
        "lobby}:dedupe:5:alice:z",
        "lobby}:stream",
        "}lobby",
        "{lobby}",
    ];
    let mut alice = cluster.gateway(0).client("alice").await.unwrap();
    for room in forged_rooms {
        alice.join(room).await.unwrap();
    }
    let rounds = 20;
    let (mut alice_refs, mut bob_refs) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        for room in forged_rooms {
            let send = Send {
                room: room.to_owned(),
                text: format!("poison {i}"),
                client_msg_id: format!("z}}:members{i}"),
            };
            alice_refs.push(alice.start(client_frame::Kind::Send(send)).await.unwrap());
        }
        let send = Send {
            room: "lobby".to_owned(),
            text: format!("b{i}"),
            client_msg_id: format!("k{i}"),
        };
        bob_refs.push(bob.start(client_frame::Kind::Send(send)).await.unwrap());
    }
    for (client, refs) in [(&mut alice, alice_refs), (&mut bob, bob_refs)] {
        for r in refs {
            let reply = client.wait_reply(r).await.unwrap();
            assert!(
                matches!(reply.kind, Some(server_frame::Kind::Ack(_))),
                "every Send is acked: {reply:?}"
            );
        }
    }
    let got = collect(&mut carol, rounds).await;
    let texts: Vec<String> = got.into_iter().map(|(_, text)| text).collect();
    let expected: Vec<String> = (0..rounds).map(|i| format!("b{i}")).collect();
    assert_eq!(texts, expected, "delivered live, in order");
    use chat_test_support::RespValue;
    let keys = keys();
    for (key, kind) in [
        (keys.members("lobby"), "hash"),
        (keys.stream("lobby"), "stream"),
    ] {
        assert_eq!(
            redis_cmd(&cluster, &["TYPE", &key]).await,
            RespValue::Simple(kind.to_owned()),
            "{key}"
        );
    }
}

/// Random room names and message ids made of `{`, `}`, `:`, `*` and letters:
/// every Send is acked and delivered live to another member.
#[tokio::test]
async fn random_names_made_of_key_syntax_are_all_delivered() {
    let cluster = cluster(1).await;
    let mut seed: u64 = std::env::var("CHAT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(chat_client::now_ms);
    eprintln!("seed {seed} (set CHAT_TEST_SEED to replay)");
    let mut next = move || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    };
    let alphabet = ['{', '}', ':', '*', 'a', 'b', 'z'];
    let mut word = |max: u64| -> String {
        let len = 1 + next() % max;
        (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect()
    };
    let mut sender = cluster.gateway(0).client("sender").await.unwrap();
    let mut listener = cluster.gateway(0).client("listener").await.unwrap();
    for i in 0..20 {
        let room = word(12);
        let id = word(20);
        listener.join(&room).await.unwrap();
        sender.join(&room).await.unwrap();
        let text = format!("m{i}");
        let ack = sender
            .send_with_id(&room, &text, &id)
            .await
            .unwrap_or_else(|e| panic!("room {room:?}, id {id:?}: {e}"));
        let message = listener
            .wait_for(|f| match &f.kind {
                Some(server_frame::Kind::Message(m)) if m.room == room => Some(m.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!((message.id, message.text), (ack.id, text), "room {room:?}");
        sender.leave(&room).await.unwrap();
        listener.leave(&room).await.unwrap();
    }
}

/// Rooms nobody is in expire `--room-ttl` after their last message; a room
/// with members does not.
#[tokio::test]
async fn an_empty_room_expires_after_the_room_ttl() {
    use chat_test_support::RespValue;
    let args: Vec<&str> = FAST.iter().copied().chain(["--room-ttl", "2s"]).collect();
    let cluster = Cluster::start(BIN, 1, BackendKind::Redis, &args)
        .await
        .unwrap();
    let mut ann = member(&cluster, 0, "ann", "kept").await;
    ann.send("kept", "still here").await.unwrap();
    ann.join("gone").await.unwrap();
    ann.send("gone", "soon gone").await.unwrap();
    let keys = keys();
    assert_eq!(
        redis_cmd(&cluster, &["PTTL", &keys.stream("gone")]).await,
        RespValue::Integer(-1),
        "no expiry while someone is in the room"
    );
    ann.leave("gone").await.unwrap();
    eventually(Duration::from_secs(10), || async {
        redis_cmd(&cluster, &["EXISTS", &keys.stream("gone")]).await == RespValue::Integer(0)
    })
    .await;
    let mut bob = cluster.gateway(0).client("bob").await.unwrap();
    assert!(bob.join("gone").await.unwrap().history.is_empty());
    assert_eq!(bob.join("kept").await.unwrap().history.len(), 1);
    assert_eq!(
        redis_cmd(&cluster, &["PTTL", &keys.stream("kept")]).await,
        RespValue::Integer(-1)
    );
}

/// `/api/rooms` costs the same whatever the number of rooms: the ranking
/// index and one HLEN for each of the (at most 50) rooms listed.
#[tokio::test]
async fn the_room_list_costs_the_same_whatever_the_number_of_rooms() {
    use chat_test_support::RespValue;
    let args: Vec<&str> = FAST.iter().copied().chain(["--max-rooms", "200"]).collect();
    let cluster = Cluster::start(BIN, 1, BackendKind::Redis, &args)
        .await
        .unwrap();
    let mut busy = cluster.gateway(0).client("busy").await.unwrap();
    let mut other = cluster.gateway(0).client("other").await.unwrap();
    for i in 0..120 {
        busy.join(&format!("room-{i:03}")).await.unwrap();
    }
    other.join("room-007").await.unwrap();
    redis_cmd(&cluster, &["CONFIG", "RESETSTAT"]).await;
    let (status, body) = cluster.gateway(0).get("/api/rooms").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rooms = listed["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 50, "at most the 50 busiest");
    assert_eq!(rooms[0]["name"], "room-007", "the busiest first: {body}");
    assert_eq!(rooms[0]["members"], 2);
    let RespValue::Bulk(Some(stats)) = redis_cmd(&cluster, &["INFO", "commandstats"]).await else {
        panic!("no stats")
    };
    let stats = String::from_utf8(stats).unwrap();
    let calls = |command: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(calls("hlen") <= 50, "{stats}");
    assert_eq!(calls("xrevrange"), 0, "{stats}");
    assert_eq!(calls("smembers"), 0, "{stats}");
}

/// Liveness costs a few Redis commands per gateway per second (issue 16):
/// an idle gateway's beat is one pipelined SET + 2 HSET, and its reaper one
/// HGETALL (+ one MGET when there are others to check).
#[tokio::test]
async fn an_idle_gateway_costs_a_few_redis_commands_a_second() {
    use chat_test_support::RespValue;
    let cluster = cluster(1).await;
    let stats = || async {
        let RespValue::Bulk(Some(stats)) = redis_cmd(&cluster, &["INFO", "commandstats"]).await
        else {
            panic!("no stats")
        };
        let stats = String::from_utf8(stats).unwrap();
        let mut beats = 0u64;
        let mut total = 0u64;
        for line in stats.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(":calls="))
            else {
                continue;
            };
            let calls: u64 = rest.split(',').next().unwrap().parse().unwrap();
            if name == "set" {
                beats = calls;
            }
            if !matches!(name, "info" | "config") {
                total += calls;
            }
        }
        (beats, total)
    };
    redis_cmd(&cluster, &["CONFIG", "RESETSTAT"]).await;
    // Wait for the beats themselves, not for a time.
    let (beats, total) = loop {
        let (beats, total) = stats().await;
        if beats >= 4 {
            break (beats, total);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        total <= beats * 5,
        "{total} commands for {beats} beats: more than 5 a beat"
    );
}
