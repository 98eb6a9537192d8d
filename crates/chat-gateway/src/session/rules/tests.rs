//! Unit tests of the session rules.

use super::*;
use chat_proto::v1::{Leave, Typing};

fn rooms(names: &[&str]) -> HashSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn join(room: &str, since_id: &str) -> Join {
    Join {
        room: room.into(),
        since_id: since_id.into(),
        ..Join::default()
    }
}

fn message(id: &str) -> ChatMessage {
    ChatMessage {
        id: id.into(),
        ..ChatMessage::default()
    }
}

#[test]
fn only_hello_is_allowed_before_welcome_and_room_operations_are_counted() {
    use client_frame::Kind;
    let hello = Kind::Hello(Hello::default());
    let join = Kind::Join(Join::default());
    let leave = Kind::Leave(Leave::default());
    let fetch = Kind::FetchHistory(FetchHistory::default());
    let send = Kind::Send(Send::default());
    let typing = Kind::Typing(Typing::default());
    let ping = Kind::Ping(Ping::default());
    assert_eq!(admit(&hello, false), Admission::Hello);
    assert_eq!(admit(&hello, true), Admission::Hello);
    for kind in [&join, &leave, &fetch, &send, &typing, &ping] {
        let Admission::Refused(rejection) = admit(kind, false) else {
            panic!("{kind:?} before Hello");
        };
        assert_eq!(rejection.code, ErrorCode::NotAuthenticated);
    }
    for kind in [&join, &leave, &fetch] {
        assert_eq!(admit(kind, true), Admission::RoomOp, "{kind:?}");
    }
    for kind in [&send, &typing, &ping] {
        assert_eq!(admit(kind, true), Admission::Other, "{kind:?}");
    }
}

#[test]
fn a_message_id_is_empty_or_ms_dash_seq() {
    assert_eq!(parse_message_id("since_id", ""), Ok(None));
    assert_eq!(
        parse_message_id("since_id", "17-3"),
        Ok(Some(MessageId::new(17, 3)))
    );
    for bad in ["17", "x-1", "1-", "-1", " 1-2", "1-2-3"] {
        let rejection = parse_message_id("before_id", bad).unwrap_err();
        assert_eq!(rejection.code, ErrorCode::InvalidArgument, "{bad:?}");
        assert!(
            rejection.message.starts_with("before_id: "),
            "{rejection:?}"
        );
    }
}

#[test]
fn a_room_is_joined_by_its_nfc_name() {
    // "é" composed (NFC) and decomposed name the same room.
    let joined_rooms = rooms(&["caf\u{e9}"]);
    assert_eq!(joined(&joined_rooms, "cafe\u{301}"), Ok("caf\u{e9}".into()));
    let rejection = joined(&joined_rooms, "tea").unwrap_err();
    assert_eq!(rejection.code, ErrorCode::NotInRoom);
    assert_eq!(rejection.message, "not in room \"tea\"");
    let long = "x".repeat(200);
    let rejection = joined(&joined_rooms, &long).unwrap_err();
    assert!(rejection.message.len() < 100, "the room name is shortened");
    assert_eq!(
        joined(&joined_rooms, " caf\u{e9}").unwrap_err().code,
        ErrorCode::NotInRoom,
        "an invalid name is not a joined room"
    );
}

#[test]
fn a_join_needs_a_valid_room_and_since_id_and_a_free_place() {
    let none = rooms(&[]);
    let plan = plan_join(&join("lobby", ""), &none, 2).unwrap();
    assert_eq!(
        plan,
        JoinPlan {
            room: "lobby".into(),
            since: None,
            rejoin: false,
            history_limit: clamp_page_limit(0),
        }
    );
    let plan = plan_join(&join("lobby", "5-1"), &none, 2).unwrap();
    assert_eq!(plan.since, Some(MessageId::new(5, 1)));

    let rejection = plan_join(&join(" lobby", ""), &none, 2).unwrap_err();
    assert_eq!(rejection.code, ErrorCode::InvalidRoom);
    assert!(rejection.message.starts_with("invalid room: "));
    let rejection = plan_join(&join("lobby", "yesterday"), &none, 2).unwrap_err();
    assert_eq!(rejection.code, ErrorCode::InvalidArgument);
    assert!(rejection.message.starts_with("since_id: "));
    // The room name is checked before the id.
    assert_eq!(
        plan_join(&join("", "yesterday"), &none, 2)
            .unwrap_err()
            .code,
        ErrorCode::InvalidRoom
    );
}

#[test]
fn a_rejoin_is_allowed_at_the_room_limit_and_a_new_room_is_not() {
    let full = rooms(&["a", "b"]);
    let plan = plan_join(&join("a", "3-0"), &full, 2).unwrap();
    assert!(plan.rejoin);
    assert_eq!(plan.since, Some(MessageId::new(3, 0)));
    let rejection = plan_join(&join("c", ""), &full, 2).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::new(ErrorCode::TooManyRooms, "at most 2 rooms at once")
    );
    assert!(!plan_join(&join("c", ""), &full, 3).unwrap().rejoin);
}

