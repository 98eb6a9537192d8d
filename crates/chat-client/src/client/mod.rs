//! [`Client`]: one connection, request/reply matched by `ref`, pushes buffered in order.
//! The generic requests, the events and closing are here; the typed requests
//! (Hello, Join, Send, ...) in `requests`.

mod requests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use chat_proto::v1::{client_frame, ClientFrame, ServerFrame};
use chat_proto::Message as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connect::{open, open_with_config, open_with_tls, Ws};
use crate::frame::{classify, Incoming};
use crate::split::{ClientReceiver, ClientSender};
use crate::{ClientError, CloseInfo};

/// How long a request waits for its reply (and [`Client::next_event`] for a
/// frame) unless changed with [`Client::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Connects to a `wss://` (or `ws://`) URL; the server's certificate is
    /// verified with `tls` (its roots, and a client certificate if the
    /// server asks for one).
    pub async fn connect_with_tls(
        url: &str,
        tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        let ws = open_with_tls(url, None, WebSocketConfig::default(), Some(tls)).await?;
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
