//! Chaos: three gateways on Redis behind chat-lb, members chatting in
//! overlapping rooms through `chat_client::Resuming`, and one gateway
//! SIGKILLed and restarted with the same id every few seconds, as a
//! supervisor would. Afterwards every acknowledged message reached every
//! member of its room exactly once and in order, nobody was locked out of
//! their name or saw anyone leave, and every room lists exactly its members;
//! on one Redis and on a Redis Cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use chat_client::Client;
use chat_proto::MessageId;
use chat_test_support::{eventually, Audit, BackendKind, Balancer, Cluster, Member};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

const MEMBERS: usize = 12;
const ROOMS: usize = 4;
/// How long gateways keep dying.
const CHAOS: Duration = Duration::from_secs(20);
/// Between one gateway's restart and the next crash.
const CRASH_EVERY: Duration = Duration::from_secs(2);
/// Each member sends this often, to its rooms in turn.
const SEND_EVERY: Duration = Duration::from_millis(300);
/// Bound on every wait for the cluster to settle.
const WAIT: Duration = Duration::from_secs(15);

/// Member `i`'s rooms: its own and the next one, so rooms overlap.
fn rooms_of(i: usize) -> [String; 2] {
    [
        format!("room-{}", i % ROOMS),
        format!("room-{}", (i + 1) % ROOMS),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_crashing_and_restarting_lose_nothing_and_lock_nobody_out() {
    chaos(BackendKind::Redis).await;
}

/// The same on a Redis Cluster: the dead processes' presence, names and
/// indexes are cleaned up across shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_too() {
    chaos(BackendKind::RedisCluster).await;
}

async fn chaos(kind: BackendKind) {
    let mut cluster = Cluster::start(BIN, 3, kind, &[]).await.unwrap();
    let backends: Vec<_> = cluster.gateways().iter().map(|g| g.addr()).collect();
    let lb = Balancer::start(BIN, &backends, &[]).await.unwrap();

    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let member = Member::start(chat_client::ResumeConfig::new(lb.ws_url(), format!("m{i}")))
            .await
            .unwrap();
        for room in rooms_of(i) {
            member.handle().join(&room).await.unwrap();
        }
        members.push(member);
    }
    // Set-up is over once everyone knows every room-mate: from its Joined
    // snapshot or from a JOINED after it. (A JOINED may also repeat a name of
    // the snapshot when two members join a room at the same moment.)
    let room_set = |room: &str| -> BTreeSet<String> {
        (0..MEMBERS)
            .filter(|i| rooms_of(*i).iter().any(|r| r == room))
            .map(|i| format!("m{i}"))
            .collect()
    };
    eventually(WAIT, || async {
        members.iter().enumerate().all(|(i, m)| {
            m.seen(|s| {
                rooms_of(i).iter().all(|room| {
                    let mut known: BTreeSet<String> =
                        s.members.get(room).into_iter().flatten().cloned().collect();
                    known.extend(
                        s.presence
                            .iter()
                            .filter(|p| &p.room == room)
                            .map(|p| p.username.clone()),
                    );
                    known == room_set(room)
                })
            })
        })
    })
    .await;
    // A message through every room after that: once everyone has it, the
    // set-up's presence changes (delivered in order with the room's
    // messages) have all arrived too.
    for room in (0..ROOMS).map(|r| format!("room-{r}")) {
        let sender = &members[(0..MEMBERS).find(|i| rooms_of(*i).contains(&room)).unwrap()];
        let key = sender.handle().send(&room, "ready").await.unwrap();
        let id = eventually(WAIT, || async {
            sender.seen(|s| s.acked.get(&key).map(|a| a.id.clone()))
        })
        .await;
        eventually(WAIT, || async {
            (0..MEMBERS)
                .filter(|i| rooms_of(*i).contains(&room))
                .all(|i| members[i].seen(|s| s.messages[&room].iter().any(|m| m.id == id)))
        })
        .await;
    }
    let presence_after_setup: Vec<usize> = members
        .iter()
        .map(|m| m.seen(|s| s.presence.len()))
        .collect();

    // Everyone chats for as long as the chaos lasts.
    let stop = CancellationToken::new();
    let mut senders = JoinSet::new();
    for (i, member) in members.iter().enumerate() {
        let handle = member.handle().clone();
        let stop = stop.clone();
        senders.spawn(async move {
            let mut keys = Vec::new();
            let mut ticks = tokio::time::interval(SEND_EVERY);
            let rooms = rooms_of(i);
            while !stop.is_cancelled() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {
                        let room = &rooms[keys.len() % rooms.len()];
                        keys.push(handle.send(room, &format!("m{i} #{}", keys.len())).await.unwrap());
                    }
                }
            }
            (i, keys)
        });
    }

    // The chaos: each gateway in turn is killed and restarted at once.
    let end = Instant::now() + CHAOS;
    let mut ticks = tokio::time::interval(CRASH_EVERY);
    ticks.tick().await;
    let mut crashes = 0;
    while Instant::now() < end {
        ticks.tick().await;
        let victim = crashes % 3;
        let id = cluster.gateway(victim).id().to_owned();
        let before: Vec<usize> = members
            .iter()
            .map(|m| m.seen(|s| s.resumptions.len()))
            .collect();
        let hit: Vec<usize> = (0..MEMBERS)
            .filter(|i| members[*i].seen(|s| s.gateway == id))
            .collect();
        cluster.gateway_mut(victim).restart().await.unwrap();
        crashes += 1;
        // Nobody is locked out: every member of the dead process is back, by token.
        for &i in &hit {
            let m = &members[i];
            let back = eventually(WAIT, || async {
                m.seen(|s| {
                    (s.connected && s.resumptions.len() > before[i])
                        .then(|| s.resumptions.last().cloned())
                        .flatten()
                })
            })
            .await;
            assert_eq!(
                back.name_taken,
                0,
                "crash {crashes}: {} waited for its own name",
                m.name()
            );
        }
    }
    stop.cancel();
    let mut sent = vec![Vec::new(); MEMBERS];
    while let Some(done) = senders.join_next().await {
        let (i, keys) = done.unwrap();
        sent[i] = keys;
    }

    // Every send is acknowledged in the end, none refused, nobody stopped.
    for (m, keys) in members.iter().zip(&sent) {
        eventually(WAIT, || async {
            m.seen(|s| keys.iter().all(|k| s.acked.contains_key(k)))
        })
        .await;
        m.seen(|s| {
            assert_eq!(s.refused, [], "{}: refused requests", m.name());
            assert_eq!(s.ended, None, "{} stopped", m.name());
            assert!(s.connected, "{} is not connected", m.name());
        });
    }
    let resumed: usize = members
        .iter()
        .map(|m| m.seen(|s| s.resumptions.len()))
        .sum();
    assert!(
        resumed >= crashes,
        "{crashes} crashes but only {resumed} resumptions"
    );
    let longest = members
        .iter()
        .flat_map(|m| m.seen(|s| s.resumptions.iter().map(|r| r.downtime).collect::<Vec<_>>()))
        .max();
    eprintln!(
        "{crashes} crashes, {resumed} resumptions (longest {longest:?}), {} messages sent",
        sent.iter().map(Vec::len).sum::<usize>()
    );

    // Every acknowledged message reached every member of its room once, in order.
    for room in (0..ROOMS).map(|r| format!("room-{r}")) {
        let expected: BTreeSet<MessageId> = members
            .iter()
            .flat_map(|m| {
                m.seen(|s| {
                    s.acked
                        .values()
                        .filter(|a| a.room == room)
                        .map(|a| a.id.parse().unwrap())
                        .collect::<Vec<MessageId>>()
                })
            })
            .collect();
        assert!(!expected.is_empty());
        for (i, m) in members.iter().enumerate() {
            if !rooms_of(i).contains(&room) {
                continue;
            }
            eventually(WAIT, || async {
                let audit = m.seen(|s| s.audit(&room, &expected));
                (audit == Audit::default()).then_some(()).ok_or(audit)
            })
            .await;
        }
    }

    // Nobody saw anyone leave or come back.
    for (m, before) in members.iter().zip(presence_after_setup) {
        assert_eq!(
            m.seen(|s| s.presence[before..].to_vec()),
            [],
            "{} saw presence changes",
            m.name()
        );
    }

    // Every room lists exactly its members (and the newcomer who asks).
    let mut fresh = Client::connect(&lb.ws_url()).await.unwrap();
    fresh.hello("fresh").await.unwrap();
    for room in (0..ROOMS).map(|r| format!("room-{r}")) {
        let mut want: Vec<String> = (0..MEMBERS)
            .filter(|i| rooms_of(*i).contains(&room))
            .map(|i| format!("m{i}"))
            .chain(["fresh".to_owned()])
            .collect();
        want.sort();
        let joined = fresh.join_with(&room, "", 1).await.unwrap();
        assert_eq!(joined.members, want, "{room}");
        fresh.leave(&room).await.unwrap();
    }
}
