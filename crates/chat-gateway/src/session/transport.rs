//! A session's transport: the select loop that reads the client's frames and
//! everything else the session waits for, the batched writes of queued
//! frames, and the close handshake. What a frame asks for is decided in
//! `requests.rs` and `rules.rs`; this file only moves frames.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::in_flight::{next_outcome, MAX_IN_FLIGHT};
use super::rules::{self, End};
use super::Session;
use crate::conn::{close_code, ConnInbox, FULL_BATCH, IDLE_QUEUE_CAPACITY};
use crate::wire::Frame;

/// How long the end of a connection may take for each of its two steps:
/// answering the Sends in flight, and the goodbye (queued frames, the close
/// frame and the client's reply). A client that does not read is not
/// waited for longer.
const CLOSE_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// The close code a client's Close frame without a status stands for (RFC 6455 7.1.5).
const NO_STATUS: u16 = 1005;

impl Session {
    /// Runs the connection until it ends, then closes it (see [`Session::goodbye`]).
    pub(super) async fn pump<S>(&mut self, mut ws: WebSocketStream<S>, mut rx: ConnInbox) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let idle_timeout = self.shared.config.idle_timeout();
        let mut ping = tokio::time::interval(self.shared.config.ping_interval());
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let mut last_heard = Instant::now();
        let conn = self.conn.clone();
        // Reused between batches (see `IDLE_QUEUE_CAPACITY`).
        let mut batch: Vec<Frame> = Vec::new();

        let end = loop {
            tokio::select! {
                biased;
                code = conn.closed() => break End::ServerClosed(code),
                n = rx.recv_many(&mut batch) => {
                    if let Err(e) = self.write_batch(&mut ws, &mut rx, &mut batch, n).await {
                        break End::Io(e);
                    }
                }
                outcome = next_outcome(&mut self.in_flight), if !self.in_flight.is_empty() => {
                    let sent = self.in_flight.pop_front().expect("an outcome came from it");
                    self.answer(sent, outcome);
                }
                () = conn.command_queued() => {
                    self.settle().await;
                    while let Some(command) = conn.next_command() {
                        self.command(command).await;
                    }
                }
                // At the in-flight limit the client's frames wait in its socket.
                incoming = ws.next(), if self.in_flight.len() < MAX_IN_FLIGHT => {
                    last_heard = Instant::now();
                    if let Some(end) = self.incoming(incoming).await {
                        break end;
                    }
                }
                () = until(self.member.is_none().then_some(self.hello_deadline)), if self.member.is_none() => {
                    self.close_for_policy("no Hello in time");
                }
                () = until(self.token_expires), if self.token_expires.is_some() => {
                    self.token_expired();
                }
                () = until(self.inherited_until), if self.inherited_until.is_some() => {
                    self.settle().await;
                    self.leave_inherited().await;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        break End::Idle;
                    }
                    if let Err(e) = ws.send(Message::Ping(Bytes::new())).await {
                        break End::Io(e);
                    }
                }
            }
        };
        if let Some(code) = rules::close_code(&end) {
            self.goodbye(&mut ws, &mut rx, &mut batch, code).await;
        }
        end
    }

    /// Handles what the client's side of the socket gave: a frame, a
    /// close, an error, or its end (then the connection has ended).
    async fn incoming(&mut self, incoming: Option<Result<Message, WsError>>) -> Option<End> {
        match incoming {
            None => return Some(End::ClientClosed),
            Some(Ok(Message::Binary(data))) => {
                self.shared.metrics.frames_in.fetch_add(1, Relaxed);
                self.handle(data).await;
            }
            Some(Ok(Message::Text(_))) => {
                self.conn.close(close_code::UNSUPPORTED);
            }
            Some(Ok(Message::Close(frame))) => {
                self.client_close = Some(frame.map_or(NO_STATUS, |frame| u16::from(frame.code)));
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(_))) => {
                self.conn.close(close_code::TOO_BIG);
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Some(End::ClientClosed)
            }
            Some(Err(e)) => return Some(End::Io(e)),
        }
        None
    }

    /// Ends a connection the gateway closes with `code`: answers the Sends
    /// in flight (their messages stand either way), sends what is queued
    /// when it should go (see [`rules::flush_before_close`]), then the close
    /// frame, and reads until the client's reply so that the close code
    /// arrives. Never waits long on a client that does not read.
    async fn goodbye<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        rx: &mut ConnInbox,
        batch: &mut Vec<Frame>,
        code: u16,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _ = tokio::time::timeout(CLOSE_STEP_TIMEOUT, self.settle()).await;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: rules::close_reason(code, self.policy_reason).into(),
        };
        let flush_queue = rules::flush_before_close(code, self.policy_reason, self.client_close);
        let goodbye = async {
            ws.flush().await?;
            while rx.try_recv_many(batch) > 0 {
                if flush_queue {
                    crate::wire::write_all(ws.get_mut(), batch).await?;
                } else {
                    batch.clear();
                }
            }
            ws.send(Message::Close(Some(frame))).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<_, WsError>(())
        };
        let _ = tokio::time::timeout(CLOSE_STEP_TIMEOUT, goodbye).await;
    }

    /// Writes the `n` frames in `batch` (wire-ready, see `wire`) with as
    /// few system calls as the socket allows. A full batch means more is
    /// coming: the writer yields once (letting the fan-out queue more) and
    /// writes what arrived in the same call, so a busy connection makes
    /// fewer, larger writes.
    async fn write_batch<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        rx: &mut ConnInbox,
        batch: &mut Vec<Frame>,
        n: usize,
    ) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut written = n;
        if n >= FULL_BATCH {
            tokio::task::yield_now().await;
            written += rx.try_recv_many(batch);
        }
        // Whatever tungstenite still holds (a pong) goes first, whole.
        ws.flush().await?;
        if self.client_close.is_some() {
            // That flush sent tungstenite's reply to the client's Close:
            // nothing may follow it (RFC 6455 5.5.1).
            batch.clear();
            return Ok(());
        }
        crate::wire::write_all(ws.get_mut(), batch).await?;
        if batch.capacity() > IDLE_QUEUE_CAPACITY && rx.is_empty() {
            *batch = Vec::new();
        }
        self.shared
            .metrics
            .frames_out
            .fetch_add(written as u64, Relaxed);
        Ok(())
    }
}

/// Resolves at `deadline` (never when there is none).
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
