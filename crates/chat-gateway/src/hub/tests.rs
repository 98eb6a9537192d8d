//! Unit tests of the hub: the presence gate, the Joining→Live hand-over
//! (pure, then through the hub) and the fan-out rules.

use super::*;
use crate::conn::ConnInbox;
use chat_bridge::MessageEvent;
use chat_proto::v1::ChatMessage;

fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

#[test]
fn two_changes_a_second_go_out_and_the_rest_collapse_to_the_truth() {
    use PresenceKind::{Joined, Left};
    let t0 = Instant::now();
    let mut gate = PresenceGate::default();
    assert_eq!(gate.offer(at(t0, 0), "a".into(), Joined), Gated::Send);
    assert_eq!(gate.offer(at(t0, 10), "a".into(), Left), Gated::Send);
    assert_eq!(
        gate.offer(at(t0, 20), "a".into(), Joined),
        Gated::HoldUntil(at(t0, 1000))
    );
    for i in 0..1000 {
        let kind = if i % 2 == 0 { Left } else { Joined };
        assert_eq!(gate.offer(at(t0, 30), "a".into(), kind), Gated::Held);
    }
    // The flood ended on Joined: members last got Left, so they get Joined.
    assert_eq!(gate.release(at(t0, 1000)), Some(("a".into(), Joined)));
    // A flood that ends where members already are sends nothing.
    // (Sent at 10 and 1000: the next one may go at 1010.)
    assert_eq!(
        gate.offer(at(t0, 1001), "a".into(), Left),
        Gated::HoldUntil(at(t0, 1010))
    );
    assert_eq!(gate.release(at(t0, 1010)), Some(("a".into(), Left)));
    assert_eq!(
        gate.offer(at(t0, 1012), "a".into(), Joined),
        Gated::HoldUntil(at(t0, 2000))
    );
    assert_eq!(gate.offer(at(t0, 1013), "a".into(), Left), Gated::Held);
    assert_eq!(gate.release(at(t0, 2000)), None);
    // Quiet again: changes go out at once.
    assert_eq!(gate.offer(at(t0, 3100), "a".into(), Joined), Gated::Send);
    assert!(!gate.idle(at(t0, 3200)));
    assert!(gate.idle(at(t0, 4200)));
}

fn id(ms: u64, seq: u64) -> Option<MessageId> {
    Some(MessageId::new(ms, seq))
}

#[test]
fn a_joining_member_gets_held_events_after_its_joined_without_what_it_has() {
    let mut member = Handover::joining();
    // Nothing goes out before the Joined frame.
    assert_eq!(member.offer(id(1, 0), &"m1"), None);
    assert_eq!(member.offer(None, &"presence"), None);
    assert_eq!(member.offer(id(2, 0), &"m2"), None);
    assert_eq!(member.offer(id(3, 0), &"m3"), None);
    assert_eq!(member.offer(None, &"typing"), None);
    // The Joined replayed up to 2-0: the rest follows it, in order;
    // events that are not messages are never dropped.
    let after_joined: Vec<_> = member.go_live(MessageId::new(2, 0)).collect();
    assert_eq!(after_joined, ["presence", "m3", "typing"]);
    assert_eq!(
        member,
        Handover::Live {
            watermark: MessageId::new(2, 0)
        }
    );
}

#[test]
fn a_live_member_gets_events_at_once_except_messages_it_has() {
    let mut member = Handover::<&str>::Live {
        watermark: MessageId::new(5, 1),
    };
    assert_eq!(member.offer(id(5, 0), &"old"), None);
    assert_eq!(member.offer(id(5, 1), &"replayed"), None);
    assert_eq!(member.offer(id(5, 2), &"new"), Some("new"));
    assert_eq!(member.offer(None, &"presence"), Some("presence"));
    // Going live again (a failed re-join) releases nothing and moves the mark.
    assert_eq!(member.go_live(MessageId::ZERO).count(), 0);
    assert_eq!(member.offer(id(5, 0), &"older"), Some("older"));
}

#[test]
fn a_since_id_from_the_future_hides_the_messages_before_it() {
    let mut member = Handover::joining();
    assert_eq!(member.offer(id(2, 0), &"m2"), None);
    assert_eq!(member.go_live(MessageId::new(9, 0)).count(), 0);
    assert_eq!(member.offer(id(9, 1), &"m9"), Some("m9"));
}