#[test]
fn the_client_has_the_larger_of_its_since_id_and_the_last_replayed_id() {
    let history = [message("5-0"), message("7-2")];
    assert_eq!(client_has(&history, None), MessageId::new(7, 2));
    assert_eq!(
        client_has(&history, Some(MessageId::new(6, 0))),
        MessageId::new(7, 2)
    );
    // A since_id from the future: the contract says the client has it.
    assert_eq!(
        client_has(&history, Some(MessageId::new(9, 0))),
        MessageId::new(9, 0)
    );
    assert_eq!(
        client_has(&[], Some(MessageId::new(4, 0))),
        MessageId::new(4, 0)
    );
    assert_eq!(client_has(&[], None), MessageId::ZERO);
    assert_eq!(client_has(&[message("garbled")], None), MessageId::ZERO);
}

#[test]
fn a_history_request_names_a_joined_room_then_a_valid_id() {
    let joined_rooms = rooms(&["lobby"]);
    let fetch = |room: &str, before_id: &str, limit| FetchHistory {
        room: room.into(),
        before_id: before_id.into(),
        limit,
    };
    assert_eq!(
        plan_history(&fetch("lobby", "9-9", 10), &joined_rooms),
        Ok(("lobby".into(), Some(MessageId::new(9, 9)), 10))
    );
    assert_eq!(
        plan_history(&fetch("lobby", "", 0), &joined_rooms),
        Ok(("lobby".into(), None, clamp_page_limit(0)))
    );
    assert_eq!(
        plan_history(&fetch("lobby", "", u32::MAX), &joined_rooms)
            .unwrap()
            .2,
        clamp_page_limit(u32::MAX)
    );
    let rejection = plan_history(&fetch("lobby", "nine", 10), &joined_rooms).unwrap_err();
    assert_eq!(rejection.code, ErrorCode::InvalidArgument);
    assert!(rejection.message.starts_with("before_id: "));
    // Not in the room: that is the answer, whatever the id.
    assert_eq!(
        plan_history(&fetch("other", "nine", 10), &joined_rooms)
            .unwrap_err()
            .code,
        ErrorCode::NotInRoom
    );
}

#[test]
fn a_send_names_a_joined_room_a_short_key_and_a_text_within_limits() {
    let joined_rooms = rooms(&["lobby"]);
    let send = |room: &str, text: &str, key: &str| Send {
        room: room.into(),
        text: text.into(),
        client_msg_id: key.into(),
    };
    assert_eq!(
        check_send(&send("lobby", "hi", "k1"), &joined_rooms, 10),
        Ok("lobby".into())
    );
    let code = |s: Send| check_send(&s, &joined_rooms, 10).unwrap_err().code;
    assert_eq!(code(send("other", "hi", "")), ErrorCode::NotInRoom);
    assert_eq!(
        code(send("lobby", "hi", &"k".repeat(65))),
        ErrorCode::InvalidArgument
    );
    assert!(check_send(&send("lobby", "hi", &"k".repeat(64)), &joined_rooms, 10).is_ok());
    assert_eq!(code(send("lobby", "  ", "")), ErrorCode::EmptyMessage);
    assert_eq!(
        code(send("lobby", "eleven char", "")),
        ErrorCode::MessageTooLarge
    );
    // The room is checked first.
    assert_eq!(code(send("other", "", "")), ErrorCode::NotInRoom);
}

#[test]
fn refused_hellos_close_the_connection_past_the_limit() {
    assert!(!too_many_refused_hellos(1, 1));
    assert!(too_many_refused_hellos(2, 1));
    assert!(too_many_refused_hellos(1, 0));
}

#[test]
fn the_gateway_sends_a_close_frame_only_when_it_ends_the_connection() {
    assert_eq!(close_code(&End::ServerClosed(4001)), Some(4001));
    assert_eq!(close_code(&End::Idle), Some(close_code::GOING_AWAY));
    assert_eq!(close_code(&End::ClientClosed), None);
    let io = tokio_tungstenite::tungstenite::Error::ConnectionClosed;
    assert_eq!(close_code(&End::Io(io)), None);
}

#[test]
fn a_policy_close_says_why_and_a_slow_consumer_loses_its_queue() {
    let policy = Some("no Hello in time");
    assert_eq!(close_reason(close_code::POLICY, policy), "no Hello in time");
    assert_eq!(
        close_reason(close_code::POLICY, None),
        "too slow to read messages"
    );
    assert_eq!(close_reason(close_code::KICKED, policy), "kicked");
    assert_eq!(close_reason(4999, None), "");

    // A kick's Error goes out before the close; a slow consumer's queue does not.
    assert!(flush_before_close(close_code::KICKED, None, None));
    assert!(flush_before_close(close_code::POLICY, policy, None));
    assert!(!flush_before_close(close_code::POLICY, None, None));
    // Nothing follows the answer to a client's Close.
    assert!(!flush_before_close(
        close_code::KICKED,
        None,
        Some(close_code::NORMAL)
    ));
}

