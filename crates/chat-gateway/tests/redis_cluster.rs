//! Gateways on a real local Redis Cluster (3 primaries, 3 replicas): rooms
//! whose slots are on different shards chatting at once, each on its own
//! shard; a shard that stops answering holding up only its own rooms; a
//! primary SIGKILLed during traffic; a gateway's connections per primary
//! not growing with its rooms; a slot moved to another
//! primary during traffic; a gateway started while a seed node is down.
//!
//! Every room has a publisher on one gateway and a listener on the other,
//! so every message crosses the cluster's pub/sub. A send refused while a
//! shard is unreachable is retried with the same `client_msg_id`, as a
//! client does; afterwards each listener must hold every acknowledged
//! message that the room's stream still holds, exactly once and in order.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_bridge::RedisKeys;
use chat_client::{Client, ClientError};
use chat_proto::v1::server_frame::Kind;
use chat_proto::MessageId;
use chat_test_support::{eventually, key_slot, Backend, Gateway, RedisCluster, RespValue};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

/// Flags that take the per-connection rate limit out of the way.
const FAST: &[&str] = chat_test_support::FAST_SENDS;

/// Bound on every wait (a failover included).
const WAIT: Duration = Duration::from_secs(30);

/// Between one publisher's messages.
const SEND_EVERY: Duration = Duration::from_millis(10);

/// The three primaries at the start (the harness makes nodes 0..3 primaries).
const PRIMARIES: [usize; 3] = [0, 1, 2];

/// The bridge's key names (default prefix).
fn keys() -> RedisKeys {
    RedisKeys::new("chat")
}

/// A room name, not in `taken`, whose slot node `owner` serves now.
async fn room_on(cluster: &RedisCluster, owner: usize, taken: &[String]) -> String {
    for n in 0.. {
        let room = format!("room-{n}");
        if taken.contains(&room) {
            continue;
        }
        let slot = key_slot(&keys().stream(&room));
        if cluster.owner_of_slot(slot).await.unwrap() == owner {
            return room;
        }
    }
    unreachable!("some room hashes to every primary")
}

/// One room per primary, in the order of [`PRIMARIES`].
async fn one_room_per_shard(cluster: &RedisCluster) -> Vec<String> {
    let mut rooms = Vec::new();
    for owner in PRIMARIES {
        let room = room_on(cluster, owner, &rooms).await;
        rooms.push(room);
    }
    rooms
}

/// Two gateways on the cluster.
async fn gateways(cluster: &RedisCluster) -> (Gateway, Gateway) {
    let backend = Backend::redis_cluster(cluster);
    let a = Gateway::start(BIN, &backend, FAST).await.unwrap();
    let b = Gateway::start(BIN, &backend, FAST).await.unwrap();
    (a, b)
}

/// A cluster, two gateways on it, one room per shard, and traffic in every
/// room (dropped in this order).
struct Chatting {
    traffic: Traffic,
    rooms: Vec<String>,
    _gateways: (Gateway, Gateway),
    cluster: RedisCluster,
}

/// Starts [`Chatting`] and waits until every room has had `warm` messages
/// acknowledged.
async fn chatting(warm: usize) -> Chatting {
    let cluster = RedisCluster::start().await.unwrap();
    let (a, b) = gateways(&cluster).await;
    let rooms = one_room_per_shard(&cluster).await;
    let traffic = Traffic::start(&a, &b, &rooms).await;
    traffic.wait_for_more(&[0, 0, 0], warm).await;
    Chatting {
        traffic,
        rooms,
        _gateways: (a, b),
        cluster,
    }
}

/// A room's traffic: a publisher on one gateway, a listener on the other.
struct RoomTraffic {
    room: String,
    /// Ids acknowledged to the publisher, in order.
    acked: Arc<Mutex<Vec<MessageId>>>,
    /// Sends refused (and sent again).
    refused: Arc<AtomicUsize>,
    /// Ids the listener received, in arrival order.
    received: Arc<Mutex<Vec<MessageId>>>,
    publisher: JoinHandle<()>,
    listener: JoinHandle<()>,
}

/// Traffic in every room until stopped.
struct Traffic {
    rooms: Vec<RoomTraffic>,
    stop: CancellationToken,
}