fn hub() -> (Arc<Hub>, mpsc::Receiver<ControlCommand>) {
    let (control, commands) = mpsc::channel(1);
    (Hub::new(Arc::new(Metrics::default()), control), commands)
}

fn member(id: u64, key: &str) -> (Arc<ConnHandle>, ConnInbox, Arc<str>) {
    let (conn, inbox) = ConnHandle::new(id, &format!("gw~1-{id}"), 16);
    conn.set_key(Arc::from(key));
    (conn, inbox, Arc::from(key))
}

fn message(room: &str, ms: u64, text: &str) -> BridgeEvent {
    let id = MessageId::new(ms, 0);
    BridgeEvent::Message(MessageEvent::new(
        id,
        &ChatMessage {
            id: id.to_string(),
            room: room.into(),
            text: text.into(),
            ..ChatMessage::default()
        },
    ))
}

/// What the connection got, one word per frame.
fn received(inbox: &mut ConnInbox) -> Vec<String> {
    let mut batch = Vec::new();
    inbox.try_recv_many(&mut batch);
    batch
        .iter()
        .map(|frame| match crate::wire::decode(frame).kind {
            Some(server_frame::Kind::Message(m)) => m.text,
            Some(server_frame::Kind::Joined(j)) => format!("joined {}", j.room),
            Some(server_frame::Kind::Typing(t)) => format!("typing {}", t.username),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn the_hub_hands_a_joining_connection_over_to_live_delivery() {
    let (hub, _commands) = hub();
    let (conn, mut inbox, key) = member(1, "ann");
    hub.begin_join("r", &conn, &key);
    hub.deliver(message("r", 1, "in the replay"));
    hub.deliver(message("r", 2, "after the replay"));
    hub.deliver(message("elsewhere", 3, "another room"));
    assert_eq!(
        received(&mut inbox),
        Vec::<String>::new(),
        "held until Joined"
    );
    let joined = encode_push(server_frame::Kind::Joined(chat_proto::v1::Joined {
        room: "r".into(),
        ..Default::default()
    }));
    hub.finish_join("r", conn.id, Some(joined), MessageId::new(1, 0));
    assert_eq!(received(&mut inbox), ["joined r", "after the replay"]);
    hub.deliver(message("r", 4, "live"));
    assert_eq!(received(&mut inbox), ["live"]);

    // A re-join holds events again until its answer.
    hub.begin_join("r", &conn, &key);
    hub.deliver(message("r", 5, "during the re-join"));
    assert_eq!(received(&mut inbox), Vec::<String>::new());
    hub.finish_join("r", conn.id, None, MessageId::ZERO);
    assert_eq!(received(&mut inbox), ["during the re-join"]);
}

#[test]
fn typing_is_not_sent_to_its_subject_and_a_removed_member_gets_nothing() {
    let (hub, _commands) = hub();
    let (ann, mut ann_inbox, ann_key) = member(1, "ann");
    let (bob, mut bob_inbox, bob_key) = member(2, "bob");
    for (conn, key) in [(&ann, &ann_key), (&bob, &bob_key)] {
        hub.begin_join("r", conn, key);
        hub.finish_join("r", conn.id, None, MessageId::ZERO);
    }
    hub.deliver(BridgeEvent::Typing {
        room: "r".into(),
        key: "ann".into(),
        username: "Ann".into(),
        active: true,
    });
    assert_eq!(received(&mut ann_inbox), Vec::<String>::new());
    assert_eq!(received(&mut bob_inbox), ["typing Ann"]);

    assert!(hub.remove("r", bob.id));
    assert!(!hub.remove("r", bob.id), "removed once");
    hub.deliver(message("r", 1, "hello"));
    assert_eq!(received(&mut bob_inbox), Vec::<String>::new());
    assert_eq!(received(&mut ann_inbox), ["hello"]);
    assert!(hub.remove("r", ann.id));
    assert!(hub.rooms.read().is_empty(), "an empty room is dropped");
}

#[test]
fn operator_commands_go_to_the_control_task_and_a_flood_is_dropped() {
    let (hub, mut commands) = hub();
    let drain = |n: usize| ControlCommand::Drain {
        reply_to: Some(n.to_string()),
    };
    hub.deliver(BridgeEvent::Control(drain(1)));
    hub.deliver(BridgeEvent::Control(drain(2)));
    assert_eq!(commands.try_recv().ok(), Some(drain(1)));
    assert!(commands.try_recv().is_err(), "the second did not fit");
    drop(commands);
    hub.deliver(BridgeEvent::Control(drain(3))); // no task: ignored
}
