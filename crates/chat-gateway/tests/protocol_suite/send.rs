//! Send rules: their order, idempotency, and the per-connection token bucket.

use std::time::Duration;

use anyhow::{bail, ensure};
use chat_client::ClientError;
use chat_proto::v1::client_frame::Kind;
use chat_proto::v1::server_frame::Kind as ServerKind;
use chat_proto::v1::{ErrorCode, Ping, Send};
use chat_test_support::BackendKind;
use tokio::time::Instant;

use super::{
    assert_code, claim_within, marker, messages, next_message, next_presence, room_with, start,
    FAST, WAIT,
};

pub(crate) async fn send_rules_apply_in_order(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &["--max-text-bytes", "16"]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let (a, b) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    let long_key = "k".repeat(65);
    let long_multibyte_key = "\u{e9}".repeat(33); // 33 characters, 66 bytes
    let too_large = "x".repeat(17);

    // 1. Not in the room (or not a valid room name) comes first, whatever else is wrong.
    for room in ["other", " lobby", "", "LOBBY"] {
        assert_code(
            a.send_with_id(room, "", &long_key).await,
            ErrorCode::NotInRoom,
        );
    }
    // 2. Then the key's length, in bytes.
    assert_code(
        a.send_with_id("lobby", "", &long_key).await,
        ErrorCode::InvalidArgument,
    );
    assert_code(
        a.send_with_id("lobby", &too_large, &long_multibyte_key)
            .await,
        ErrorCode::InvalidArgument,
    );
    // 3. Then empty after trimming (Unicode whitespace), before the size.
    for blank in [
        "",
        " ",
        "\t\n\r",
        "\u{3000}\u{a0}\u{2003}",
        &" ".repeat(100),
    ] {
        assert_code(a.send("lobby", blank).await, ErrorCode::EmptyMessage);
    }
    // 4. Then the size in UTF-8 bytes as sent, not in characters.
    assert_code(
        a.send("lobby", &too_large).await,
        ErrorCode::MessageTooLarge,
    );
    assert_code(
        a.send("lobby", &"\u{e9}".repeat(9)).await,
        ErrorCode::MessageTooLarge,
    );
    assert_code(
        a.send("lobby", &format!(" {} ", "x".repeat(15))).await,
        ErrorCode::MessageTooLarge,
    );

    // At the limits: 16 bytes (8 characters), a 64-byte key.
    let key = "k".repeat(64);
    let first = a.send_with_id("lobby", &"\u{e9}".repeat(8), &key).await?;
    let second = a.send("lobby", " padded ").await?;
    // 5. A retry of an accepted key still obeys the text rules first...
    assert_code(
        a.send_with_id("lobby", " ", &key).await,
        ErrorCode::EmptyMessage,
    );
    assert_code(
        a.send_with_id("lobby", &too_large, &key).await,
        ErrorCode::MessageTooLarge,
    );
    // ...and is then a duplicate.
    let retry = a.send_with_id("lobby", "other text", &key).await?;
    ensure!(
        retry.duplicate && retry.id == first.id,
        "retry {retry:?} of {first:?}"
    );

    // Only the accepted messages were delivered, exactly as sent.
    for client in [&mut *a, &mut *b] {
        let got = messages(client, 2).await?;
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|m| (m.id.as_str(), m.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (first.id.as_str(), "\u{e9}".repeat(8).as_str()),
                (second.id.as_str(), " padded ")
            ]
        );
    }
    marker(a, "lobby", "end", &mut [b]).await?;
    Ok(())
}

