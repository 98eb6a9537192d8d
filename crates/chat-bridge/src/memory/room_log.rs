//! The embedded backend's room log: subscriptions, accepting messages in
//! one order per room (ids assigned under the room's lock), and history.

use std::time::Instant;

use async_trait::async_trait;
use chat_proto::rules::{now_ms, DEDUPE_WINDOW};
use chat_proto::v1::ChatMessage;
use chat_proto::MessageId;

use super::MemoryBridge;
use crate::{
    Accepted, BridgeEvent, HistoryPage, MessageEvent, NewMessage, Replay, Result, RoomLog,
};

#[async_trait]
impl RoomLog for MemoryBridge {
    async fn subscribe(&self, room: &str) -> Result<()> {
        self.room(room).lock().subscribers += 1;
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) -> Result<()> {
        if let Some(state) = self.existing_room(room) {
            let mut state = state.lock();
            state.subscribers = state.subscribers.saturating_sub(1);
        }
        Ok(())
    }

    async fn publish(&self, msg: NewMessage) -> Result<Accepted> {
        let state = self.room(&msg.room);
        let mut state = state.lock();
        let now = Instant::now();
        state.expire_dedupe(now);
        let dedupe_key = (!msg.client_msg_id.is_empty())
            .then(|| (msg.sender_key.clone(), msg.client_msg_id.clone()));
        if let Some(key) = &dedupe_key {
            if let Some((original, _)) = state.dedupe.get(key) {
                return Ok(Accepted {
                    duplicate: true,
                    ..*original
                });
            }
        }

        state.touch();
        let sent_at_ms = now_ms();
        let id = state.last_id.successor_at(sent_at_ms);
        state.last_id = id;
        let accepted = Accepted {
            id,
            sent_at_ms,
            duplicate: false,
        };
        if let Some(key) = dedupe_key {
            let expires = now + DEDUPE_WINDOW;
            state.dedupe.insert(key.clone(), (accepted, expires));
            state.dedupe_order.push_back((expires, key));
        }

        let message = ChatMessage {
            id: id.to_string(),
            room: msg.room,
            username: msg.username,
            text: msg.text,
            sent_at_ms,
            client_msg_id: msg.client_msg_id,
            system: msg.system,
        };
        let event = MessageEvent::new(id, &message);
        state.history.push_back(message);
        state.ids.push_back(id);
        while state.history.len() > self.history_len {
            state.history.pop_front();
            state.max_trimmed = state.ids.pop_front();
        }
        self.emit(&state, BridgeEvent::Message(event));
        Ok(accepted)
    }

    async fn find_duplicate(
        &self,
        room: &str,
        sender_key: &str,
        client_msg_id: &str,
    ) -> Result<Option<Accepted>> {
        let Some(state) = self.existing_room(room) else {
            return Ok(None);
        };
        let mut state = state.lock();
        state.expire_dedupe(Instant::now());
        let key = (sender_key.to_owned(), client_msg_id.to_owned());
        Ok(state.dedupe.get(&key).map(|(original, _)| Accepted {
            duplicate: true,
            ..*original
        }))
    }

    async fn replay_after(&self, room: &str, after: MessageId) -> Result<Replay> {
        let Some(state) = self.existing_room(room) else {
            return Ok(Replay::default());
        };
        let state = state.lock();
        let start = state.first_after(after);
        Ok(Replay {
            messages: state.history.range(start..).cloned().collect(),
            truncated: state.max_trimmed.is_some_and(|trimmed| trimmed > after),
        })
    }

    async fn recent(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>> {
        let Some(state) = self.existing_room(room) else {
            return Ok(Vec::new());
        };
        let state = state.lock();
        let start = state.history.len().saturating_sub(limit);
        Ok(state.history.range(start..).cloned().collect())
    }

    async fn history_before(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let Some(state) = self.existing_room(room) else {
            return Ok(HistoryPage::default());
        };
        let state = state.lock();
        let end = match before {
            Some(before) => state.ids.partition_point(|id| *id < before),
            None => state.ids.len(),
        };
        let start = end.saturating_sub(limit);
        Ok(HistoryPage {
            messages: state.history.range(start..end).cloned().collect(),
            has_more: start > 0,
        })
    }
}
