//! Server frames as they go on the wire: a WebSocket binary frame around the
//! encoded `ServerFrame`, built once and shared by every recipient.
//!
//! The session writes these bytes straight to the socket, behind
//! tungstenite's back, so a broadcast costs one encode per gateway and no
//! per-recipient framing or copying. That is sound because a server's data
//! frames carry no mask and tungstenite keeps no state about frames it did
//! not send; the session flushes tungstenite's own buffer (a pong) before
//! writing and stops writing once it sends Close.

use std::io::{self, IoSlice};

use bytes::{Buf as _, BufMut as _, Bytes};
use chat_proto::v1::ServerFrame;
use chat_proto::Message as _;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// First header byte of a final, unfragmented binary frame.
const FIN_BINARY: u8 = 0x82;
/// Frames written by one system call at most.
const SLICES_PER_WRITE: usize = 64;

/// One complete WebSocket binary frame holding an encoded `ServerFrame`.
/// Only [`encode`] and [`encode_message_push`] make one, so whatever is queued for a connection is
/// ready for the wire. Cloning shares the bytes.
#[derive(Debug, Clone)]
pub(crate) struct Frame(Bytes);

/// `frame` as one complete WebSocket binary frame.
pub(crate) fn encode(frame: &ServerFrame) -> Frame {
    let len = frame.encoded_len();
    let mut out = Vec::with_capacity(header_len(len) + len);
    put_header(&mut out, len);
    frame
        .encode(&mut out)
        .expect("the buffer was sized for the frame");
    Frame(Bytes::from(out))
}

/// The `ServerFrame` inside a frame: what a client reads from it (for tests
/// of what was queued).
#[cfg(test)]
pub(crate) fn decode(frame: &Frame) -> ServerFrame {
    let bytes = &frame.0;
    let header = match bytes[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    ServerFrame::decode(&bytes[header..]).expect("an encoded ServerFrame")
}

/// `ServerFrame.message` (field 5, length-delimited): the key byte.
const MESSAGE_KEY: u8 = 5 << 3 | 2;

/// A pushed chat message (`ServerFrame { ref: 0, message }`) around a
/// `ChatMessage` the bridge already encoded, framed without decoding it:
/// the same bytes as [`encode`] of that frame.
pub(crate) fn encode_message_push(message: &[u8]) -> Frame {
    let len = 1 + varint_len(message.len() as u64) + message.len();
    let mut out = Vec::with_capacity(header_len(len) + len);
    put_header(&mut out, len);
    out.put_u8(MESSAGE_KEY);
    put_varint(&mut out, message.len() as u64);
    out.extend_from_slice(message);
    Frame(Bytes::from(out))
}

/// Bytes of `n` as a protobuf varint.
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Protobuf varint: 7 bits a byte, least significant first.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

fn header_len(payload: usize) -> usize {
    match payload {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// RFC 6455 §5.2: FIN + opcode, then the payload length (servers send no mask).
fn put_header(out: &mut Vec<u8>, payload: usize) {
    out.put_u8(FIN_BINARY);
    match payload {
        0..=125 => out.put_u8(payload as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(payload as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(payload as u64);
        }
    }
}

/// Writes every frame in `frames` (in order, with as few system calls as
/// the socket allows) and empties it.
pub(crate) async fn write_all<W>(out: &mut W, frames: &mut Vec<Frame>) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut first = 0;
    while first < frames.len() {
        let mut written = {
            let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
            let mut n = 0;
            for (slice, frame) in slices.iter_mut().zip(&frames[first..]) {
                *slice = IoSlice::new(&frame.0);
                n += 1;
            }
            out.write_vectored(&slices[..n]).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Skip what went out; a frame written in part keeps its rest.
        while written > 0 {
            let frame = &mut frames[first].0;
            if written >= frame.len() {
                written -= frame.len();
                first += 1;
            } else {
                frame.advance(written);
                written = 0;
            }
        }
    }
    frames.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::v1::{server_frame, Pong};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;

    fn error_frame(size: usize) -> ServerFrame {
        ServerFrame {
            r#ref: 7,
            kind: Some(server_frame::Kind::Error(chat_proto::v1::Error {
                code: 1,
                message: "x".repeat(size),
            })),
        }
    }

    /// What tungstenite (the reference implementation of the other side)
    /// reads from the bytes: the same frames, for every length encoding.
    #[tokio::test]
    async fn a_client_reads_the_frames_as_sent() {
        let frames: Vec<ServerFrame> = [0, 100, 124, 125, 126, 200, 65_000, 70_000]
            .into_iter()
            .map(error_frame)
            .chain([ServerFrame {
                r#ref: 1,
                kind: Some(server_frame::Kind::Pong(Pong::default())),
            }])
            .collect();
        let (client, mut server) = tokio::io::duplex(1024);
        let mut encoded: Vec<Frame> = frames.iter().map(encode).collect();
        let writer = tokio::spawn(async move {
            write_all(&mut server, &mut encoded).await.unwrap();
            assert!(encoded.is_empty());
            server
        });
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            client,
            Role::Client,
            Some(WebSocketConfig::default()),
        )
        .await;
        use futures_util::StreamExt as _;
        for sent in &frames {
            match ws.next().await {
                Some(Ok(Message::Binary(data))) => {
                    assert_eq!(&ServerFrame::decode(data).unwrap(), sent);
                }
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
        drop(writer.await.unwrap());
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        for size in [0, 125, 126, 65_535, 65_536] {
            let frame = error_frame(size);
            assert_eq!(decode(&encode(&frame)), frame, "{size}");
        }
    }

    #[test]
    fn a_message_framed_from_its_encoding_is_the_encoded_frame() {
        use chat_proto::v1::{server_frame::Kind, ChatMessage};
        for text_len in [0, 10, 120, 200, 20_000, 70_000] {
            let message = ChatMessage {
                id: "1732712345678-7".into(),
                room: "lobby".into(),
                username: "ann".into(),
                text: "x".repeat(text_len),
                sent_at_ms: 1_732_712_345_678,
                client_msg_id: "c1".into(),
                system: false,
            };
            let frame = ServerFrame {
                r#ref: 0,
                kind: Some(Kind::Message(message.clone())),
            };
            assert_eq!(
                encode_message_push(&message.encode_to_vec()).0,
                encode(&frame).0,
                "text of {text_len} bytes"
            );
        }
    }
}
