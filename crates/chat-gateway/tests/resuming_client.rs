//! `chat_client::Resuming` against real gateways: a client whose gateway
//! dies comes back at once with its name (by resume token), re-joins from
//! the last message it saw, and nobody sees it leave; a newer session of
//! the same client ends the older one for good.

use std::collections::BTreeSet;
use std::time::Duration;

use chat_client::v1::ErrorCode;
use chat_client::{ClientError, EndReason, ResumeConfig, Resuming};
use chat_proto::MessageId;
use chat_test_support::{eventually, Audit, BackendKind, Balancer, Cluster, Member};

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

/// Bound on every wait for the cluster (kill, restart, resume).
const WAIT: Duration = Duration::from_secs(15);

fn config(url: &str, name: &str) -> ResumeConfig {
    ResumeConfig::new(url, name)
}

/// A member that joined `room` and saw its Joined.
async fn member(url: &str, name: &str, room: &str) -> Member {
    let member = Member::start(config(url, name)).await.unwrap();
    member.handle().join(room).await.unwrap();
    eventually(WAIT, || async {
        member.seen(|s| s.joined.contains_key(room))
    })
    .await;
    member
}

/// Sends `text` from `member` and waits for its Ack; returns the id.
async fn send(member: &Member, room: &str, text: &str) -> MessageId {
    let key = member.handle().send(room, text).await.unwrap();
    eventually(WAIT, || async {
        member.seen(|s| {
            s.acked
                .get(&key)
                .map(|ack| ack.id.parse::<MessageId>().unwrap())
        })
    })
    .await
}

/// The ids every member acknowledged in `room`.
fn acked_in(members: &[&Member], room: &str) -> BTreeSet<MessageId> {
    members
        .iter()
        .flat_map(|m| {
            m.seen(|s| {
                s.acked
                    .values()
                    .filter(|ack| ack.room == room)
                    .map(|ack| ack.id.parse().unwrap())
                    .collect::<Vec<MessageId>>()
            })
        })
        .collect()
}

/// Waits until every member holds exactly `expected` in `room`, once each and in order.
async fn all_received(members: &[&Member], room: &str, expected: &BTreeSet<MessageId>) {
    for member in members {
        eventually(WAIT, || async {
            let audit = member.seen(|s| s.audit(room, expected));
            (audit == Audit::default()).then_some(()).ok_or(audit)
        })
        .await;
    }
}

#[tokio::test]
async fn a_client_is_back_on_its_restarted_gateway_with_its_name_and_nothing_missed() {
    let mut cluster = Cluster::start(BIN, 2, BackendKind::Redis, &[])
        .await
        .unwrap();
    let room = "restart";
    let obs = member(&cluster.gateway(0).ws_url(), "obs", room).await;
    let ann = member(&cluster.gateway(1).ws_url(), "ann", room).await;
    // obs saw ann arrive; nothing about ann may follow.
    eventually(WAIT, || async { obs.seen(|s| s.presence.len()) == 1 }).await;
    send(&obs, room, "before").await;

    // A crash, messages while ann is away, and a supervisor's restart.
    cluster.gateway_mut(1).sigkill().await.unwrap();
    send(&obs, room, "while away 1").await;
    send(&obs, room, "while away 2").await;
    cluster.gateway_mut(1).restart().await.unwrap();

    let resumed = eventually(WAIT, || async {
        ann.seen(|s| s.resumptions.first().cloned())
    })
    .await;
    assert_eq!(
        resumed.name_taken, 0,
        "the token gave the name back at once"
    );
    assert!(resumed.with_token);
    assert_eq!(resumed.welcome.username, "ann");
    assert_eq!(resumed.welcome.gateway_id, cluster.gateway(1).id());
    send(&ann, room, "I am back").await;
    send(&obs, room, "after").await;

    let expected = acked_in(&[&obs, &ann], room);
    assert_eq!(expected.len(), 5);
    all_received(&[&obs, &ann], room, &expected).await;
    assert_eq!(
        obs.seen(|s| s.presence[1..].to_vec()),
        [],
        "obs saw ann leave or join"
    );
}

