//! Pub/sub on either deployment. On one Redis: classic PUBLISH/SUBSCRIBE on
//! the one subscriber connection. On a Redis Cluster: sharded
//! SPUBLISH/SSUBSCRIBE, so that a channel lives on the shard that owns its
//! hash slot: a room's events never leave the room's shard (classic pub/sub
//! on a cluster copies every message to every node), and a gateway keeps one
//! subscriber connection per primary (`shards.rs`), whatever the number of
//! rooms.
//!
//! Scripts publish too: their Lua text is the same file for both, with
//! `redis.call('PUBLISH'` turned into `redis.call('SPUBLISH'` on a cluster
//! ([`script_text`]); the channel carries the room's hash tag, so the
//! script still touches one slot.

use fred::bytes_utils::Str;
use fred::clients::Pipeline;
use fred::prelude::*;

use super::shards::Shard;
use super::{topology, Arc, Inner};

/// Whether Redis redirected the command (its slot is served elsewhere now).
pub(super) fn is_redirect(e: &fred::error::Error) -> bool {
    let details = e.details();
    details.starts_with("MOVED") || details.starts_with("ASK")
}

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
    /// Subscribes to `channel`: on a cluster, on the subscriber connection
    /// of the primary serving its slot.
    pub(super) async fn listen(&self, channel: String) -> Result<(), fred::error::Error> {
        if !self.sharded {
            return self.subscriber.subscribe(channel).await;
        }
        let shard = self.shard_of(&channel)?;
        let subscribed = shard.subscriber.ssubscribe(channel).await;
        if subscribed.as_ref().is_err_and(is_redirect) {
            self.topology_hint.notify_one();
        }
        subscribed
    }

    /// Unsubscribes from `channel` (on a cluster, where its slot is served
    /// now: where it was served before, Redis ended the subscription itself
    /// when the slot moved, or the connection is gone with the primary).
    pub(super) async fn unlisten(&self, channel: String) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.shard_of(&channel)?
                .subscriber
                .sunsubscribe(channel)
                .await
        } else {
            self.subscriber.unsubscribe(channel).await
        }
    }

    /// The shard serving `key`'s slot (on a cluster).
    pub(super) fn shard_of(&self, key: &str) -> Result<Arc<Shard>, fred::error::Error> {
        self.shards.serving(topology::slot_of(key)).ok_or_else(|| {
            fred::error::Error::new(
                fred::error::ErrorKind::Cluster,
                "the cluster's slot map is not known yet",
            )
        })
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

    /// Queues a publish of `payload` on `channel` in `pipeline`.
    pub(super) async fn queue_publish(
        &self,
        pipeline: &Pipeline<Client>,
        channel: String,
        payload: impl Into<Value> + Send,
    ) -> Result<(), fred::error::Error> {
        if self.sharded {
            pipeline.spublish(channel, payload.into()).await
        } else {
            pipeline.publish(channel, payload.into()).await
        }
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

    /// A classic PUBLISH or SUBSCRIBE written anywhere else in the backend
    /// would be silently lost on a cluster (the other side is sharded).
    #[test]
    fn the_backend_publishes_and_subscribes_only_through_this_module() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/redis");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name == "pubsub.rs" || name == "golden_tests.rs" {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let calls = [
                "client.publish(",
                "pipeline.publish(",
                ".publish::<",
                "subscriber.subscribe(",
                "subscriber.unsubscribe(",
            ];
            // Without whitespace, so that a call split over lines is found.
            let flat: String = source.split_whitespace().collect();
            for call in calls {
                assert!(!flat.contains(call), "{name} calls {call} directly");
            }
        }
    }
}