async fn member(gateway: &Gateway, name: &str, room: &str) -> Client {
    let mut client = Client::connect(&gateway.ws_url()).await.unwrap();
    client.set_timeout(WAIT);
    client.hello(name).await.unwrap();
    client.join(room).await.unwrap();
    client
}

impl Traffic {
    /// Joins a listener (on `b`) and a publisher (on `a`) to each room and
    /// starts publishing.
    async fn start(a: &Gateway, b: &Gateway, rooms: &[String]) -> Self {
        let stop = CancellationToken::new();
        let mut out = Vec::new();
        for (r, room) in rooms.iter().enumerate() {
            let received = Arc::new(Mutex::new(Vec::new()));
            let mut listening = member(b, &format!("listener-{r}"), room).await;
            let listener = tokio::spawn({
                let received = received.clone();
                let room = room.clone();
                async move {
                    loop {
                        let frame = next_frame(&mut listening).await;
                        if let Some(Kind::Message(m)) = frame.kind {
                            if m.room == room {
                                received.lock().unwrap().push(m.id.parse().unwrap());
                            }
                        }
                    }
                }
            });
            let acked = Arc::new(Mutex::new(Vec::new()));
            let refused = Arc::new(AtomicUsize::new(0));
            let mut publishing = member(a, &format!("publisher-{r}"), room).await;
            let publisher = tokio::spawn({
                let (acked, refused) = (acked.clone(), refused.clone());
                let (stop, room) = (stop.clone(), room.clone());
                async move {
                    let mut n = 0;
                    while !stop.is_cancelled() {
                        let id = format!("{room}-{n}");
                        let ack = send_until_acked(&mut publishing, &room, &id, &refused).await;
                        acked.lock().unwrap().push(ack);
                        n += 1;
                        tokio::time::sleep(SEND_EVERY).await;
                    }
                }
            });
            out.push(RoomTraffic {
                room: room.clone(),
                acked,
                refused,
                received,
                publisher,
                listener,
            });
        }
        Self { rooms: out, stop }
    }

    /// How many messages each room has had acknowledged so far.
    fn acked_counts(&self) -> Vec<usize> {
        self.rooms
            .iter()
            .map(|r| r.acked.lock().unwrap().len())
            .collect()
    }

    /// Waits until every room has `more` acknowledged messages beyond `from`.
    async fn wait_for_more(&self, from: &[usize], more: usize) {
        eventually(WAIT, || async {
            self.acked_counts()
                .iter()
                .zip(from)
                .all(|(now, then)| *now >= then + more)
        })
        .await;
    }

    /// Stops the publishers (after their current send).
    async fn stop(&mut self) {
        self.stop.cancel();
        for room in &mut self.rooms {
            (&mut room.publisher).await.unwrap();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for room in &self.rooms {
            room.publisher.abort();
            room.listener.abort();
        }
    }
}

/// The next frame of a client that must stay open.
async fn next_frame(client: &mut Client) -> chat_proto::v1::ServerFrame {
    loop {
        match client.next_event_timeout(WAIT).await {
            Ok(Some(frame)) => return frame,
            Ok(None) => continue,
            Err(e) => panic!("a member's connection failed: {e}"),
        }
    }
}

/// Sends until acknowledged, retrying with the same `client_msg_id` while
/// the cluster refuses (UNAVAILABLE during a failover), as a client does.
async fn send_until_acked(
    client: &mut Client,
    room: &str,
    client_msg_id: &str,
    refused: &AtomicUsize,
) -> MessageId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client
            .send_with_id(room, client_msg_id, client_msg_id)
            .await
        {
            Ok(ack) => return ack.id.parse().unwrap(),
            Err(e @ (ClientError::Server { .. } | ClientError::Timeout(_)))
                if tokio::time::Instant::now() < deadline =>
            {
                eprintln!("{client_msg_id}: {e}; sending again");
                refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{client_msg_id}: {e}"),
        }
    }
}

/// The ids the room's stream holds now (read on the slot's primary).
async fn stream_ids(cluster: &RedisCluster, room: &str) -> BTreeSet<MessageId> {
    let key = keys().stream(room);
    let owner = cluster.owner_of_slot(key_slot(&key)).await.unwrap();
    let reply = cluster
        .command(owner, &["XRANGE", &key, "-", "+"])
        .await
        .unwrap();
    let RespValue::Array(Some(entries)) = reply else {
        panic!("XRANGE {key}: {reply:?}");
    };
    entries
        .into_iter()
        .map(|entry| match entry {
            RespValue::Array(Some(parts)) => match &parts[0] {
                RespValue::Bulk(Some(id)) => std::str::from_utf8(id).unwrap().parse().unwrap(),
                other => panic!("entry id {other:?}"),
            },
            other => panic!("entry {other:?}"),
        })
        .collect()
}

