//! The two halves of a split [`crate::Client`], for load generation: a
//! sender that assigns refs and a receiver that decodes each frame once.

use std::collections::VecDeque;

use bytes::Bytes;
use chat_proto::v1::{client_frame, ClientFrame, ServerFrame};
use chat_proto::Message as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connect::Ws;
use crate::frame::{close_info, send_kind};
use crate::{ClientError, CloseInfo};

/// The sending half: frames go out in call order; nothing waits for replies.
#[derive(Debug)]
pub struct ClientSender {
    sink: SplitSink<Ws, Message>,
    /// Continues the numbering of the client it came from.
    next_ref: u64,
}

impl ClientSender {
    pub(crate) fn new(sink: SplitSink<Ws, Message>, next_ref: u64) -> Self {
        Self { sink, next_ref }
    }

    /// A `ref` never used before on this connection.
    pub fn fresh_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    /// Sends `kind` with a fresh ref and flushes; returns the ref.
    pub async fn send(&mut self, kind: client_frame::Kind) -> Result<u64, ClientError> {
        let r = self.fresh_ref();
        self.send_frame(ClientFrame {
            r#ref: r,
            kind: Some(kind),
        })
        .await?;
        Ok(r)
    }

    /// Sends a chat message (`client_msg_id` may be empty); returns its ref.
    pub async fn send_message(
        &mut self,
        room: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Result<u64, ClientError> {
        self.send(send_kind(room, text, client_msg_id)).await
    }

    /// Sends a frame exactly as given and flushes.
    pub async fn send_frame(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        let message = Message::Binary(Bytes::from(frame.encode_to_vec()));
        self.sink.send(message).await.map_err(map_send_error)
    }

    /// Queues a frame without flushing (follow with [`ClientSender::flush`]).
    pub async fn feed_frame(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        let message = Message::Binary(Bytes::from(frame.encode_to_vec()));
        self.sink.feed(message).await.map_err(map_send_error)
    }

    /// Writes out everything fed so far.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.sink.flush().await.map_err(map_send_error)
    }

    /// Sends a close frame (1000). The receiver sees the end of the stream.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        match self.sink.send(Message::Close(Some(frame))).await {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Ok(()),
            Err(e) => Err(ClientError::WebSocket(e)),
        }
    }
}

fn map_send_error(e: WsError) -> ClientError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => ClientError::Closed(None),
        e => ClientError::WebSocket(e),
    }
}

/// The receiving half: every frame, pushes and replies alike, in arrival order.
#[derive(Debug)]
pub struct ClientReceiver {
    stream: SplitStream<Ws>,
    /// Frames the client had buffered before the split; handed out first.
    buffered: VecDeque<ServerFrame>,
    /// Set when the connection ended (inner: the server's close frame).
    closed: Option<Option<CloseInfo>>,
    pings: u64,
}

impl ClientReceiver {
    pub(crate) fn new(
        stream: SplitStream<Ws>,
        buffered: VecDeque<ServerFrame>,
        closed: Option<Option<CloseInfo>>,
        pings: u64,
    ) -> Self {
        Self {
            stream,
            buffered,
            closed,
            pings,
        }
    }

