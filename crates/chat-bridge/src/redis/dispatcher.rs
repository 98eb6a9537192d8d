//! The dispatcher: the one task that turns the subscriber connection's
//! traffic into sink events, in order, with delivery cursors per room and a
//! stream re-read after a reconnect or anything it could not decode.

use super::*;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cursor {
    /// Newest id handed to the sink.
    pub(super) delivered: Option<MessageId>,
    /// Stream tip when the subscription started: where a gap read begins if
    /// nothing was delivered yet.
    pub(super) floor: MessageId,
}

impl Inner {
    /// Delivers a message unless it was delivered already (by id).
    pub(super) fn deliver_message(&self, message: MessageEvent) {
        {
            let mut cursors = self.cursors.lock();
            let Some(cursor) = cursors.get_mut(&message.room) else {
                return;
            };
            if cursor.delivered.is_some_and(|last| message.id <= last) {
                return;
            }
            cursor.delivered = Some(message.id);
        }
        self.sink.deliver(BridgeEvent::Message(message));
    }

    /// Reads what each subscribed room missed while the subscription was
    /// down and delivers it, before any live message that is still queued.
    pub(super) async fn recover(&self) {
        let rooms: Vec<(String, MessageId)> = self
            .cursors
            .lock()
            .iter()
            .map(|(room, c)| (room.clone(), c.delivered.unwrap_or(c.floor)))
            .collect();
        for (room, from) in rooms {
            loop {
                match self.read_after(&room, from, None).await {
                    Ok(messages) => {
                        let n = messages.len();
                        for msg in messages {
                            if let Ok(id) = msg.id.parse() {
                                self.deliver_message(MessageEvent::new(id, &msg));
                            }
                        }
                        if n > 0 {
                            tracing::info!(
                                room,
                                recovered = n,
                                "delivered messages missed during a redis outage"
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, room, "reading missed messages failed, retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }

    /// Hands one pub/sub payload to the sink. Returns true when a room's
    /// payload could not be decoded (a newer gateway's format, say): the
    /// caller then re-reads the streams, so nothing is skipped.
    pub(super) fn handle_payload(&self, channel: &str, payload: Bytes) -> bool {
        let Some(room) = self.keys.room_of_channel(channel) else {
            if channel == self.keys.control() {
                self.handle_control(&payload);
            }
            return false;
        };
        let room = room.as_ref();
        match wire::decode(room, &payload) {
            Some(wire::Payload::Messages(messages)) => {
                for message in messages {
                    self.deliver_message(message);
                }
            }
            Some(wire::Payload::Other(event)) => {
                if self.cursors.lock().contains_key(room) {
                    self.sink.deliver(event);
                }
            }
            None => {
                tracing::warn!(
                    channel,
                    "undecodable payload on a room channel; re-reading the streams"
                );
                return true;
            }
        }
        false
    }
}

/// The one task that turns subscriber traffic into sink events, in order.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut messages = inner.subscriber.message_rx();
    let mut reconnects = inner.subscriber.reconnect_rx();
    loop {
        tokio::select! {
            biased;
            reconnect = reconnects.recv() => {
                if matches!(reconnect, Err(RecvError::Closed)) {
                    return;
                }
                // Re-subscribe first, then read the gap: anything published
                // after the re-subscription arrives live and is deduped by id.
                while let Err(e) = inner.subscriber.resubscribe_all().await {
                    tracing::warn!(error = %e, "re-subscribing failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                inner.recover().await;
            }
            message = messages.recv() => match message {
                Ok(message) => {
                    let payload = match message.value {
                        Value::Bytes(b) => b,
                        Value::String(s) => s.into_inner(),
                        _ => continue,
                    };
                    if inner.handle_payload(&message.channel, payload) {
                        inner.recover().await;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "subscriber fell behind; re-reading the streams");
                    inner.recover().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
