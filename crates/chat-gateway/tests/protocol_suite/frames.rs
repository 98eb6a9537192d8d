//! Malformed input: undecodable and kind-less frames (BAD_FRAME, connection
//! kept), text messages (1003), oversized messages (1009); none of it
//! affects another connection.

use anyhow::ensure;
use bytes::Bytes;
use chat_client::{Client, WsMessage};
use chat_proto::v1::{presence_change, ClientFrame, ErrorCode};
use chat_proto::{Message as _, MAX_FRAME_BYTES};
use chat_test_support::BackendKind;

use super::{error_of, marker, next_presence, room_with, start, WAIT};

fn binary(bytes: Vec<u8>) -> WsMessage {
    WsMessage::Binary(Bytes::from(bytes))
}

/// `other` saw `who` leave and can still chat.
async fn unaffected(other: &mut Client, who: &str) -> anyhow::Result<()> {
    let p = next_presence(other).await?;
    assert_eq!(
        (p.username.as_str(), p.kind()),
        (who, presence_change::Kind::Left)
    );
    other.ping().await?;
    marker(other, "lobby", "still chatting", &mut []).await
}

pub(crate) async fn undecodable_and_kindless_frames_are_bad_frame(
    kind: BackendKind,
) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let (a, b) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);

    // Undecodable (truncated varint, wrong wire type) and empty: BAD_FRAME with ref 0.
    for junk in [vec![0xff; 4], vec![0x0a, 0x05, 0x01], Vec::new()] {
        a.send_raw(binary(junk.clone())).await?;
        let reply = a.next_event().await?;
        assert_eq!(
            error_of(&reply),
            Some((ErrorCode::BadFrame, 0)),
            "for {junk:?}"
        );
    }
    // Decodable but without a (known) kind: BAD_FRAME with the frame's ref.
    let r = a.fresh_ref();
    a.send_frame(ClientFrame {
        r#ref: r,
        kind: None,
    })
    .await?;
    assert_eq!(
        error_of(&a.wait_reply(r).await?),
        Some((ErrorCode::BadFrame, r))
    );
    let r = a.fresh_ref();
    let mut unknown = ClientFrame {
        r#ref: r,
        kind: None,
    }
    .encode_to_vec();
    unknown.extend_from_slice(&[0xa2, 0x01, 0x00]); // field 20, empty
    a.send_raw(binary(unknown)).await?;
    assert_eq!(
        error_of(&a.wait_reply(r).await?),
        Some((ErrorCode::BadFrame, r))
    );

    // The connection is still fully usable, and bob noticed nothing.
    a.ping().await?;
    marker(a, "lobby", "still here", &mut [b]).await?;
    Ok(())
}

pub(crate) async fn text_message_is_closed_1003(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let mut b = clients.pop().expect("bob");
    let mut a = clients.pop().expect("alice");
    a.send_raw(WsMessage::Text("hello".into())).await?;
    let close = a.wait_closed(WAIT).await?;
    ensure!(
        close.as_ref().map(|c| c.code) == Some(1003),
        "expected close 1003, got {close:?}"
    );
    unaffected(&mut b, "alice").await
}

pub(crate) async fn oversized_message_is_closed_1009(kind: BackendKind) -> anyhow::Result<()> {
    let server = start(kind, &[]).await?;
    let mut clients = room_with(&server, "lobby", &["alice", "bob"]).await?;
    let mut b = clients.pop().expect("bob");
    let mut a = clients.pop().expect("alice");

    // Exactly the limit (64 KiB by default) is allowed (and undecodable
    // here: BAD_FRAME, still open).
    a.send_raw(binary(vec![0xff; MAX_FRAME_BYTES])).await?;
    assert_eq!(
        error_of(&a.next_event().await?),
        Some((ErrorCode::BadFrame, 0))
    );
    a.ping().await?;

    // One byte more is closed with 1009 (the write itself may fail once the
    // server has given up reading).
    let _ = a.send_raw(binary(vec![0xff; MAX_FRAME_BYTES + 1])).await;
    let close = a.wait_closed(WAIT).await?;
    ensure!(
        close.as_ref().map(|c| c.code) == Some(1009),
        "expected close 1009, got {close:?}"
    );
    unaffected(&mut b, "alice").await
}
