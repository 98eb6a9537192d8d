//! The embedded backend's bans: a map of identity key to ban, in this
//! process. An ended ban is dropped when it is next read.

use chat_proto::rules::now_ms;

use super::MemoryBridge;
use crate::{Ban, BridgeEvent, ControlCommand};

impl MemoryBridge {
    /// Records `ban`, replacing any earlier one of its key.
    pub(super) fn record_ban(&self, ban: &Ban) {
        self.bans.lock().insert(ban.key.clone(), ban.clone());
    }

    /// Tells this gateway to kick the identity's sessions when `kick`
    /// found none (for a Hello under way: the kick is cheap).
    pub(super) fn kick_banned(&self, ban: &Ban, sessions: u32) -> u32 {
        if sessions == 0 {
            self.sink
                .deliver(BridgeEvent::Control(ControlCommand::Kick {
                    key: ban.key.clone(),
                    room: None,
                    reason: ban.message(),
                }));
        }
        sessions
    }

    /// Lifts the ban on `key`; `false` when none held.
    pub(super) fn lift_ban(&self, key: &str) -> bool {
        let now = now_ms();
        self.bans
            .lock()
            .remove(key)
            .is_some_and(|ban| ban.is_active(now))
    }

    /// The bans that hold now, sorted by key (ended ones are dropped).
    pub(super) fn active_bans(&self) -> Vec<Ban> {
        let now = now_ms();
        let mut bans = self.bans.lock();
        bans.retain(|_, ban| ban.is_active(now));
        let mut out: Vec<Ban> = bans.values().cloned().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The ban on `key`, while it holds.
    pub(super) fn ban_for(&self, key: &str) -> Option<Ban> {
        let now = now_ms();
        let mut bans = self.bans.lock();
        match bans.get(key) {
            Some(ban) if ban.is_active(now) => Some(ban.clone()),
            Some(_) => {
                bans.remove(key);
                None
            }
            None => None,
        }
    }
}
