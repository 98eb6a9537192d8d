//! The typed requests of a [`Client`]: each sends one request and waits for
//! the reply it expects (an `Error` reply becomes [`ClientError::Server`]).

use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{
    client_frame, Ack, FetchHistory, Hello, HistoryPage, Join, Joined, Leave, Left, Ping, Pong,
    Typing, Welcome,
};

use super::Client;
use crate::frame::{expect_reply, now_ms, send_kind};
use crate::ClientError;

/// Sent as `Hello.client`, for the gateway's logs.
const CLIENT_NAME: &str = concat!("chat-client/", env!("CARGO_PKG_VERSION"));

impl Client {
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
}
