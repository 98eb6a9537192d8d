//! The embedded backend's presence: name claims and their takeover by a
//! resume token, room members (`Joined` on a name's first entry, `Left` on
//! its last exit), typing notices, and the entry screen's room list.

use std::collections::HashSet;

use async_trait::async_trait;

use super::{MemoryBridge, NameClaim};
use crate::{
    Ban, BridgeEvent, ControlCommand, Member, Presence, PresenceKind, Result, Resumed, RoomSummary,
    TokenHash,
};

#[async_trait]
impl Presence for MemoryBridge {
    async fn typing(&self, room: &str, member: &Member, active: bool) -> Result<()> {
        if let Some(state) = self.existing_room(room) {
            let state = state.lock();
            self.emit(
                &state,
                BridgeEvent::Typing {
                    room: room.to_owned(),
                    key: member.key.clone(),
                    username: member.username.clone(),
                    active,
                },
            );
        }
        Ok(())
    }

    async fn ban_of(&self, key: &str) -> Result<Option<Ban>> {
        Ok(self.ban_for(key))
    }

    async fn claim_username(&self, member: &Member, resume: &TokenHash) -> Result<bool> {
        let mut names = self.names.lock();
        match names.get(&member.key) {
            Some(claim) => Ok(claim.session == member.session_id),
            None => {
                names.insert(
                    member.key.clone(),
                    NameClaim {
                        session: member.session_id.clone(),
                        display: member.username.clone(),
                        resume: resume.clone(),
                    },
                );
                Ok(true)
            }
        }
    }

    async fn resume_username(
        &self,
        member: &Member,
        presented: &TokenHash,
        resume: &TokenHash,
    ) -> Result<Option<Resumed>> {
        let previous = {
            let mut names = self.names.lock();
            let Some(claim) = names.get_mut(&member.key) else {
                return Ok(None);
            };
            if !claim.resume.matches(presented) || claim.session == member.session_id {
                return Ok(None);
            }
            let previous = std::mem::replace(&mut claim.session, member.session_id.clone());
            claim.display.clone_from(&member.username);
            claim.resume = resume.clone();
            previous
        };
        // The earlier session's presence passes to the new one, silently.
        let mut rooms = Vec::new();
        for (name, state) in self.all_rooms() {
            let mut state = state.lock();
            if let Some((display, sessions)) = state.members.get_mut(&member.key) {
                if sessions.remove(&previous) {
                    sessions.insert(member.session_id.clone());
                    display.clone_from(&member.username);
                    rooms.push(name);
                }
            }
        }
        rooms.sort();
        self.sink
            .deliver(BridgeEvent::Control(ControlCommand::Replace {
                key: member.key.clone(),
                session_id: previous.clone(),
            }));
        Ok(Some(Resumed {
            previous_session: previous,
            rooms,
        }))
    }

    async fn release_username(&self, member: &Member) -> Result<()> {
        let mut names = self.names.lock();
        if names
            .get(&member.key)
            .is_some_and(|claim| claim.session == member.session_id)
        {
            names.remove(&member.key);
        }
        Ok(())
    }

    async fn enter_room(&self, room: &str, member: &Member) -> Result<Vec<String>> {
        let state = self.room(room);
        let mut state = state.lock();
        state.touch();
        let entry = state
            .members
            .entry(member.key.clone())
            .or_insert_with(|| (member.username.clone(), HashSet::new()));
        let first = entry.1.is_empty();
        entry.1.insert(member.session_id.clone());
        if first {
            self.emit(
                &state,
                BridgeEvent::Presence {
                    room: room.to_owned(),
                    key: member.key.clone(),
                    username: member.username.clone(),
                    kind: PresenceKind::Joined,
                },
            );
        }
        let mut names: Vec<String> = state
            .members
            .values()
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn leave_room(&self, room: &str, member: &Member) -> Result<()> {
        let Some(state) = self.existing_room(room) else {
            return Ok(());
        };
        let mut state = state.lock();
        let Some((_, sessions)) = state.members.get_mut(&member.key) else {
            return Ok(());
        };
        if !sessions.remove(&member.session_id) || !sessions.is_empty() {
            return Ok(());
        }
        let (username, _) = state.members.remove(&member.key).expect("present");
        state.touch();
        self.emit(
            &state,
            BridgeEvent::Presence {
                room: room.to_owned(),
                key: member.key.clone(),
                username,
                kind: PresenceKind::Left,
            },
        );
        Ok(())
    }

    async fn rooms(&self, limit: usize) -> Result<Vec<RoomSummary>> {
        let mut out: Vec<RoomSummary> = self
            .all_rooms()
            .into_iter()
            .filter_map(|(name, state)| {
                let state = state.lock();
                (!state.members.is_empty()).then(|| RoomSummary {
                    name,
                    member_count: state.members.len() as u32,
                    last_message_id: state.ids.back().copied(),
                    last_message_at_ms: state.history.back().map_or(0, |m| m.sent_at_ms),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.member_count
                .cmp(&a.member_count)
                .then_with(|| a.name.cmp(&b.name))
        });
        out.truncate(limit);
        Ok(out)
    }
}