    /// The next frame; `None` once the connection has ended (see
    /// [`ClientReceiver::close_info`]). Not bounded in time; cancel-safe, so
    /// it can be wrapped in `tokio::time::timeout` or a `select!`.
    pub async fn next_frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        if let Some(frame) = self.buffered.pop_front() {
            return Ok(Some(frame));
        }
        match self.read_binary().await? {
            Some(data) => Ok(Some(ServerFrame::decode(data)?)),
            None => Ok(None),
        }
    }

    /// Like [`ClientReceiver::next_frame`] but without decoding: the payload
    /// of the next binary message (an encoded `ServerFrame`), for load
    /// generators that decode only the fields they need. Pings, pongs and the
    /// close frame are handled as in `next_frame`; frames buffered before the
    /// split come first, re-encoded. Cancel-safe.
    pub async fn next_binary(&mut self) -> Result<Option<Bytes>, ClientError> {
        if let Some(frame) = self.buffered.pop_front() {
            return Ok(Some(Bytes::from(frame.encode_to_vec())));
        }
        self.read_binary().await
    }

    /// The next binary message from the socket, counting pings and
    /// recording the close frame on the way; `None` once the connection ended.
    async fn read_binary(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.closed.is_some() {
            return Ok(None);
        }
        loop {
            let message = match self.stream.next().await {
                Some(Ok(message)) => message,
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    self.closed.get_or_insert(None);
                    return Ok(None);
                }
                Some(Err(e)) => {
                    self.closed.get_or_insert(None);
                    return Err(ClientError::WebSocket(e));
                }
            };
            match message {
                Message::Binary(data) => return Ok(Some(data)),
                Message::Text(_) => return Err(ClientError::TextMessage),
                Message::Ping(_) => self.pings += 1,
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    self.closed = Some(close_info(frame));
                    return Ok(None);
                }
            }
        }
    }

    /// The server's close frame, once the connection has ended with one.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.as_ref().and_then(Option::as_ref)
    }

    /// WebSocket pings received from the server so far.
    pub fn pings_received(&self) -> u64 {
        self.pings
    }
}

#[cfg(test)]
mod tests {
    use chat_proto::v1::server_frame::Kind;
    use chat_proto::v1::{Ack, ClientFrame};
    use tokio::net::TcpListener;

    use super::*;
    use crate::Client;

    #[tokio::test]
    async fn halves_work_independently() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        // An echo-ish server: answers every Send with an Ack carrying its ref.
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                let Message::Binary(data) = message else {
                    continue;
                };
                let frame = ClientFrame::decode(data).unwrap();
                let ack = Ack {
                    id: format!("1-{}", frame.r#ref),
                    ..Default::default()
                };
                let reply = ServerFrame {
                    r#ref: frame.r#ref,
                    kind: Some(Kind::Ack(ack)),
                };
                ws.send(Message::Binary(Bytes::from(reply.encode_to_vec())))
                    .await
                    .unwrap();
            }
        });
        let client = Client::connect(&url).await.unwrap();
        let (mut tx, mut rx) = client.into_split();
        let sending = tokio::spawn(async move {
            let mut refs = Vec::new();
            for i in 0..10 {
                refs.push(tx.send_message("r", &format!("m{i}"), "").await.unwrap());
            }
            tx.close().await.unwrap();
            refs
        });
        let mut got = Vec::new();
        while let Some(frame) = rx.next_frame().await.unwrap() {
            got.push(frame.r#ref);
        }
        assert_eq!(got, sending.await.unwrap());
        assert_eq!(got.len(), 10);
    }

    #[tokio::test]
    async fn next_binary_yields_undecoded_frames_then_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let frames: Vec<ServerFrame> = (1..=3)
            .map(|r| ServerFrame {
                r#ref: r,
                kind: Some(Kind::Ack(Ack::default())),
            })
            .collect();
        let sent = frames.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            ws.send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
            for frame in &sent {
                ws.send(Message::Binary(Bytes::from(frame.encode_to_vec())))
                    .await
                    .unwrap();
            }
            let close = CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            };
            ws.send(Message::Close(Some(close))).await.unwrap();
        });
        let (_tx, mut rx) = Client::connect(&url).await.unwrap().into_split();
        let mut got = Vec::new();
        while let Some(data) = rx.next_binary().await.unwrap() {
            got.push(ServerFrame::decode(data).unwrap());
        }
        assert_eq!(got, frames);
        assert_eq!(rx.pings_received(), 1);
        assert_eq!(rx.close_info().map(|c| c.code), Some(1001));
        assert!(rx.next_binary().await.unwrap().is_none());
    }
}
