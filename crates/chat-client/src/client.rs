//! [`Client`]: one connection, request/reply matched by `ref`, pushes buffered in order.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{
    client_frame, Ack, ClientFrame, FetchHistory, Hello, HistoryPage, Join, Joined, Leave, Left,
    Ping, Pong, ServerFrame, Typing, Welcome,
};
use chat_proto::Message as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connect::{open, open_with_config, Ws};
use crate::frame::{classify, expect_reply, now_ms, send_kind, Incoming};
use crate::split::{ClientReceiver, ClientSender};
use crate::{ClientError, CloseInfo};

/// How long a request waits for its reply (and [`Client::next_event`] for a
/// frame) unless changed with [`Client::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent as `Hello.client`, for the gateway's logs.
const CLIENT_NAME: &str = concat!("chat-client/", env!("CARGO_PKG_VERSION"));

/// One protocol connection.
///
/// Not `Clone` and driven through `&mut self`: whoever holds it reads the
/// socket. Frames that are not the reply being waited for are kept in
/// arrival order and handed out by [`Client::next_event`].
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    /// The next `ref` to hand out; refs start at 1 because 0 means "no correlation".
    next_ref: u64,
    /// Received but not yet claimed: pushes (ref 0) and replies nobody was
    /// waiting for when they arrived, oldest first.
    events: VecDeque<ServerFrame>,
    /// Set when the connection ended: the inner value is the server's close
    /// frame, if it sent one.
    closed: Option<Option<CloseInfo>>,
    /// WebSocket pings received from the server (tungstenite answers them).
    pings: u64,
    /// Bound on every wait that has no explicit timeout.
    timeout: Duration,
}