/// Checks every room: each acknowledged message that the stream still holds
/// reached the listener exactly once, all in increasing order; returns how
/// many acknowledged messages the cluster no longer holds (a failover may
/// lose the newest writes: replication is asynchronous).
async fn audit(cluster: &RedisCluster, traffic: &Traffic) -> usize {
    let mut lost = 0;
    for room in &traffic.rooms {
        let acked: Vec<MessageId> = room.acked.lock().unwrap().clone();
        let held = stream_ids(cluster, &room.room).await;
        let expected: BTreeSet<MessageId> = acked
            .iter()
            .copied()
            .filter(|id| held.contains(id))
            .collect();
        lost += acked.len() - expected.len();
        eventually(WAIT, || async {
            let received = room.received.lock().unwrap();
            expected.iter().all(|id| received.contains(id))
        })
        .await;
        let received = room.received.lock().unwrap().clone();
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "{}: duplicated or out of order: {received:?}",
            room.room
        );
        eprintln!(
            "{}: {} acknowledged, {} delivered, {} no longer in the stream",
            room.room,
            acked.len(),
            received.len(),
            acked.len() - expected.len()
        );
    }
    lost
}

/// `INFO commandstats` calls of `command` on node `i`.
async fn calls(cluster: &RedisCluster, i: usize, command: &str) -> u64 {
    let RespValue::Bulk(Some(info)) = cluster.command(i, &["INFO", "commandstats"]).await.unwrap()
    else {
        panic!("INFO commandstats");
    };
    let prefix = format!("cmdstat_{command}:calls=");
    String::from_utf8(info)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// The shard channels node `i` has subscribers for.
async fn shard_channels(cluster: &RedisCluster, i: usize) -> BTreeSet<String> {
    match cluster
        .command(i, &["PUBSUB", "SHARDCHANNELS"])
        .await
        .unwrap()
    {
        RespValue::Array(Some(channels)) => channels
            .into_iter()
            .map(|c| match c {
                RespValue::Bulk(Some(c)) => String::from_utf8(c).unwrap(),
                other => panic!("channel {other:?}"),
            })
            .collect(),
        other => panic!("PUBSUB SHARDCHANNELS: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_different_shards_flow_at_once_each_on_its_own_shard() {
    let cluster = RedisCluster::start().await.unwrap();
    let (a, b) = gateways(&cluster).await;
    let rooms = one_room_per_shard(&cluster).await;
    let spublish_before: Vec<u64> = {
        let mut v = Vec::new();
        for p in PRIMARIES {
            v.push(calls(&cluster, p, "spublish").await);
        }
        v
    };
    let mut traffic = Traffic::start(&a, &b, &rooms).await;
    traffic.wait_for_more(&[0, 0, 0], 100).await;
    traffic.stop().await;
    assert_eq!(
        audit(&cluster, &traffic).await,
        0,
        "nothing is lost without a failure"
    );

    for (i, p) in PRIMARIES.into_iter().enumerate() {
        let room = &rooms[i];
        // The room's subscriptions (one per gateway) are on its own shard
        // only, and so is its traffic: with classic pub/sub every node
        // would carry every room's messages.
        let channels = shard_channels(&cluster, p).await;
        assert!(
            channels.contains(&keys().channel(room)),
            "{p}: {channels:?}"
        );
        for other in rooms.iter().filter(|r| *r != room) {
            assert!(
                !channels.contains(&keys().channel(other)),
                "{p}: {channels:?}"
            );
        }
        let numsub = cluster
            .command(p, &["PUBSUB", "SHARDNUMSUB", &keys().channel(room)])
            .await
            .unwrap();
        assert_eq!(
            numsub,
            RespValue::Array(Some(vec![
                RespValue::Bulk(Some(keys().channel(room).into_bytes())),
                RespValue::Integer(2)
            ])),
            "both gateways subscribed on the room's shard"
        );
        let published = calls(&cluster, p, "spublish").await - spublish_before[i];
        let stored = stream_ids(&cluster, room).await.len() as u64;
        assert!(published > 0, "shard {p} published nothing");
        assert!(
            published <= stored + 4,
            "shard {p} published {published} payloads for its room's {stored} messages: only its own room's"
        );
    }
}

/// `connected_clients` of node `i` (the harness's own connection included).
async fn connected_clients(cluster: &RedisCluster, i: usize) -> u64 {
    let RespValue::Bulk(Some(info)) = cluster.command(i, &["INFO", "clients"]).await.unwrap()
    else {
        panic!("INFO clients");
    };
    String::from_utf8(info)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_connections_to_each_primary_do_not_grow_with_its_rooms() {
    let cluster = RedisCluster::start().await.unwrap();
    let backend = Backend::redis_cluster(&cluster);
    let gateway = Gateway::start(BIN, &backend, FAST).await.unwrap();
    // A room on each shard first: a gateway connects to a primary when it
    // first needs it.
    let mut first = Client::connect(&gateway.ws_url()).await.unwrap();
    first.hello("first").await.unwrap();
    for room in one_room_per_shard(&cluster).await {
        first.join(&room).await.unwrap();
    }
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for p in PRIMARIES {
            v.push(connected_clients(&cluster, p).await);
        }
        v
    };
    // 60 rooms, spread over the three shards by their names.
    let mut members = Vec::new();
    for m in 0..2 {
        let mut member = Client::connect(&gateway.ws_url()).await.unwrap();
        member.hello(&format!("member-{m}")).await.unwrap();
        for r in 0..30 {
            member.join(&format!("many-{m}-{r}")).await.unwrap();
        }
        members.push(member);
    }
    for (p, before) in PRIMARIES.into_iter().zip(before) {
        let rooms = shard_channels(&cluster, p).await.len();
        let after = connected_clients(&cluster, p).await;
        eprintln!("primary {p}: {rooms} room channels, clients {before} -> {after}");
        assert!(
            rooms >= 10,
            "the rooms spread over the shards ({rooms} on {p})"
        );
        assert_eq!(
            after, before,
            "one subscriber connection per primary, whatever the rooms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_stops_answering_holds_up_only_its_own_rooms() {
    let Chatting {
        cluster,
        rooms: _,
        mut traffic,
        _gateways,
    } = chatting(20).await;

    // Shard 0 stops answering its clients for a while (its cluster bus goes
    // on, so no failover): the gateways' messages for the other shards'
    // rooms must not wait behind it.
    let pause = Duration::from_secs(4);
    let paused = cluster
        .command(
            PRIMARIES[0],
            &["CLIENT", "PAUSE", &pause.as_millis().to_string(), "ALL"],
        )
        .await
        .unwrap();
    assert_eq!(paused, RespValue::Simple("OK".into()));
    let paused_at = tokio::time::Instant::now();
    // Whatever room 0 had in flight when the pause began is still answered
    // during it; wait until its count stops moving.
    let mut stalled = traffic.acked_counts()[0];
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = traffic.acked_counts()[0];
        if now == stalled {
            break;
        }
        stalled = now;
    }
    let before = traffic.acked_counts();
    let received_before: Vec<usize> = traffic
        .rooms
        .iter()
        .map(|r| r.received.lock().unwrap().len())
        .collect();
    eventually(WAIT, || async {
        let now = traffic.acked_counts();
        (1..3).all(|r| now[r] >= before[r] + 30)
    })
    .await;
    let during = paused_at.elapsed();
    assert!(
        during < pause,
        "the other shards' rooms waited for the paused one ({during:?})"
    );
    assert_eq!(
        traffic.acked_counts()[0],
        before[0],
        "room 0's shard was paused: nothing of it can have been acknowledged"
    );
    for (room, before) in traffic.rooms.iter().zip(&received_before).skip(1) {
        let received = room.received.lock().unwrap().len();
        assert!(received >= before + 30, "{} was not delivered", room.room);
    }
    eprintln!("the other shards' rooms had 30 more messages acknowledged and delivered {during:?} into a {pause:?} pause");
    traffic.wait_for_more(&traffic.acked_counts(), 10).await;
    traffic.stop().await;
    assert_eq!(audit(&cluster, &traffic).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_during_traffic_is_followed_and_nothing_held_is_lost() {
    let Chatting {
        mut cluster,
        rooms,
        mut traffic,
        _gateways,
    } = chatting(30).await;

    // Redis' default (`yes`) makes every shard refuse commands while any
    // slot has no live primary; with `no` the other shards go on serving,
    // and then so must the gateways.
    for node in 0..cluster.len() {
        let set = cluster
            .command(
                node,
                &["CONFIG", "SET", "cluster-require-full-coverage", "no"],
            )
            .await
            .unwrap();
        assert_eq!(set, RespValue::Simple("OK".into()));
    }
    let victim = PRIMARIES[0];
    let replica = cluster.replica_of(victim).await.unwrap().unwrap();
    let refused_before: Vec<usize> = traffic
        .rooms
        .iter()
        .map(|r| r.refused.load(Ordering::Relaxed))
        .collect();
    cluster.kill(victim).await.unwrap();
    let killed_at = tokio::time::Instant::now();
    let at_kill = traffic.acked_counts();
    // The other shards' rooms do not wait for the failover...
    eventually(WAIT, || async {
        let now = traffic.acked_counts();
        (1..3).all(|r| now[r] >= at_kill[r] + 30)
    })
    .await;
    let others_after = killed_at.elapsed();
    // ... and the victim's room comes back without any help.
    traffic.wait_for_more(&at_kill, 30).await;
    let victim_after = killed_at.elapsed();
    eprintln!(
        "after the kill: the other shards' rooms had 30 more messages acknowledged in {others_after:?}, the victim's room in {victim_after:?}"
    );
    for (r, room) in traffic.rooms.iter().enumerate().skip(1) {
        assert_eq!(
            room.refused.load(Ordering::Relaxed),
            refused_before[r],
            "{} is on a live shard: none of its sends may be refused",
            room.room
        );
    }
    assert!(
        others_after < victim_after,
        "the other shards' rooms waited for the failover ({others_after:?} vs {victim_after:?})"
    );
    cluster.wait_until_ok(WAIT).await.unwrap();
    assert_eq!(
        cluster
            .owner_of_slot(key_slot(&keys().stream(&rooms[0])))
            .await
            .unwrap(),
        replica,
        "the replica took over the slot"
    );
    traffic.stop().await;
    let lost = audit(&cluster, &traffic).await;
    eprintln!("{lost} acknowledged messages were not replicated before the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_during_traffic_is_followed_and_nothing_is_lost() {
    let Chatting {
        cluster,
        rooms,
        mut traffic,
        _gateways,
    } = chatting(30).await;

    let slot = key_slot(&keys().stream(&rooms[0]));
    let target = PRIMARIES[1];
    cluster.migrate_slot(slot, target).await.unwrap();
    let at_move = traffic.acked_counts();
    traffic.wait_for_more(&at_move, 30).await;
    // Both gateways follow the slot: their subscriptions are on its new
    // shard, by themselves (Redis dropped them on the old one).
    eventually(WAIT, || async {
        cluster
            .command(
                target,
                &["PUBSUB", "SHARDNUMSUB", &keys().channel(&rooms[0])],
            )
            .await
            .unwrap()
            == RespValue::Array(Some(vec![
                RespValue::Bulk(Some(keys().channel(&rooms[0]).into_bytes())),
                RespValue::Integer(2),
            ]))
    })
    .await;
    traffic.stop().await;
    assert_eq!(
        audit(&cluster, &traffic).await,
        0,
        "a slot move loses nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_while_a_seed_node_is_down() {
    let mut cluster = RedisCluster::start().await.unwrap();
    let seeds = cluster.seeds();
    let down = cluster.replica_of(PRIMARIES[0]).await.unwrap().unwrap();
    cluster.kill(down).await.unwrap();
    // The dead node first: the gateway must go on to the next seed.
    let mut ordered = vec![seeds[down].clone()];
    ordered.extend(
        seeds
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != down)
            .map(|(_, s)| s.clone()),
    );
    let backend = Backend::RedisCluster {
        seeds: ordered.join(","),
        prefix: None,
    };
    let a = Gateway::start(BIN, &backend, FAST).await.unwrap();
    let b = Gateway::start(BIN, &backend, FAST).await.unwrap();
    let rooms = one_room_per_shard(&cluster).await;
    let mut traffic = Traffic::start(&a, &b, &rooms).await;
    traffic.wait_for_more(&[0, 0, 0], 10).await;
    traffic.stop().await;
    assert_eq!(audit(&cluster, &traffic).await, 0);
}
