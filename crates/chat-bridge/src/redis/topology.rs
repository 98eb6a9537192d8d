//! Following a Redis Cluster's topology for the subscriber: which primary
//! serves the slot of each subscribed channel.
//!
//! fred re-subscribes after a connection comes back, but when a slot moves
//! between two live primaries (`redis-cli --cluster reshard`), Redis ends
//! the slot's shard subscriptions with an unsolicited `sunsubscribe` that
//! fred drops: the subscription is gone and nothing says so. So the
//! dispatcher re-reads the slots every [`CHECK_EVERY`] and compares, for
//! each subscribed channel, the primary serving its slot with the one at the
//! previous check; a channel whose primary changed is subscribed again and
//! its room's gap read from the stream, as after a reconnect.

use std::time::Duration;

use fred::prelude::*;
use fred::types::cluster::ClusterRouting;

use super::Inner;

/// How often the subscriber re-reads the cluster's slots (one CLUSTER SLOTS).
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Redis Cluster's hash slot of `key` (its `{hash tag}` if it has one).
pub(super) fn slot_of(key: &str) -> u16 {
    ClusterRouting::hash_key(key.as_bytes())
}

/// The slots as seen at the previous check.
pub(super) struct Topology {
    last: Option<ClusterRouting>,
}

/// The primary serving `slot` in `routing` (address and node id: a replica
/// promoted in place of a failed primary is a change).
fn owner(routing: &ClusterRouting, slot: u16) -> Option<(String, &str)> {
    routing
        .slots()
        .iter()
        .find(|range| range.start <= slot && slot <= range.end)
        .map(|range| (range.primary.to_string(), &*range.id))
}

impl Topology {
    /// Starts from the subscriber's view of the slots now, before any room
    /// is subscribed: a slot that moves before the first check is a change.
    pub(super) fn new(inner: &Inner) -> Self {
        Self {
            last: inner.subscriber.cached_cluster_state(),
        }
    }

    /// Re-reads the slots through the subscriber client and returns which of
    /// `channels` are now served by another primary than at the previous
    /// check (none at the first check).
    pub(super) async fn moved(
        &mut self,
        inner: &Inner,
        channels: impl Iterator<Item = String>,
    ) -> Result<Vec<String>, fred::error::Error> {
        tokio::time::timeout(super::COMMAND_TIMEOUT, inner.subscriber.sync_cluster())
            .await
            .map_err(|_| {
                fred::error::Error::new(fred::error::ErrorKind::Timeout, "CLUSTER SLOTS")
            })??;
        let Some(now) = inner.subscriber.cached_cluster_state() else {
            return Ok(Vec::new());
        };
        let moved = match &self.last {
            None => Vec::new(),
            Some(last) => channels
                .filter(|channel| {
                    let slot = slot_of(channel);
                    owner(last, slot) != owner(&now, slot)
                })
                .collect(),
        };
        self.last = Some(now);
        Ok(moved)
    }
}
