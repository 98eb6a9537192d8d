//! Tests of the embedded backend.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::{
    BridgeEvent, ClusterAdmin, ControlCommand, EventSink, Lifecycle, Member, NewMessage, Presence,
    RoomLog, TokenHash,
};

/// Records every event delivered.
#[derive(Default)]
struct Recorder(Mutex<Vec<BridgeEvent>>);

impl EventSink for Recorder {
    fn deliver(&self, event: BridgeEvent) {
        self.0.lock().push(event);
    }
}

impl Recorder {
    fn controls(&self) -> Vec<ControlCommand> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| match e {
                BridgeEvent::Control(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

fn member(session: &str, name: &str) -> Member {
    Member {
        session_id: session.into(),
        key: name.to_lowercase(),
        username: name.into(),
    }
}

fn bridge() -> (MemoryBridge, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    (
        MemoryBridge::new(10, recorder.clone()).with_gateway("gw-a", "10.0.0.1:8080"),
        recorder,
    )
}

#[tokio::test]
async fn users_rooms_and_the_gateway_are_listed() {
    let (bridge, _) = bridge();
    let (ann, bo, cy) = (member("s1", "Ann"), member("s2", "Bo"), member("s3", "Cy"));
    for m in [&ann, &bo, &cy] {
        assert!(bridge.claim_username(m, &hash()).await.unwrap());
    }
    bridge.enter_room("lobby", &ann).await.unwrap();
    bridge.enter_room("lobby", &bo).await.unwrap();
    bridge.enter_room("dev", &bo).await.unwrap();
    let users = bridge.users(None).await.unwrap();
    let rows: Vec<_> = users
        .iter()
        .map(|u| (u.username.as_str(), u.rooms.clone(), u.connections))
        .collect();
    assert_eq!(
        rows,
        [
            ("Ann", vec!["lobby".to_owned()], 1),
            ("Bo", vec!["dev".to_owned(), "lobby".to_owned()], 1),
            ("Cy", vec![], 1)
        ]
    );
    assert!(users.iter().all(|u| u.gateway_ids == ["gw-a"]));
    let in_dev: Vec<_> = bridge
        .users(Some("dev"))
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(in_dev, ["bo"]);

    let rooms: Vec<_> = bridge
        .room_overview()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.member_count))
        .collect();
    assert_eq!(rooms, [("dev".to_owned(), 1), ("lobby".to_owned(), 2)]);
    // A room without members stays listed while its last message is recent.
    bridge.leave_room("dev", &bo).await.unwrap();
    let msg = NewMessage {
        room: "news".into(),
        sender_key: String::new(),
        username: String::new(),
        text: "hi".into(),
        client_msg_id: String::new(),
        system: true,
    };
    let accepted = bridge.publish(msg).await.unwrap();
    let rooms = bridge.room_overview().await.unwrap();
    assert_eq!(
        rooms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["lobby", "news"]
    );
    assert_eq!(rooms[1].last_message_id, Some(accepted.id));

    bridge.set_load(3, true);
    let gateways = bridge.gateways().await.unwrap();
    assert_eq!(gateways.len(), 1);
    assert_eq!(
        (gateways[0].id.as_str(), gateways[0].address.as_str()),
        ("gw-a", "10.0.0.1:8080")
    );
    assert_eq!((gateways[0].connections, gateways[0].draining), (3, true));
}

#[tokio::test]
async fn kicks_count_sessions_and_reach_the_sink() {
    let (bridge, recorder) = bridge();
    let ann = member("s1", "Ann");
    bridge.claim_username(&ann, &hash()).await.unwrap();
    bridge.enter_room("lobby", &ann).await.unwrap();
    assert_eq!(bridge.kick("nobody", None, "x").await.unwrap(), 0);
    assert_eq!(bridge.kick("ann", Some("dev"), "x").await.unwrap(), 0);
    assert!(recorder.controls().is_empty(), "nothing is sent for nobody");
    assert_eq!(
        bridge
            .kick("ann", Some("lobby"), "off topic")
            .await
            .unwrap(),
        1
    );
    assert_eq!(bridge.kick("ann", None, "spam").await.unwrap(), 1);
    assert_eq!(
        recorder.controls(),
        [
            ControlCommand::Kick {
                key: "ann".into(),
                room: Some("lobby".into()),
                reason: "off topic".into()
            },
            ControlCommand::Kick {
                key: "ann".into(),
                room: None,
                reason: "spam".into()
            },
        ]
    );
}

#[tokio::test]
async fn only_this_gateway_can_be_drained_and_it_answers_what_it_told() {
    let (bridge, recorder) = bridge();
    let bridge = Arc::new(bridge);
    bridge.set_load(2, false);
    assert_eq!(bridge.drain_gateway("gw-b").await.unwrap(), None);
    assert!(recorder.controls().is_empty());
    let asking = tokio::spawn({
        let bridge = bridge.clone();
        async move { bridge.drain_gateway("gw-a").await }
    });
    let reply_to = loop {
        if let Some(ControlCommand::Drain { reply_to }) = recorder.controls().pop() {
            break reply_to.expect("a drain request waits for its answer");
        }
        tokio::task::yield_now().await;
    };
    // The answer is what the gateway told, not its last reported load.
    bridge.drained(&reply_to, 5).await;
    assert_eq!(asking.await.unwrap().unwrap(), Some(5));
}

fn hash() -> TokenHash {
    crate::ResumeToken::generate().hash().clone()
}

#[tokio::test]
async fn a_resume_hands_over_name_and_presence_silently_once() {
    let (bridge, recorder) = bridge();
    let token = crate::ResumeToken::generate();
    let first = member("s1", "Ann");
    assert!(bridge.claim_username(&first, token.hash()).await.unwrap());
    bridge.subscribe("lobby").await.unwrap();
    bridge.enter_room("lobby", &first).await.unwrap();
    bridge.enter_room("dev", &first).await.unwrap();
    let events_before = recorder.0.lock().len();

    let second = member("s2", "ann");
    let wrong = TokenHash::of("not the token");
    let next = crate::ResumeToken::generate();
    assert_eq!(
        bridge
            .resume_username(&second, &wrong, next.hash())
            .await
            .unwrap(),
        None
    );
    let presented = TokenHash::of(token.secret());
    let resumed = bridge
        .resume_username(&second, &presented, next.hash())
        .await
        .unwrap()
        .expect("the token matches");
    assert_eq!(resumed.previous_session, "s1");
    assert_eq!(resumed.rooms, ["dev", "lobby"]);
    assert_eq!(
        recorder.controls(),
        [ControlCommand::Replace {
            key: "ann".into(),
            session_id: "s1".into()
        }]
    );
    let presence = recorder.0.lock()[events_before..]
        .iter()
        .filter(|e| matches!(e, BridgeEvent::Presence { .. }))
        .count();
    assert_eq!(presence, 0, "nobody sees the hand-over");
    // The earlier session can no longer free the name or leave the rooms.
    bridge.release_username(&first).await.unwrap();
    bridge.leave_room("lobby", &first).await.unwrap();
    assert!(!bridge
        .claim_username(&member("s3", "ANN"), &hash())
        .await
        .unwrap());
    let users = bridge.users(Some("lobby")).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].connections, 1);
    // A spent token resumes nothing.
    assert_eq!(
        bridge
            .resume_username(&member("s4", "Ann"), &presented, &hash())
            .await
            .unwrap(),
        None
    );
}