impl Client {
    /// Connects to a `ws://host:port/path` URL.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, None).await
    }

    /// Connects with the local side bound to `local_addr` (any port), e.g. to
    /// spread many connections over 127.0.0.x source addresses.
    pub async fn connect_with(url: &str, local_addr: Option<IpAddr>) -> Result<Self, ClientError> {
        let ws = open(url, local_addr).await?;
        Ok(Self::from_ws(ws))
    }

    /// Like [`Client::connect_with`] with a chosen WebSocket configuration,
    /// e.g. a small `read_buffer_size` when holding thousands of idle
    /// connections (tungstenite's default allocates 128 KiB per connection).
    pub async fn connect_with_config(
        url: &str,
        local_addr: Option<IpAddr>,
        config: WebSocketConfig,
    ) -> Result<Self, ClientError> {
        let ws = open_with_config(url, local_addr, config).await?;
        Ok(Self::from_ws(ws))
    }

    fn from_ws(ws: Ws) -> Self {
        Self {
            ws,
            next_ref: 1,
            events: VecDeque::new(),
            closed: None,
            pings: 0,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes the bound on waits without an explicit timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The bound on waits without an explicit timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A `ref` never used before on this connection.
    pub fn fresh_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    // ------------------------------------------------------------ typed requests

    /// Sends `Hello` with `username` and waits for `Welcome`.
    pub async fn hello(&mut self, username: &str) -> Result<Welcome, ClientError> {
        self.hello_resuming(username, "").await
    }

    /// Sends `Hello` with `username` and the `resume_token` of this client's
    /// previous session (empty: none), and waits for `Welcome`.
    pub async fn hello_resuming(
        &mut self,
        username: &str,
        resume_token: &str,
    ) -> Result<Welcome, ClientError> {
        self.hello_with(Hello {
            username: username.to_owned(),
            token: String::new(),
            client: CLIENT_NAME.into(),
            resume_token: resume_token.to_owned(),
        })
        .await
    }

    /// Sends a `Hello` as given and waits for `Welcome`.
    pub async fn hello_with(&mut self, hello: Hello) -> Result<Welcome, ClientError> {
        let reply = self.request(client_frame::Kind::Hello(hello)).await?;
        expect_reply(reply, "Welcome", |kind| match kind {
            Kind::Welcome(welcome) => Ok(welcome),
            other => Err(Box::new(other)),
        })
    }

    /// Joins `room` with the default replay (the last 50 messages).
    pub async fn join(&mut self, room: &str) -> Result<Joined, ClientError> {
        self.join_with(room, "", 0).await
    }

    /// Joins `room`, replaying everything after `since_id` (when not empty)
    /// or the newest `history_limit` messages (0: server default).
    pub async fn join_with(
        &mut self,
        room: &str,
        since_id: &str,
        history_limit: u32,
    ) -> Result<Joined, ClientError> {
        let join = Join {
            room: room.to_owned(),
            since_id: since_id.to_owned(),
            history_limit,
        };
        let reply = self.request(client_frame::Kind::Join(join)).await?;
        expect_reply(reply, "Joined", |kind| match kind {
            Kind::Joined(joined) => Ok(joined),
            other => Err(Box::new(other)),
        })
    }

    /// Leaves `room`.
    pub async fn leave(&mut self, room: &str) -> Result<Left, ClientError> {
        let reply = self
            .request(client_frame::Kind::Leave(Leave {
                room: room.to_owned(),
            }))
            .await?;
        expect_reply(reply, "Left", |kind| match kind {
            Kind::Left(left) => Ok(left),
            other => Err(Box::new(other)),
        })
    }

    /// Sends a message without an idempotency key and waits for its `Ack`.
    /// The pushed `ChatMessage` of the sender's own message is an event.
    pub async fn send(&mut self, room: &str, text: &str) -> Result<Ack, ClientError> {
        self.send_with_id(room, text, "").await
    }

    /// Sends a message with idempotency key `client_msg_id` and waits for its `Ack`.
    pub async fn send_with_id(
        &mut self,
        room: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Result<Ack, ClientError> {
        let reply = self.request(send_kind(room, text, client_msg_id)).await?;
        expect_reply(reply, "Ack", |kind| match kind {
            Kind::Ack(ack) => Ok(ack),
            other => Err(Box::new(other)),
        })
    }

    /// Sends a typing notice. Nothing answers it on success, so this does not
    /// wait; an `Error` (e.g. NOT_IN_ROOM) arrives later as an event.
    pub async fn typing(&mut self, room: &str, active: bool) -> Result<(), ClientError> {
        self.start(client_frame::Kind::Typing(Typing {
            room: room.to_owned(),
            active,
        }))
        .await?;
        Ok(())
    }

    /// Pings with the current wall-clock time and waits for the `Pong`.
    pub async fn ping(&mut self) -> Result<Pong, ClientError> {
        self.ping_with(now_ms()).await
    }

    /// Pings with a chosen `client_time_ms` and waits for the `Pong`.
    pub async fn ping_with(&mut self, client_time_ms: u64) -> Result<Pong, ClientError> {
        let reply = self
            .request(client_frame::Kind::Ping(Ping { client_time_ms }))
            .await?;
        expect_reply(reply, "Pong", |kind| match kind {
            Kind::Pong(pong) => Ok(pong),
            other => Err(Box::new(other)),
        })
    }

    /// Fetches the `limit` (0: default) newest messages with id < `before_id`
    /// (empty: from the newest), oldest first.
    pub async fn fetch_history(
        &mut self,
        room: &str,
        before_id: &str,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let fetch = FetchHistory {
            room: room.to_owned(),
            before_id: before_id.to_owned(),
            limit,
        };
        let reply = self
            .request(client_frame::Kind::FetchHistory(fetch))
            .await?;
        expect_reply(reply, "HistoryPage", |kind| match kind {
            Kind::History(page) => Ok(page),
            other => Err(Box::new(other)),
        })
    }

    // ------------------------------------------------------------ generic requests

    /// Sends `kind` with a fresh ref and returns the frame answering it, as
    /// it is (an `Error` is returned as a frame, not as an error).
    pub async fn request(&mut self, kind: client_frame::Kind) -> Result<ServerFrame, ClientError> {
        let r = self.start(kind).await?;
        self.wait_reply(r).await
    }

    /// Sends `kind` with a fresh ref without waiting; returns the ref.
    pub async fn start(&mut self, kind: client_frame::Kind) -> Result<u64, ClientError> {
        let r = self.fresh_ref();
        self.send_frame(ClientFrame {
            r#ref: r,
            kind: Some(kind),
        })
        .await?;
        Ok(r)
    }

    /// Sends a frame exactly as given (its `ref` included) without waiting.
    pub async fn send_frame(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        self.send_raw(Message::Binary(Bytes::from(frame.encode_to_vec())))
            .await
    }

    /// Sends any WebSocket message (for malformed-input tests).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        if let Some(info) = &self.closed {
            return Err(ClientError::Closed(info.clone()));
        }
        match self.ws.send(message).await {
            Ok(()) => Ok(()),
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                let info = self.closed.get_or_insert(None).clone();
                Err(ClientError::Closed(info))
            }
            Err(e) => Err(ClientError::WebSocket(e)),
        }
    }

    /// Waits (up to the client's timeout) for the frame whose ref is `r`,
    /// keeping every other frame as an event. A reply that already arrived
    /// is taken from the buffered events.
    pub async fn wait_reply(&mut self, r: u64) -> Result<ServerFrame, ClientError> {
        if let Some(frame) = take_by_ref(&mut self.events, r) {
            return Ok(frame);
        }
        let timeout = self.timeout;
        let wait = async {
            loop {
                let frame = self.read_frame().await?;
                if r != 0 && frame.r#ref == r {
                    return Ok(frame);
                }
                self.events.push_back(frame);
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    // ------------------------------------------------------------ events

    /// The next unclaimed frame (push or unawaited reply), waiting up to the
    /// client's timeout ([`ClientError::Timeout`] after that).
    pub async fn next_event(&mut self) -> Result<ServerFrame, ClientError> {
        let timeout = self.timeout;
        self.next_event_timeout(timeout)
            .await?
            .ok_or(ClientError::Timeout(timeout))
    }

    /// The next unclaimed frame, or `None` if none arrives within `timeout`.
    pub async fn next_event_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ServerFrame>, ClientError> {
        if let Some(frame) = self.events.pop_front() {
            return Ok(Some(frame));
        }
        match tokio::time::timeout(timeout, self.read_frame()).await {
            Ok(frame) => frame.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The next unclaimed frame, buffered or read, with no time bound.
    /// Cancel-safe (for a `select!` over it and other work).
    pub(crate) async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        match self.events.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read_frame().await,
        }
    }

    /// The next already-received unclaimed frame, without reading the socket.
    pub fn try_next_event(&mut self) -> Option<ServerFrame> {
        self.events.pop_front()
    }

    /// Frames received and not yet claimed, oldest first.
    pub fn buffered_events(&self) -> impl ExactSizeIterator<Item = &ServerFrame> {
        self.events.iter()
    }

    /// Reads events until `pick` returns `Some`, discarding the frames it
    /// turns down; waits up to the client's timeout in total.
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&ServerFrame) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event_timeout(left).await? {
                Some(frame) => {
                    if let Some(found) = pick(&frame) {
                        return Ok(found);
                    }
                }
                None => return Err(ClientError::Timeout(self.timeout)),
            }
        }
    }

    // ------------------------------------------------------------ raw access and closing

    /// The next WebSocket message exactly as received (pings included),
    /// without decoding or buffering; `None` once the connection has ended.
    /// Already buffered events are not returned here. Waits up to the
    /// client's timeout.
    pub async fn recv_raw(&mut self) -> Result<Option<Message>, ClientError> {
        if self.closed.is_some() {
            return Ok(None);
        }
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(None) | Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => {
                self.closed.get_or_insert(None);
                Ok(None)
            }
            Ok(Some(Err(e))) => {
                self.closed.get_or_insert(None);
                Err(ClientError::WebSocket(e))
            }
            Ok(Some(Ok(message))) => {
                match &message {
                    Message::Ping(_) => self.pings += 1,
                    Message::Close(frame) => {
                        self.closed = Some(frame.as_ref().map(|f| CloseInfo {
                            code: u16::from(f.code),
                            reason: f.reason.as_str().to_owned(),
                        }));
                    }
                    _ => {}
                }
                Ok(Some(message))
            }
        }
    }

    /// Reads (keeping frames as events) until the server ends the
    /// connection; returns its close frame, `None` when the connection ended
    /// without one. [`ClientError::Timeout`] if it is still open after `timeout`.
    pub async fn wait_closed(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<CloseInfo>, ClientError> {
        let wait = async {
            loop {
                match self.read_frame().await {
                    Ok(frame) => self.events.push_back(frame),
                    Err(ClientError::Closed(info)) => return info,
                    // A reset or broken connection: ended, maybe after a close frame.
                    Err(_) => return self.closed.clone().flatten(),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))
    }

    /// Whether the connection has ended (as far as this client has read).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// The server's close frame, once the connection has ended with one.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.as_ref().and_then(Option::as_ref)
    }

    /// WebSocket pings received from the server so far (answered automatically).
    pub fn pings_received(&self) -> u64 {
        self.pings
    }

    /// Closes the connection with 1000 and waits (briefly) for the server's reply.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.closed.is_some() {
            return Ok(());
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        match self.ws.close(Some(frame)).await {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {}
            Err(e) => return Err(ClientError::WebSocket(e)),
        }
        let timeout = self.timeout;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        tokio::time::timeout(timeout, drain)
            .await
            .map_err(|_| ClientError::Timeout(timeout))
    }

    /// Splits into a sending half and a receiving half that can be used from
    /// different tasks. Events already buffered come first from the receiver.
    pub fn into_split(self) -> (ClientSender, ClientReceiver) {
        let (sink, stream) = self.ws.split();
        let sender = ClientSender::new(sink, self.next_ref);
        let receiver = ClientReceiver::new(stream, self.events, self.closed, self.pings);
        (sender, receiver)
    }

    /// Reads the next decoded frame, counting pings and recording the close.
    /// Not bounded in time (callers wrap it). Cancel-safe.
    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        if let Some(info) = &self.closed {
            return Err(ClientError::Closed(info.clone()));
        }
        loop {
            let message = match self.ws.next().await {
                Some(Ok(message)) => message,
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Err(ClientError::Closed(self.closed.get_or_insert(None).clone()));
                }
                Some(Err(e)) => {
                    self.closed.get_or_insert(None);
                    return Err(ClientError::WebSocket(e));
                }
            };
            match classify(message)? {
                Incoming::Frame(frame) => return Ok(frame),
                Incoming::Ping => self.pings += 1,
                Incoming::Pong => {}
                Incoming::Close(info) => {
                    self.closed = Some(info.clone());
                    // Let tungstenite send the close reply and see the end of
                    // the stream, so the server gets a clean close handshake.
                    let finish = async { while let Some(Ok(_)) = self.ws.next().await {} };
                    let _ = tokio::time::timeout(Duration::from_secs(1), finish).await;
                    return Err(ClientError::Closed(info));
                }
            }
        }
    }
}