#[tokio::test]
async fn through_chat_lb_the_clients_of_a_killed_gateway_come_back_on_the_others() {
    let mut cluster = Cluster::start(BIN, 3, BackendKind::Redis, &[])
        .await
        .unwrap();
    let backends: Vec<_> = cluster.gateways().iter().map(|g| g.addr()).collect();
    let lb = Balancer::start(BIN, &backends, &[]).await.unwrap();
    let room = "lb";
    let mut members = Vec::new();
    for i in 0..6 {
        members.push(member(&lb.ws_url(), &format!("m{i}"), room).await);
    }
    // chat-lb spreads them round-robin: every gateway holds some.
    let victim = members[0].seen(|s| s.gateway.clone());
    let index = cluster
        .gateways()
        .iter()
        .position(|g| g.id() == victim)
        .unwrap();
    let (hit, spared): (Vec<&Member>, Vec<&Member>) = members
        .iter()
        .partition(|m| m.seen(|s| s.gateway == victim));
    assert!(!hit.is_empty() && !spared.is_empty());
    // Presence of the set-up is done once everyone saw the last join.
    eventually(WAIT, || async {
        members
            .iter()
            .all(|m| m.seen(|s| s.presence.len() + s.members[room].len()) >= 6)
    })
    .await;
    let presence_before: Vec<usize> = members
        .iter()
        .map(|m| m.seen(|s| s.presence.len()))
        .collect();

    cluster.gateway_mut(index).sigkill().await.unwrap();
    send(spared[0], room, "while they are away").await;
    for m in &hit {
        let resumed = eventually(WAIT, || async {
            m.seen(|s| s.resumptions.first().cloned())
        })
        .await;
        assert_eq!(
            resumed.name_taken,
            0,
            "{} waited for its own name",
            m.name()
        );
        assert_ne!(resumed.welcome.gateway_id, victim);
        send(m, room, &format!("{} is back", m.name())).await;
    }

    let all: Vec<&Member> = members.iter().collect();
    let expected = acked_in(&all, room);
    all_received(&all, room, &expected).await;
    for (m, before) in members.iter().zip(presence_before) {
        let flicker = m.seen(|s| s.presence[before..].to_vec());
        assert_eq!(flicker, [], "{} saw presence changes", m.name());
    }
    // A newcomer sees exactly the six, itself included.
    let mut fresh = chat_client::Client::connect(&lb.ws_url()).await.unwrap();
    fresh.hello("fresh").await.unwrap();
    let joined = fresh.join(room).await.unwrap();
    let mut want: Vec<String> = members.iter().map(|m| m.name().to_owned()).collect();
    want.push("fresh".into());
    want.sort();
    assert_eq!(joined.members, want);
}

#[tokio::test]
async fn a_newer_session_with_the_token_ends_the_older_client_for_good() {
    for kind in [BackendKind::Memory, BackendKind::Redis] {
        let cluster = Cluster::start(BIN, 1, kind, &[]).await.unwrap();
        let url = cluster.gateway(0).ws_url();
        let old = member(&url, "ann", "room").await;
        let token = old.seen(|s| s.token.clone());
        assert!(token.len() >= 22, "at least 128 bits: {token:?}");

        // A wrong token does not take the name.
        let mut wrong = config(&url, "ann");
        wrong.resume_token = format!("{token}x");
        match Resuming::connect(wrong).await {
            Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::UsernameTaken),
            other => panic!("{}: a wrong token got {other:?}", kind.name()),
        }

        let mut takeover = config(&url, "ann");
        takeover.resume_token = token.clone();
        let new = Member::start(takeover).await.unwrap();
        assert_eq!(new.name(), "ann");
        eventually(WAIT, || async {
            old.seen(|s| s.ended.clone()) == Some(EndReason::Replaced)
        })
        .await;
        assert_eq!(
            old.seen(|s| s.resumptions.len()),
            0,
            "the old client came back"
        );

        // The token is spent: it cannot take the name from the new session.
        let mut again = config(&url, "ann");
        again.resume_token = token;
        assert!(
            matches!(
                Resuming::connect(again).await,
                Err(ClientError::Server {
                    code: ErrorCode::UsernameTaken,
                    ..
                })
            ),
            "{}: a spent token took the name",
            kind.name()
        );
        assert_eq!(new.seen(|s| s.ended.clone()), None);
    }
}
