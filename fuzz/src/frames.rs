//! The `frame_decoder` target: what the gateway does with the bytes of one
//! WebSocket binary message before any state is involved (decode a
//! `ClientFrame`, then apply the protocol's rules to its fields), checked
//! against properties the rules promise.

use chat_proto::v1::{client_frame, ClientFrame, ServerFrame};
use chat_proto::{
    check_client_msg_id, check_text, clamp_page_limit, normalize_room, normalize_username,
    Message as _, MessageId, TextError, MAX_CLIENT_MSG_ID_BYTES, MAX_PAGE_LIMIT, MAX_ROOM_CHARS,
    MAX_USERNAME_CHARS,
};
use unicode_normalization::is_nfc;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// One fuzz input: the bytes of one binary message.
pub fn check(data: &[u8]) {
    if let Ok(frame) = ClientFrame::decode(data) {
        round_trip(&frame);
        check_client_frame(&frame);
    }
    // Clients decode what servers send with the same generated code.
    if let Ok(frame) = ServerFrame::decode(data) {
        round_trip(&frame);
    }
    // Random protobuf rarely carries long strings: the rules also get the
    // whole input as text.
    if let Ok(text) = std::str::from_utf8(data) {
        check_string(text);
    }
}

/// Decoding what was encoded gives the same frame, and the encoded length
/// is what `encoded_len` promised (the gateway sizes buffers with it).
fn round_trip<M: chat_proto::Message + Default + PartialEq + std::fmt::Debug>(frame: &M) {
    let bytes = frame.encode_to_vec();
    assert_eq!(bytes.len(), frame.encoded_len(), "encoded_len of {frame:?}");
    let again = M::decode(bytes.as_slice()).expect("a re-encoded frame decodes");
    assert_eq!(&again, frame, "decode(encode(frame)) differs");
    assert_eq!(
        again.encode_to_vec(),
        bytes,
        "encoding is not deterministic"
    );
}

fn check_client_frame(frame: &ClientFrame) {
    let Some(kind) = &frame.kind else { return };
    match kind {
        client_frame::Kind::Hello(hello) => {
            check_string(&hello.username);
            check_string(&hello.token);
            check_string(&hello.client);
            check_string(&hello.resume_token);
        }
        client_frame::Kind::Join(join) => {
            check_string(&join.room);
            check_string(&join.since_id);
            check_page_limit(join.history_limit);
        }
        client_frame::Kind::Leave(leave) => check_string(&leave.room),
        client_frame::Kind::Send(send) => {
            check_string(&send.room);
            check_string(&send.text);
            check_string(&send.client_msg_id);
        }
        client_frame::Kind::Typing(typing) => check_string(&typing.room),
        client_frame::Kind::Ping(_) => {}
        client_frame::Kind::FetchHistory(fetch) => {
            check_string(&fetch.room);
            check_string(&fetch.before_id);
            check_page_limit(fetch.limit);
        }
    }
}

/// Every rule the gateway applies to a client's string, whatever field it
/// came from.
pub fn check_string(s: &str) {
    check_username(s);
    check_room(s);
    check_text_rules(s);
    assert_eq!(
        check_client_msg_id(s),
        s.len() <= MAX_CLIENT_MSG_ID_BYTES,
        "client_msg_id limit is in bytes"
    );
    check_message_id(s);
}

fn forbidden(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control | GeneralCategory::Format
    )
}

fn check_username(raw: &str) {
    let Ok(name) = normalize_username(raw) else {
        return;
    };
    let display = &name.display;
    let chars = display.chars().count();
    assert!(
        (1..=MAX_USERNAME_CHARS).contains(&chars),
        "accepted username {display:?} has {chars} characters"
    );
    assert_eq!(display.trim(), display, "accepted username is not trimmed");
    assert!(is_nfc(display), "accepted username {display:?} is not NFC");
    assert!(
        !display.chars().any(forbidden),
        "accepted username {display:?} has a control or format character"
    );
    assert!(
        display.chars().any(|c| !c.is_whitespace()
            && !matches!(
                c,
                '\u{2800}' | '\u{3164}' | '\u{115F}' | '\u{1160}' | '\u{FFA0}'
            )),
        "accepted username {display:?} shows as blank"
    );
    assert!(is_nfc(&name.key), "username key {:?} is not NFC", name.key);
    // What the server shows is itself a name it accepts, with the same key:
    // a client that sends back the name it was welcomed with gets the same one.
    assert_eq!(
        normalize_username(display).as_ref(),
        Ok(&name),
        "normalising an accepted username again changes it"
    );
}

fn check_room(raw: &str) {
    let Ok(room) = normalize_room(raw) else {
        return;
    };
    let chars = room.chars().count();
    assert!(
        (1..=MAX_ROOM_CHARS).contains(&chars),
        "accepted room {room:?} has {chars} characters"
    );
    assert!(is_nfc(&room), "room {room:?} is not NFC");
    assert!(
        !room.chars().any(forbidden),
        "accepted room {room:?} has a control or format character"
    );
    assert!(
        !room.starts_with(char::is_whitespace) && !room.ends_with(char::is_whitespace),
        "accepted room {room:?} has surrounding whitespace"
    );
    // The room's identity names the same room (Leave, Send and the admin
    // API normalise the name they are given again).
    assert_eq!(
        normalize_room(&room).as_deref(),
        Ok(room.as_str()),
        "normalising an accepted room again changes it"
    );
}

fn check_text_rules(text: &str) {
    for max in [0, 1, 4, 4096, usize::MAX] {
        match check_text(text, max) {
            Ok(()) => {
                assert!(!text.trim().is_empty(), "blank text accepted");
                assert!(text.len() <= max, "text over {max} bytes accepted");
            }
            Err(TextError::Empty) => assert!(text.trim().is_empty(), "text refused as empty"),
            Err(TextError::TooLarge { len, max: m }) => {
                assert_eq!((len, m), (text.len(), max), "TooLarge reports other sizes");
                assert!(len > max && !text.trim().is_empty());
            }
        }
    }
}

/// `<ms>-<seq>`, two runs of ASCII digits that fit in u64: nothing else.
fn reference_id(s: &str) -> Option<MessageId> {
    let (ms, seq) = s.split_once('-')?;
    let digits = |p: &str| -> Option<u64> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Leading zeros are digits too; u128 keeps overflow visible.
        let mut v: u128 = 0;
        for b in p.bytes() {
            v = v * 10 + u128::from(b - b'0');
            if v > u128::from(u64::MAX) {
                return None;
            }
        }
        Some(v as u64)
    };
    Some(MessageId::new(digits(ms)?, digits(seq)?))
}

fn check_message_id(s: &str) {
    let parsed = s.parse::<MessageId>();
    assert_eq!(
        parsed.as_ref().ok(),
        reference_id(s).as_ref(),
        "MessageId parse of {s:?}"
    );
    match parsed {
        Ok(id) => {
            let shown = id.to_string();
            assert_eq!(
                shown.parse::<MessageId>(),
                Ok(id),
                "{shown:?} does not parse back"
            );
            if id != MessageId::new(u64::MAX, u64::MAX) {
                assert!(id.next() > id);
                assert!(id.successor_at(id.ms) > id);
            }
        }
        // The error echoes at most 80 characters of what the client sent.
        Err(e) => assert!(e.0.chars().count() <= 80, "error echoes too much"),
    }
}

fn check_page_limit(requested: u32) {
    let n = clamp_page_limit(requested);
    assert!(
        (1..=MAX_PAGE_LIMIT).contains(&n),
        "page limit {n} for {requested}"
    );
}
