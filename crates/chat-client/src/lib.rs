//! An async client for the chat WebSocket protocol (`chat.v1`), used by the
//! integration tests, the benchmark and other tools.
//!
//! A [`Client`] owns one connection. Requests get a fresh `ref` and wait for
//! the frame that carries it; pushes (ref 0) and any other frame that arrives
//! meanwhile are kept, in arrival order, for [`Client::next_event`]. An
//! `Error` answering a request becomes [`ClientError::Server`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), chat_client::ClientError> {
//! let mut client = chat_client::Client::connect("ws://127.0.0.1:8080/ws").await?;
//! client.hello("alice").await?;
//! let joined = client.join("lobby").await?;
//! let ack = client.send("lobby", "hello").await?;
//! let pushed = client.next_event().await?; // the ChatMessage, or a presence change
//! # let _ = (joined, ack, pushed);
//! # Ok(()) }
//! ```
//!
//! For load generation, [`Client::into_split`] gives a [`ClientSender`] and a
//! [`ClientReceiver`] that work independently (each frame is decoded once).
//!
//! [`Resuming`] is a client that outlives its connections: it reconnects at
//! once after a loss, takes its name back with its resume token, re-joins
//! its rooms from the last message it saw and re-sends what was not
//! acknowledged, reporting everything as [`Event`]s.

mod backoff;
mod client;
mod connect;
mod error;
mod frame;
mod resuming;
mod split;

pub use backoff::Backoff;
pub use client::{Client, DEFAULT_TIMEOUT};
pub use error::{ClientError, CloseInfo};
pub use frame::{frame_name, now_ms};
pub use resuming::{
    EndReason, Event, Phases, Request, ResumeConfig, Resuming, ResumingHandle, Resumption,
};
pub use split::{ClientReceiver, ClientSender};

/// The generated protocol types, re-exported for convenience.
pub use chat_proto::v1;
/// The rustls of [`Client::connect_with_tls`], for building its `ClientConfig`.
pub use tokio_rustls::rustls;
/// Buffer and size settings accepted by [`Client::connect_with_config`].
pub use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
/// The WebSocket message type accepted by [`Client::send_raw`].
pub use tokio_tungstenite::tungstenite::Message as WsMessage;
