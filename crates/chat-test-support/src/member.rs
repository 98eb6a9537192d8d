//! A chat member for tests that outlive connections: a [`Resuming`] client
//! whose events a task records, and the audit of what it received.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chat_client::v1::{Ack, ChatMessage, PresenceChange};
use chat_client::{
    ClientError, EndReason, Event, ResumeConfig, Resuming, ResumingHandle, Resumption,
};
use chat_proto::MessageId;
use tokio::task::JoinHandle;

/// Everything a [`Member`] received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Messages per room, replays (Joined.history) and pushes alike, in arrival order.
    pub messages: BTreeMap<String, Vec<ChatMessage>>,
    /// Rooms with a Joined (first or re-join), and how many.
    pub joined: BTreeMap<String, usize>,
    /// Members of each room as of its latest Joined.
    pub members: BTreeMap<String, Vec<String>>,
    /// PresenceChanges, in arrival order.
    pub presence: Vec<PresenceChange>,
    /// Acks by client_msg_id.
    pub acked: BTreeMap<String, Ack>,
    /// The `Event::Refused` events.
    pub refused: Vec<Event>,
    /// Connections lost.
    pub disconnects: usize,
    /// How each reconnect went.
    pub resumptions: Vec<Resumption>,
    /// The gateway of the current (or last) connection.
    pub gateway: String,
    /// The resume token of the current (or last) session.
    pub token: String,
    /// False between a Disconnected and the Resumed that ends it.
    pub connected: bool,
    /// Why the client stopped for good, once it has.
    pub ended: Option<EndReason>,
}

/// What one member got of one room, against what it should have got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Expected ids it never received.
    pub missing: usize,
    /// Ids received more than once.
    pub duplicates: usize,
    /// Ids received after a greater id (duplicates aside).
    pub out_of_order: usize,
}

impl Seen {
    /// Checks the room's messages against `expected`: each id exactly once,
    /// in increasing order. Ids not in `expected` (e.g. sent before the test
    /// counted) are only checked for order and duplicates.
    pub fn audit(&self, room: &str, expected: &BTreeSet<MessageId>) -> Audit {
        let mut audit = Audit::default();
        let mut got = BTreeSet::new();
        let mut last: Option<MessageId> = None;
        for message in self.messages.get(room).into_iter().flatten() {
            let Ok(id) = message.id.parse::<MessageId>() else {
                audit.out_of_order += 1;
                continue;
            };
            if !got.insert(id) {
                audit.duplicates += 1;
            } else if last.is_some_and(|last| id < last) {
                audit.out_of_order += 1;
            }
            last = last.max(Some(id));
        }
        audit.missing = expected.difference(&got).count();
        audit
    }
}

/// A [`Resuming`] client recorded into a [`Seen`]; closed on drop.
#[derive(Debug)]
pub struct Member {
    name: String,
    handle: ResumingHandle,
    /// std mutex: held only to record one event or to read, never across an await.
    seen: Arc<Mutex<Seen>>,
    recorder: JoinHandle<()>,
}

impl Member {
    /// Connects (see [`Resuming::connect`]) and starts recording.
    pub async fn start(config: ResumeConfig) -> Result<Self, ClientError> {
        let mut client = Resuming::connect(config).await?;
        let welcome = client.welcome().clone();
        let seen = Arc::new(Mutex::new(Seen {
            gateway: welcome.gateway_id.clone(),
            token: welcome.resume_token.clone(),
            connected: true,
            ..Seen::default()
        }));
        let handle = client.handle().clone();
        let recording = Arc::clone(&seen);
        let recorder = tokio::spawn(async move {
            while let Some(event) = client.next_event().await {
                record(&mut recording.lock().expect("not poisoned"), event);
            }
        });
        Ok(Self {
            name: welcome.username,
            handle,
            seen,
            recorder,
        })
    }

    /// The name it was welcomed with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its requests go.
    pub fn handle(&self) -> &ResumingHandle {
        &self.handle
    }

    /// Reads what it has seen so far.
    pub fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().expect("not poisoned"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Dropping the client (owned by the recorder) closes its connection.
        self.recorder.abort();
    }
}

fn record(seen: &mut Seen, event: Event) {
    match event {
        Event::Joined { joined, .. } => {
            *seen.joined.entry(joined.room.clone()).or_default() += 1;
            seen.members
                .insert(joined.room.clone(), joined.members.clone());
            seen.messages
                .entry(joined.room)
                .or_default()
                .extend(joined.history);
        }
        Event::Left { room } => {
            seen.joined.remove(&room);
        }
        Event::Message(message) => seen
            .messages
            .entry(message.room.clone())
            .or_default()
            .push(message),
        Event::Presence(presence) => seen.presence.push(presence),
        Event::Acked { client_msg_id, ack } => {
            seen.acked.insert(client_msg_id, ack);
        }
        refused @ Event::Refused { .. } => seen.refused.push(refused),
        Event::Disconnected { .. } => {
            seen.disconnects += 1;
            seen.connected = false;
        }
        Event::Resumed(resumption) => {
            seen.gateway = resumption.welcome.gateway_id.clone();
            seen.token = resumption.welcome.resume_token.clone();
            seen.connected = true;
            seen.resumptions.push(resumption);
        }
        Event::Ended(reason) => {
            seen.connected = false;
            seen.ended = Some(reason);
        }
        Event::Typing(_) | Event::Other(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            room: "r".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_audit_finds_gaps_duplicates_and_disorder() {
        let mut seen = Seen::default();
        seen.messages.insert(
            "r".into(),
            ["1-0", "2-0", "2-0", "4-0", "3-0"].map(message).to_vec(),
        );
        let expected: BTreeSet<MessageId> = ["1-0", "2-0", "3-0", "4-0", "5-0"]
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
        assert_eq!(
            seen.audit("r", &expected),
            Audit {
                missing: 1,
                duplicates: 1,
                out_of_order: 1
            }
        );
        assert_eq!(seen.audit("other", &BTreeSet::new()), Audit::default());
    }
}