/// Removes and returns the first frame with ref `r` (never matches ref 0).
fn take_by_ref(events: &mut VecDeque<ServerFrame>, r: u64) -> Option<ServerFrame> {
    if r == 0 {
        return None;
    }
    let index = events.iter().position(|frame| frame.r#ref == r)?;
    events.remove(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::v1::{ChatMessage, Error as ErrorFrame, ErrorCode, PresenceChange};
    use tokio::net::TcpListener;
    use tokio_tungstenite::WebSocketStream;

    fn push(text: &str) -> ServerFrame {
        ServerFrame {
            r#ref: 0,
            kind: Some(Kind::Message(ChatMessage {
                id: "1-0".into(),
                text: text.into(),
                ..Default::default()
            })),
        }
    }

    fn bin(frame: &ServerFrame) -> Message {
        Message::Binary(Bytes::from(frame.encode_to_vec()))
    }

    async fn recv_client_frame(ws: &mut WebSocketStream<tokio::net::TcpStream>) -> ClientFrame {
        loop {
            match ws.next().await.expect("client frame").expect("ws ok") {
                Message::Binary(data) => return ClientFrame::decode(data).expect("decodes"),
                _ => continue,
            }
        }
    }

    /// A one-connection scripted server; returns the URL and its task.
    async fn scripted<F, Fut>(script: F) -> (String, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(WebSocketStream<tokio::net::TcpStream>) -> Fut + std::marker::Send + 'static,
        Fut: std::future::Future<Output = ()> + std::marker::Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            script(ws).await;
        });
        (url, task)
    }

    #[test]
    fn take_by_ref_takes_the_first_match_only() {
        let mut events: VecDeque<ServerFrame> = [0, 5, 0, 5]
            .into_iter()
            .map(|r| ServerFrame {
                r#ref: r,
                kind: None,
            })
            .collect();
        assert_eq!(take_by_ref(&mut events, 5).map(|f| f.r#ref), Some(5));
        assert_eq!(
            events.iter().map(|f| f.r#ref).collect::<Vec<_>>(),
            [0, 0, 5]
        );
        assert!(
            take_by_ref(&mut events, 0).is_none(),
            "ref 0 never correlates"
        );
        assert!(take_by_ref(&mut events, 7).is_none());
    }

    #[tokio::test]
    async fn reply_is_matched_by_ref_and_pushes_are_kept_in_order() {
        let (url, server) = scripted(|mut ws| async move {
            let request = recv_client_frame(&mut ws).await;
            assert!(matches!(request.kind, Some(client_frame::Kind::Send(_))));
            assert_ne!(request.r#ref, 0);
            ws.send(bin(&push("first"))).await.unwrap();
            // A reply to some other ref, then a push, then the awaited Ack.
            ws.send(bin(&ServerFrame {
                r#ref: 999,
                kind: Some(Kind::Pong(Pong::default())),
            }))
            .await
            .unwrap();
            ws.send(bin(&push("second"))).await.unwrap();
            let ack = Ack {
                id: "1-0".into(),
                room: "r".into(),
                sent_at_ms: 1,
                duplicate: false,
            };
            ws.send(bin(&ServerFrame {
                r#ref: request.r#ref,
                kind: Some(Kind::Ack(ack)),
            }))
            .await
            .unwrap();
            let next = recv_client_frame(&mut ws).await;
            let error = ErrorFrame {
                code: ErrorCode::NotInRoom as i32,
                message: "no".into(),
            };
            ws.send(bin(&ServerFrame {
                r#ref: next.r#ref,
                kind: Some(Kind::Error(error)),
            }))
            .await
            .unwrap();
            while ws.next().await.is_some() {}
        })
        .await;
        let mut client = Client::connect(&url).await.unwrap();
        let ack = client.send("r", "hi").await.unwrap();
        assert_eq!(ack.id, "1-0");
        let refs: Vec<u64> = client.buffered_events().map(|f| f.r#ref).collect();
        assert_eq!(refs, [0, 999, 0]);
        assert_eq!(client.next_event().await.unwrap(), push("first"));
        assert_eq!(client.next_event().await.unwrap().r#ref, 999);
        assert_eq!(client.next_event().await.unwrap(), push("second"));
        let err = client.leave("r").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NotInRoom));
        assert!(client
            .next_event_timeout(Duration::from_millis(20))
            .await
            .unwrap()
            .is_none());
        client.close().await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refs_are_fresh_and_never_zero() {
        let (url, _server) =
            scripted(|mut ws| async move { while ws.next().await.is_some() {} }).await;
        let mut client = Client::connect(&url).await.unwrap();
        let a = client.fresh_ref();
        let b = client
            .start(client_frame::Kind::Ping(Ping { client_time_ms: 1 }))
            .await
            .unwrap();
        assert!(a != 0 && b != 0 && a != b);
    }

    #[tokio::test]
    async fn server_close_is_observed_with_code_and_reason() {
        let (url, server) = scripted(|mut ws| async move {
            ws.send(bin(&push("before close"))).await.unwrap();
            ws.close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "too slow".into(),
            }))
            .await
            .unwrap();
            while ws.next().await.is_some() {}
        })
        .await;
        let mut client = Client::connect(&url).await.unwrap();
        let info = client
            .wait_closed(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a close frame");
        assert_eq!(
            info,
            CloseInfo {
                code: 1008,
                reason: "too slow".into()
            }
        );
        assert!(client.is_closed());
        // The frame sent before the close is still there, and requests now fail.
        assert_eq!(client.next_event().await.unwrap(), push("before close"));
        assert!(matches!(
            client.ping().await,
            Err(ClientError::Closed(Some(_)))
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn request_times_out_when_nothing_answers() {
        let (url, _server) =
            scripted(|mut ws| async move { while ws.next().await.is_some() {} }).await;
        let mut client = Client::connect(&url).await.unwrap();
        client.set_timeout(Duration::from_millis(50));
        assert!(matches!(client.ping().await, Err(ClientError::Timeout(_))));
    }

    #[tokio::test]
    async fn wait_for_skips_to_the_wanted_frame() {
        let (url, _server) = scripted(|mut ws| async move {
            let presence = ServerFrame {
                r#ref: 0,
                kind: Some(Kind::Presence(PresenceChange::default())),
            };
            ws.send(bin(&presence)).await.unwrap();
            ws.send(bin(&push("wanted"))).await.unwrap();
            while ws.next().await.is_some() {}
        })
        .await;
        let mut client = Client::connect(&url).await.unwrap();
        let text = client
            .wait_for(|frame| match &frame.kind {
                Some(Kind::Message(m)) => Some(m.text.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(text, "wanted");
    }

    #[tokio::test]
    async fn connect_with_binds_the_local_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let _ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            peer
        });
        let local: IpAddr = "127.0.0.3".parse().unwrap();
        let _client = Client::connect_with(&url, Some(local)).await.unwrap();
        assert_eq!(server.await.unwrap().ip(), local);
    }

    #[tokio::test]
    async fn upgrade_refusal_reports_the_http_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
        assert!(matches!(
            Client::connect(&url).await,
            Err(ClientError::Rejected { status: 503 })
        ));
    }
}