pub(crate) async fn duplicate_send_is_acked_with_the_original_and_not_redelivered(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut clients = room_with(&server, "lobby", &["Alice", "bob"]).await?;
    let mut b = clients.pop().expect("bob");
    let mut a = clients.pop().expect("alice");

    let first = a.send_with_id("lobby", "hello", "k1").await?;
    ensure!(!first.duplicate, "a new key is not a duplicate");
    for client in [&mut a, &mut b] {
        let m = next_message(client).await?;
        assert_eq!(
            (m.id.as_str(), m.client_msg_id.as_str(), m.text.as_str()),
            (first.id.as_str(), "k1", "hello")
        );
    }
    for text in ["hello", "edited text"] {
        let retry = a.send_with_id("lobby", text, "k1").await?;
        assert_eq!(
            (
                retry.id.as_str(),
                retry.room.as_str(),
                retry.sent_at_ms,
                retry.duplicate
            ),
            (first.id.as_str(), "lobby", first.sent_at_ms, true),
            "retry with {text:?}"
        );
    }
    // Not delivered again: the next push for both is the marker.
    marker(&mut a, "lobby", "after retries", &mut [&mut b]).await?;

    // The key is scoped to the username and the room.
    let bobs = b.send_with_id("lobby", "bob's", "k1").await?;
    ensure!(
        !bobs.duplicate && bobs.id != first.id,
        "another user's k1 is a new message"
    );
    a.join("second").await?;
    let elsewhere = a.send_with_id("second", "hello", "k1").await?;
    ensure!(!elsewhere.duplicate, "k1 in another room is a new message");
    messages(&mut a, 2).await?;
    messages(&mut b, 1).await?;

    // The same name (in any case) on a new connection gets the duplicate too.
    a.close().await?;
    let closed = Instant::now();
    let mut again = server.connect().await?;
    claim_within(&mut again, "ALICE", closed, Duration::from_secs(5)).await?;
    again.join("lobby").await?;
    let retry = again.send_with_id("lobby", "hello", "k1").await?;
    ensure!(
        retry.duplicate && retry.id == first.id,
        "retry after reconnecting: {retry:?}"
    );
    // bob saw alice leave and come back, then nothing but the marker.
    for kind in ["LEFT", "JOINED"] {
        let p = next_presence(&mut b).await?;
        ensure!(
            p.kind().as_str_name().ends_with(kind),
            "expected {kind}, got {p:?}"
        );
    }
    marker(&mut again, "lobby", "end", &mut [&mut b]).await?;
    Ok(())
}

pub(crate) async fn rate_limit_is_a_token_bucket_per_connection(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(
        kind,
        &["--messages-per-second", "4", "--message-burst", "3"],
    )
    .await?;
    let mut a = server.client("alice").await?;
    a.join("lobby").await?;

    // Rejected sends cost no token.
    for _ in 0..5 {
        assert_code(a.send("lobby", "  ").await, ErrorCode::EmptyMessage);
        assert_code(a.send("elsewhere", "x").await, ErrorCode::NotInRoom);
        assert_code(
            a.send_with_id("lobby", "x", &"k".repeat(65)).await,
            ErrorCode::InvalidArgument,
        );
        assert_code(
            a.send("lobby", &"x".repeat(4097)).await,
            ErrorCode::MessageTooLarge,
        );
    }
    // Only Send frames take tokens.
    for _ in 0..5 {
        a.ping().await?;
        a.typing("lobby", true).await?;
        a.fetch_history("lobby", "", 1).await?;
        a.join("lobby").await?;
    }
    // The bucket starts full (3); duplicates are free.
    let d1 = a.send_with_id("lobby", "one", "d1").await?;
    for _ in 0..3 {
        ensure!(
            a.send_with_id("lobby", "one", "d1").await?.duplicate,
            "retry is a duplicate"
        );
    }
    a.send("lobby", "two").await?;
    a.send("lobby", "three").await?;
    let dry = Instant::now();
    assert_code(a.send("lobby", "four").await, ErrorCode::RateLimited);
    assert_code(a.send("lobby", "four").await, ErrorCode::RateLimited);
    // Out of tokens, a retry of an accepted key is still answered.
    let retry = a.send_with_id("lobby", "one", "d1").await?;
    ensure!(
        retry.duplicate && retry.id == d1.id,
        "duplicate while rate limited: {retry:?}"
    );

    // Per connection: another one has its own full bucket.
    let mut b = server.client("bob").await?;
    b.join("lobby").await?;
    for i in 0..3 {
        b.send("lobby", &format!("b{i}")).await?;
    }
    assert_code(b.send("lobby", "b3").await, ErrorCode::RateLimited);

    // 4 tokens a second: the next one ~250 ms after the bucket ran dry; the
    // refused attempts while polling cost nothing.
    let refilled = loop {
        match a.send("lobby", "refill").await {
            Ok(_) => break dry.elapsed(),
            Err(ClientError::Server {
                code: ErrorCode::RateLimited,
                ..
            }) if dry.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => bail!("waiting for a token: {e}"),
        }
    };
    ensure!(
        refilled >= Duration::from_millis(150) && refilled < Duration::from_secs(2),
        "a token came back after {refilled:?}, expected about 250 ms"
    );
    assert_code(a.send("lobby", "again").await, ErrorCode::RateLimited);

    // Never more than the burst: time itself is the input here, long
    // enough for 4.8 tokens at 4/s if the bucket had no cap.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for i in 0..3 {
        a.send("lobby", &format!("burst {i}")).await?;
    }
    assert_code(
        a.send("lobby", "over the burst").await,
        ErrorCode::RateLimited,
    );
    Ok(())
}

