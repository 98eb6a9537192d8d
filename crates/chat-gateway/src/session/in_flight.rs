//! The Send pipeline of a session: a Send is checked, submitted to the
//! bridge (which fixes its place in the room's order at once) and answered
//! when the bridge decides, oldest first. Up to [`MAX_IN_FLIGHT`] Sends wait
//! for their outcome together, so one client's messages cost no round trip
//! each; any other request waits until they are answered ([`Session::settle`]),
//! so replies keep the order of requests.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;

use chat_bridge::{Accepted, NewMessage, Pending};
use chat_proto::v1::{server_frame, Ack, Send};

use super::rules;
use super::Session;

/// Sends a connection may have in flight (submitted, outcome not known yet)
/// before the gateway stops reading its frames until one is answered.
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// A submitted Send waiting for its outcome.
pub(super) struct InFlight {
    /// The Send's `ref`, for its Ack.
    r: u64,
    /// The NFC room name, for its Ack.
    room: String,
    outcome: Pending,
}

/// The outcome of the oldest Send in flight (the queue must not be empty
/// when this is polled).
pub(super) fn next_outcome(
    in_flight: &mut VecDeque<InFlight>,
) -> impl Future<Output = chat_bridge::Result<Accepted>> + '_ {
    std::future::poll_fn(move |cx| {
        let oldest = in_flight.front_mut().expect("polled with Sends in flight");
        Future::poll(Pin::new(&mut oldest.outcome), cx)
    })
}

impl Session {
    /// Checks a Send and submits it; its answer comes from the pump once
    /// the bridge decides. A refused Send takes no token and is answered
    /// after the Sends before it.
    pub(super) async fn send(&mut self, r: u64, send: Send) {
        let max_text_bytes = self.shared.limits.max_text_bytes as usize;
        let room = match rules::check_send(&send, &self.rooms, max_text_bytes) {
            Ok(room) => room,
            Err(rejection) => {
                self.settle().await;
                return self.reject(r, rejection);
            }
        };
        let member = self.member();
        let message = NewMessage {
            room,
            sender_key: member.key.clone(),
            username: member.username.clone(),
            text: send.text,
            client_msg_id: send.client_msg_id,
            system: false,
        };
        if !self.send_bucket.try_take() {
            self.settle().await;
            return self.rate_limited(r, message).await;
        }
        let room = message.room.clone();
        let outcome = self.shared.bridge.submit(message).await;
        self.in_flight.push_back(InFlight { r, room, outcome });
    }

    /// Out of send tokens. A retry of an accepted message is still answered
    /// with its original Ack.
    async fn rate_limited(&mut self, r: u64, message: NewMessage) {
        if !message.client_msg_id.is_empty() {
            match self
                .shared
                .bridge
                .find_duplicate(&message.room, &message.sender_key, &message.client_msg_id)
                .await
            {
                Ok(Some(original)) => return self.ack(r, message.room, original),
                Ok(None) => {}
                Err(e) => return self.unavailable(r, &e),
            }
        }
        self.reject(r, rules::sending_too_fast());
    }

    /// Answers a Send whose outcome is known. A duplicate or a failure
    /// gives its token back.
    pub(super) fn answer(&mut self, sent: InFlight, outcome: chat_bridge::Result<Accepted>) {
        match outcome {
            Ok(accepted) => {
                if accepted.duplicate {
                    self.send_bucket.refund();
                }
                self.ack(sent.r, sent.room, accepted);
            }
            Err(e) => {
                self.send_bucket.refund();
                self.unavailable(sent.r, &e);
            }
        }
    }

    /// Waits for every Send in flight and answers them, in order.
    pub(super) async fn settle(&mut self) {
        while let Some(mut sent) = self.in_flight.pop_front() {
            let outcome = (&mut sent.outcome).await;
            self.answer(sent, outcome);
        }
    }

    fn ack(&self, r: u64, room: String, accepted: Accepted) {
        let counter = if accepted.duplicate {
            &self.shared.metrics.messages_duplicate
        } else {
            &self.shared.metrics.messages_accepted
        };
        counter.fetch_add(1, Relaxed);
        self.reply(
            r,
            server_frame::Kind::Ack(Ack {
                id: accepted.id.to_string(),
                room,
                sent_at_ms: accepted.sent_at_ms,
                duplicate: accepted.duplicate,
            }),
        );
    }
}