#[test]
fn a_session_lingers_unless_it_ended_for_good() {
    use close_code::{GOING_AWAY, KICKED, NORMAL, POLICY, REPLACED};
    let linger = |end: &End, client_close| may_come_back(true, false, end, client_close);
    // Never welcomed: nothing to keep.
    assert!(!may_come_back(false, true, &End::Idle, None));
    // Lost connections and reloads come back.
    assert!(linger(&End::Idle, None));
    let io = tokio_tungstenite::tungstenite::Error::ConnectionClosed;
    assert!(linger(&End::Io(io), None));
    assert!(linger(&End::ClientClosed, None));
    assert!(linger(&End::ClientClosed, Some(GOING_AWAY)));
    assert!(linger(&End::ServerClosed(POLICY), None));
    assert!(linger(&End::ServerClosed(GOING_AWAY), None));
    // An expired token: back with a fresh one (a refused Hello never got here).
    assert!(linger(&End::ServerClosed(close_code::INVALID_TOKEN), None));
    assert!(!may_come_back(
        false,
        false,
        &End::ServerClosed(close_code::INVALID_TOKEN),
        None
    ));
    // A goodbye, a kick or a replacement is the end.
    assert!(!linger(&End::ClientClosed, Some(NORMAL)));
    assert!(!linger(&End::ServerClosed(KICKED), None));
    assert!(!linger(&End::ServerClosed(REPLACED), None));
    // A drain told everyone to reconnect.
    assert!(may_come_back(true, true, &End::ClientClosed, Some(NORMAL)));
}

#[test]
fn a_frame_is_a_request_of_a_known_kind_or_a_bad_frame() {
    let ping = ClientFrame {
        r#ref: 9,
        kind: Some(client_frame::Kind::Ping(Ping { client_time_ms: 5 })),
    };
    let request = read_request(ping.encode_to_vec().into()).unwrap();
    assert_eq!(request.r, 9);
    assert_eq!(
        request.kind,
        client_frame::Kind::Ping(Ping { client_time_ms: 5 })
    );
    assert!(!request.is_send());
    let send = ClientFrame {
        r#ref: 1,
        kind: Some(client_frame::Kind::Send(Send::default())),
    };
    assert!(read_request(send.encode_to_vec().into()).unwrap().is_send());

    // No kind (or one this gateway does not know): answered under its ref.
    let empty = ClientFrame {
        r#ref: 4,
        kind: None,
    };
    let (r, rejection) = read_request(empty.encode_to_vec().into()).unwrap_err();
    assert_eq!(r, 4);
    assert_eq!(
        rejection,
        Rejection::new(ErrorCode::BadFrame, "frame has no known kind")
    );
    // Not protobuf at all: answered under ref 0.
    let (r, rejection) = read_request(Bytes::from_static(&[0xff, 0xff, 0xff])).unwrap_err();
    assert_eq!(r, 0);
    assert_eq!(rejection.code, ErrorCode::BadFrame);
    assert!(rejection.message.starts_with("undecodable frame: "));
}

#[test]
fn a_hello_is_the_first_with_a_valid_name() {
    let hello = |username: &str| Hello {
        username: username.into(),
        ..Hello::default()
    };
    let name = check_hello(&hello("  Ann "), false).unwrap();
    assert_eq!((name.display.as_str(), name.key.as_str()), ("Ann", "ann"));

    let HelloRefusal::Invalid(rejection) = check_hello(&hello("   "), false).unwrap_err() else {
        panic!("an empty name is a refused Hello");
    };
    assert_eq!(rejection.code, ErrorCode::InvalidUsername);
    assert!(rejection.message.starts_with("invalid username: "));

    // A second Hello is refused whatever its name, and is not counted.
    for name in ["Ann", "   "] {
        assert_eq!(
            check_hello(&hello(name), true),
            Err(HelloRefusal::Again(Rejection::new(
                ErrorCode::BadFrame,
                "already welcomed: Hello is only allowed once"
            )))
        );
    }
    assert_eq!(
        name_taken("Ann"),
        Rejection::new(ErrorCode::UsernameTaken, "the name \"Ann\" is taken")
    );
}

#[test]
fn a_pong_echoes_the_client_time_and_adds_the_server_time() {
    let ping = Ping { client_time_ms: 17 };
    assert_eq!(
        pong(&ping, 99),
        Pong {
            client_time_ms: 17,
            server_time_ms: 99
        }
    );
}

#[test]
fn the_rate_limits_answer_rate_limited() {
    assert_eq!(room_ops_limited().code, ErrorCode::RateLimited);
    assert_eq!(sending_too_fast().code, ErrorCode::RateLimited);
    assert_ne!(room_ops_limited().message, sending_too_fast().message);
}