/// A client may send without waiting for each Ack. Its messages keep their
/// sending order in the room, and every reply comes back in the order of
/// the requests, including a refused Send and a Ping among the pipelined
/// Sends.
pub(crate) async fn pipelined_sends_keep_their_order_and_replies_follow_requests(
    kind: BackendKind,
) -> anyhow::Result<()> {
    const SENDS: usize = 150;
    const REFUSED_AT: usize = 60;
    const PING_AT: usize = 100;
    let server = start(kind, FAST).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let (a, b) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);

    // Every request goes out before any reply is read.
    let mut requests = Vec::new();
    for n in 0..SENDS {
        let text = if n == REFUSED_AT {
            " ".to_string()
        } else {
            format!("m{n}")
        };
        let r = a
            .start(Kind::Send(Send {
                room: "lobby".into(),
                text,
                client_msg_id: String::new(),
            }))
            .await?;
        requests.push(r);
        if n == PING_AT {
            requests.push(a.start(Kind::Ping(Ping { client_time_ms: 7 })).await?);
        }
    }

    // Replies (Ack, Error, Pong) in request order; the sender's own copies
    // of its messages are pushes and may come in between.
    let mut replies = Vec::new();
    let mut own = Vec::new();
    while replies.len() < requests.len() {
        let frame = a.next_event().await?;
        match frame.kind {
            Some(ServerKind::Message(message)) => own.push(message),
            Some(kind) => replies.push((frame.r#ref, kind)),
            None => bail!("a frame without a kind"),
        }
    }
    let order: Vec<u64> = replies.iter().map(|(r, _)| *r).collect();
    assert_eq!(order, requests, "replies in the order of the requests");
    let mut acked = Vec::new();
    for (i, (_, kind)) in replies.into_iter().enumerate() {
        match kind {
            ServerKind::Ack(ack) => acked.push(ack.id),
            ServerKind::Error(e) => ensure!(
                i == REFUSED_AT && e.code == ErrorCode::EmptyMessage as i32,
                "unexpected error at reply {i}: {e:?}"
            ),
            ServerKind::Pong(pong) => ensure!(
                i == PING_AT + 1 && pong.client_time_ms == 7,
                "unexpected pong at reply {i}"
            ),
            other => bail!("unexpected reply {other:?}"),
        }
    }
    ensure!(acked.len() == SENDS - 1, "{} acks", acked.len());

    // Every member sees the accepted messages in sending order, under the Ack ids.
    let expected: Vec<(String, String)> = (0..SENDS)
        .filter(|n| *n != REFUSED_AT)
        .map(|n| format!("m{n}"))
        .zip(acked)
        .map(|(text, id)| (id, text))
        .collect();
    let rest = messages(a, SENDS - 1 - own.len()).await?;
    own.extend(rest);
    for (who, seen) in [("alice", own), ("bob", messages(b, SENDS - 1).await?)] {
        let seen: Vec<(String, String)> = seen.into_iter().map(|m| (m.id, m.text)).collect();
        assert_eq!(seen, expected, "{who} sees the sending order");
    }
    Ok(())
}

/// Retries of one `client_msg_id` sent back to back, before the first is
/// answered (so they reach the backend together), still make one message:
/// the first is accepted, the others are duplicates with its id.
pub(crate) async fn pipelined_retries_are_one_message(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, FAST).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let (a, b) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    let send = |text: &str, key: &str| {
        Kind::Send(Send {
            room: "lobby".into(),
            text: text.into(),
            client_msg_id: key.into(),
        })
    };
    let mut requests = Vec::new();
    for (text, key) in [
        ("before", ""),
        ("once", "k1"),
        ("once again", "k1"),
        ("between", "k2"),
        ("once more", "k1"),
    ] {
        requests.push(a.start(send(text, key)).await?);
    }
    let mut acks = Vec::new();
    for r in requests {
        match a.wait_reply(r).await?.kind {
            Some(ServerKind::Ack(ack)) => acks.push(ack),
            other => bail!("expected an Ack, got {other:?}"),
        }
    }
    let flags: Vec<bool> = acks.iter().map(|ack| ack.duplicate).collect();
    assert_eq!(flags, [false, false, true, false, true]);
    ensure!(
        acks[2].id == acks[1].id && acks[4].id == acks[1].id,
        "retries carry the original id: {acks:?}"
    );
    for client in [&mut *a, &mut *b] {
        let got: Vec<String> = messages(client, 3)
            .await?
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(got, ["before", "once", "between"]);
    }
    marker(a, "lobby", "end", &mut [b]).await?;
    Ok(())
}
