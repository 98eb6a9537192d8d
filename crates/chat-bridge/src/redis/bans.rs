//! Bans in Redis: one string key per banned identity (`Keys::ban`, JSON,
//! expiring when the ban ends, so an ended ban needs no cleanup to stop
//! holding), and a sorted set of the banned keys by end time
//! (`Keys::bans`) for listing, trimmed when read. A Hello reads the one key.

use chat_proto::rules::now_ms;
use fred::prelude::*;
use fred::types::Expiration;

use super::control::Control;
use super::{unavailable, Inner};
use crate::{Ban, BridgeError, Result};

impl Inner {
    /// Records the ban, then kicks the identity everywhere (the kick is
    /// published even when no session is found, for a Hello under way).
    pub(super) async fn ban(&self, ban: &Ban) -> Result<u32> {
        let json = serde_json::to_string(ban).map_err(|e| BridgeError::Corrupt(e.to_string()))?;
        let now = now_ms();
        let expire = match ban.until_ms {
            Some(until) if until <= now => return Ok(0),
            Some(until) => Some(Expiration::PX((until - now) as i64)),
            None => None,
        };
        let score = ban.until_ms.map_or(f64::INFINITY, |until| until as f64);
        let _: () = self
            .client
            .set(self.keys.ban(&ban.key), json, expire, None, false)
            .await
            .map_err(unavailable)?;
        let _: () = self
            .client
            .zadd(
                self.keys.bans(),
                None,
                None,
                false,
                false,
                (score, ban.key.as_str()),
            )
            .await
            .map_err(unavailable)?;
        let sessions = self.sessions_of(&ban.key, None).await?.len() as u32;
        let kick = Control::Kick {
            key: ban.key.clone(),
            room: None,
            reason: ban.message(),
        };
        self.publish_control(&kick).await?;
        Ok(sessions)
    }

    /// Lifts the ban on `key`; `false` when none held.
    pub(super) async fn unban(&self, key: &str) -> Result<bool> {
        let removed: u64 = self
            .client
            .del(self.keys.ban(key))
            .await
            .map_err(unavailable)?;
        let _: u64 = self
            .client
            .zrem(self.keys.bans(), key)
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    /// The bans that hold now, sorted by key.
    pub(super) async fn bans(&self) -> Result<Vec<Ban>> {
        let index = self.keys.bans();
        let now = now_ms() as f64;
        let _: u64 = self
            .client
            .zremrangebyscore(&index, "-inf", now)
            .await
            .map_err(unavailable)?;
        let mut keys: Vec<String> = self
            .client
            .zrange(&index, 0, -1, None, false, None, false)
            .await
            .map_err(unavailable)?;
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        // One GET per ban: bans are few, and each key may sit in another
        // cluster slot (no multi-key MGET).
        for key in keys {
            if let Some(ban) = self.ban_of(&key).await? {
                out.push(ban);
            }
        }
        Ok(out)
    }

    /// The ban on `key`, while it holds.
    pub(super) async fn ban_of(&self, key: &str) -> Result<Option<Ban>> {
        let json: Option<String> = self
            .client
            .get(self.keys.ban(key))
            .await
            .map_err(unavailable)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let ban: Ban = serde_json::from_str(&json)
            .map_err(|e| BridgeError::Corrupt(format!("ban of {key:?}: {e}")))?;
        Ok(ban.is_active(now_ms()).then_some(ban))
    }
}
