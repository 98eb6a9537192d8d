//! One room of the embedded backend: its history, members, subscribers and
//! the dedupe keys of its senders, behind the room's lock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;

use crate::Accepted;

/// One room: its retained history, its members and subscribers, and the
/// dedupe keys of its senders.
#[derive(Default)]
pub(super) struct RoomState {
    pub(super) history: VecDeque<ChatMessage>,
    /// Parsed ids of `history`, same order (ids are parsed once, at publish).
    pub(super) ids: VecDeque<MessageId>,
    pub(super) last_id: MessageId,
    /// The newest id trimmed away, as Redis' `max-deleted-entry-id`.
    pub(super) max_trimmed: Option<MessageId>,
    /// Name key -> (display name, sessions present).
    pub(super) members: BTreeMap<String, (String, HashSet<String>)>,
    /// Subscription references; events are delivered while > 0.
    pub(super) subscribers: usize,
    /// (sender key, client_msg_id) -> original outcome, with expiry order.
    pub(super) dedupe: HashMap<(String, String), (Accepted, Instant)>,
    pub(super) dedupe_order: VecDeque<(Instant, (String, String))>,
    /// The last publish, entry or exit (for expiry).
    pub(super) last_activity: Option<Instant>,
}

impl RoomState {
    /// Nobody is in it or listening to it.
    pub(super) fn droppable(&self) -> bool {
        self.members.is_empty() && self.subscribers == 0
    }

    /// Droppable, and idle for at least `ttl`.
    pub(super) fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.droppable()
            && self
                .last_activity
                .is_some_and(|at| now.duration_since(at) >= ttl)
    }

    /// Records activity now (the room does not expire for another ttl).
    pub(super) fn touch(&mut self) {
        self.last_activity = Some(Instant::now());
    }

    /// Forgets the dedupe keys whose window has passed.
    pub(super) fn expire_dedupe(&mut self, now: Instant) {
        while let Some((at, _)) = self.dedupe_order.front() {
            if *at > now {
                break;
            }
            let (_, key) = self.dedupe_order.pop_front().expect("front exists");
            if self.dedupe.get(&key).is_some_and(|(_, exp)| *exp <= now) {
                self.dedupe.remove(&key);
            }
        }
    }

    /// Index of the first retained message with id > `after`.
    pub(super) fn first_after(&self, after: MessageId) -> usize {
        self.ids.partition_point(|id| *id <= after)
    }
}
