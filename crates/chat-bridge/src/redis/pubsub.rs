//! Pub/sub on either deployment. On one Redis: classic PUBLISH/SUBSCRIBE on
//! the one subscriber connection. On a Redis Cluster: sharded
//! SPUBLISH/SSUBSCRIBE, so that a channel lives on the shard that owns its
//! hash slot: a room's events never leave the room's shard (classic pub/sub
//! on a cluster copies every message to every node), and the subscriber
//! keeps one connection per primary, whatever the number of rooms.
//!
//! Scripts publish too: their Lua text is the same file for both, with
//! `redis.call('PUBLISH'` turned into `redis.call('SPUBLISH'` on a cluster
//! ([`script_text`]); the channel carries the room's hash tag, so the
//! script still touches one slot.

use fred::bytes_utils::Str;
use fred::prelude::*;

use super::Inner;

/// How a script publishes in its Lua text.
const CLASSIC: &str = "redis.call('PUBLISH',";
/// The same call on sharded pub/sub.
const SHARDED: &str = "redis.call('SPUBLISH',";

/// The Lua text of `lua` for this deployment (see the module docs).
pub(super) fn script_text(lua: &'static str, sharded: bool) -> Str {
    if sharded {
        Str::from(lua.replace(CLASSIC, SHARDED))
    } else {
        Str::from_static(lua)
    }
}

impl Inner {
    /// Subscribes the subscriber connection(s) to `channel`.
    pub(super) async fn listen(&self, channel: String) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.subscriber.ssubscribe(channel).await
        } else {
            self.subscriber.subscribe(channel).await
        }
    }

    /// Unsubscribes from `channel`.
    pub(super) async fn unlisten(&self, channel: String) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.subscriber.sunsubscribe(channel).await
        } else {
            self.subscriber.unsubscribe(channel).await
        }
    }

    /// Publishes `payload` on `channel` (outside a script).
    pub(super) async fn publish_on(
        &self,
        channel: String,
        payload: impl Into<Value> + Send,
    ) -> Result<(), fred::error::Error> {
        let _: u64 = if self.sharded {
            self.client.spublish(channel, payload.into()).await?
        } else {
            self.client.publish(channel, payload.into()).await?
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_that_publishes_publishes_sharded_on_a_cluster() {
        use super::super::scripts::*;
        for lua in [PUBLISH, ENTER, LEAVE, REAP_ROOM] {
            assert!(lua.contains(CLASSIC), "{lua}");
            let sharded = script_text(lua, true);
            assert!(!sharded.contains(CLASSIC), "{sharded}");
            assert_eq!(
                sharded.matches(SHARDED).count(),
                lua.matches(CLASSIC).count()
            );
            assert_eq!(&*script_text(lua, false), lua);
        }
        for lua in [DELETE_IF_PREFIX, RETAG, SWAP, TAKE_IF_PREFIX] {
            assert!(!lua.to_ascii_uppercase().contains("PUBLISH"), "{lua}");
        }
    }
}