fn system(room: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room.into(),
        sender_key: String::new(),
        username: String::new(),
        text: text.into(),
        client_msg_id: String::new(),
        system: true,
    }
}

#[tokio::test]
async fn an_unused_room_expires_and_one_in_use_does_not() {
    let recorder = Arc::new(Recorder::default());
    let bridge = MemoryBridge::new(10, recorder).with_room_limits(Duration::ZERO, 100);
    bridge.publish(system("quiet", "hi")).await.unwrap();
    assert!(
        bridge.recent("quiet", 10).await.unwrap().is_empty(),
        "dropped"
    );
    let ann = member("s1", "Ann");
    bridge.enter_room("busy", &ann).await.unwrap();
    bridge.publish(system("busy", "hi")).await.unwrap();
    assert_eq!(bridge.recent("busy", 10).await.unwrap().len(), 1, "in use");
    bridge.subscribe("heard").await.unwrap();
    bridge.publish(system("heard", "hi")).await.unwrap();
    assert_eq!(
        bridge.recent("heard", 10).await.unwrap().len(),
        1,
        "listened to"
    );
}

#[tokio::test]
async fn the_room_cap_drops_the_longest_idle_room_nobody_uses() {
    let recorder = Arc::new(Recorder::default());
    let bridge = MemoryBridge::new(10, recorder).with_room_limits(Duration::from_secs(3600), 2);
    bridge.publish(system("old", "1")).await.unwrap();
    let ann = member("s1", "Ann");
    bridge.enter_room("used", &ann).await.unwrap();
    bridge.publish(system("new", "2")).await.unwrap();
    assert_eq!(bridge.rooms.read().len(), 2);
    assert!(
        bridge.recent("old", 10).await.unwrap().is_empty(),
        "evicted"
    );
    assert_eq!(bridge.recent("new", 10).await.unwrap().len(), 1);
    assert_eq!(
        bridge.rooms(10).await.unwrap().len(),
        1,
        "the room in use stays"
    );
}
