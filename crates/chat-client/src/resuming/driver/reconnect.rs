//! How the driver comes back after a loss: attempts with backoff, each one
//! a connect, a Hello with the resume token, the re-joins from each room's
//! resume point and the re-sends of what was not acknowledged.

use std::time::Duration;

use chat_proto::v1::server_frame::Kind;
use chat_proto::v1::{client_frame, ErrorCode, Join, ServerFrame, Welcome};
use tokio::time::Instant;

use super::inbound::{fatal_close, fatal_code};
use super::{Awaiting, Driver};
use crate::backoff::random_unit;
use crate::frame::send_kind;
use crate::resuming::{EndReason, Event, Phases, Request, Resumption};
use crate::{Client, ClientError};

/// Why one reconnect attempt failed.
enum Failed {
    Retry { name_taken: bool },
    Fatal(EndReason),
}

impl Driver {
    /// Reconnects until it works (or must stop): at once with a little
    /// jitter, then backing off while attempts fail.
    pub(super) async fn reconnect(
        &mut self,
        lost_at: Instant,
        moved: bool,
    ) -> Result<Client, EndReason> {
        let mut failures = 0u32;
        let mut name_taken = 0u32;
        let mut attempts = 0u32;
        loop {
            // A drain already spread its clients over time.
            let delay = if moved && failures == 0 {
                Duration::ZERO
            } else {
                self.config.backoff.delay(failures, random_unit())
            };
            self.wait(Instant::now() + delay).await?;
            attempts += 1;
            let with_token = !self.token.is_empty();
            match tokio::time::timeout(self.config.attempt_timeout, self.attempt()).await {
                Ok(Ok((client, welcome, phases))) => {
                    self.pending.push_back(Event::Resumed(Resumption {
                        welcome,
                        lost_at,
                        downtime: lost_at.elapsed(),
                        attempts,
                        name_taken,
                        with_token,
                        rooms: self.rooms.len(),
                        phases,
                    }));
                    return Ok(client);
                }
                Ok(Err(Failed::Fatal(reason))) => return Err(reason),
                Ok(Err(Failed::Retry { name_taken: taken })) => {
                    failures += 1;
                    name_taken += u32::from(taken);
                }
                Err(_) => failures += 1,
            }
        }
    }

    /// One attempt: connect, Hello with the token, re-join every room from
    /// its resume point, re-send what was not acknowledged.
    async fn attempt(&mut self) -> Result<(Client, Welcome, Phases), Failed> {
        let retry = |_| Failed::Retry { name_taken: false };
        self.refs.clear();
        let started = Instant::now();
        let mut client = Client::connect_with_config(
            &self.config.url,
            self.config.local_addr,
            self.config.ws_config,
        )
        .await
        .map_err(retry)?;
        client.set_timeout(self.config.attempt_timeout);
        let connected = Instant::now();
        let welcome = client
            .hello_resuming(&self.username, &self.token)
            .await
            .map_err(hello_failed)?;
        // The new session holds the name now: its token is the one to keep.
        self.token = welcome.resume_token.clone();
        let welcomed = Instant::now();
        self.rejoin(&mut client).await?;
        self.resend(&mut client).await.map_err(retry)?;
        let phases = Phases {
            connect: connected - started,
            hello: welcomed - connected,
            rejoin: welcomed.elapsed(),
        };
        Ok((client, welcome, phases))
    }

    /// Re-joins every room from its resume point, the Joins sent together.
    /// A room refused for good is dropped and reported; a passing trouble
    /// fails the attempt.
    async fn rejoin(&mut self, client: &mut Client) -> Result<(), Failed> {
        let retry = |_| Failed::Retry { name_taken: false };
        let mut joins = Vec::with_capacity(self.rooms.len());
        for (name, room) in &self.rooms {
            let join = client_frame::Kind::Join(Join {
                room: name.clone(),
                since_id: room.since.clone(),
                history_limit: room.history_limit,
            });
            joins.push((client.start(join).await.map_err(retry)?, name.clone()));
        }
        for (r, room) in joins {
            let reply = client.wait_reply(r).await.map_err(retry)?;
            match reply.kind {
                Some(Kind::Joined(joined)) => {
                    let rejoin = self.rooms.get(&room).is_some_and(|r| r.joined);
                    self.joined(joined, rejoin);
                }
                Some(Kind::Error(error)) => {
                    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                    // Passing troubles: the next connection tries again.
                    if matches!(
                        code,
                        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited
                    ) {
                        return Err(Failed::Retry { name_taken: false });
                    }
                    self.rooms.remove(&room);
                    self.pending.push_back(Event::Refused {
                        request: Request::Join { room },
                        code,
                        message: error.message,
                    });
                }
                kind => self
                    .pending
                    .push_back(Event::Other(ServerFrame { r#ref: r, kind })),
            }
        }
        Ok(())
    }

    /// Re-sends what was not acknowledged, in submission order, with the same keys.
    async fn resend(&mut self, client: &mut Client) -> Result<(), ClientError> {
        for (seq, outgoing) in &self.outbox {
            let kind = send_kind(&outgoing.room, &outgoing.text, &outgoing.client_msg_id);
            let r = client.start(kind).await?;
            self.refs.insert(r, Awaiting::Send { seq: *seq });
        }
        Ok(())
    }
}

/// How a refused Hello fails an attempt: for good when retrying cannot fix
/// it, else to be retried (counting a name still held).
fn hello_failed(e: ClientError) -> Failed {
    match e {
        ClientError::Server { code, message } => match code {
            ErrorCode::UsernameTaken => Failed::Retry { name_taken: true },
            ErrorCode::InvalidUsername | ErrorCode::NotAuthenticated => {
                Failed::Fatal(EndReason::Refused { code, message })
            }
            code => match fatal_code(code as i32) {
                Some(reason) => Failed::Fatal(reason),
                None => Failed::Retry { name_taken: false },
            },
        },
        e => match e.close_info().and_then(|c| fatal_close(c.code)) {
            Some(reason) => Failed::Fatal(reason),
            None => Failed::Retry { name_taken: false },
        },
    }
}
