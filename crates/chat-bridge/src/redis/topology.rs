//! Following a Redis Cluster's topology for the subscriber: which primary
//! serves the slot of each subscribed channel.
//!
//! When a slot moves between two live primaries (`redis-cli --cluster
//! reshard`), Redis ends the slot's shard subscriptions with an unsolicited
//! `sunsubscribe` that fred drops: the subscription is gone and nothing says
//! so; and when a replica takes over a dead primary's slots, the rooms there
//! need the new primary's connection. So the dispatcher re-reads the slot
//! map every [`CHECK_EVERY`] (and at once when a command was redirected) and
//! compares, for each subscribed channel, the primary serving its slot with
//! the one of the map before; a channel whose primary changed is subscribed
//! again and its room's gap read from the stream, as after a reconnect.

use std::time::Duration;

use fred::types::cluster::ClusterRouting;

use super::{Inner, Result};

/// How often the subscriber re-reads the cluster's slots (one CLUSTER SLOTS).
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Redis Cluster's hash slot of `key` (its `{hash tag}` if it has one).
pub(super) fn slot_of(key: &str) -> u16 {
    ClusterRouting::hash_key(key.as_bytes())
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

/// Reads the slot map again (`shards.rs`), routes by it from now on, and
/// returns which of `channels` are now served by another primary than by
/// the map before (none when there was none).
pub(super) async fn moved(
    inner: &Inner,
    channels: impl Iterator<Item = String>,
) -> Result<Vec<String>> {
    let now = inner.shards.read_routing(&inner.client).await?;
    let (before, gone) = inner.shards.set_routing(now.clone());
    inner.forget_lanes(&gone);
    let Some(before) = before else {
        return Ok(Vec::new());
    };
    Ok(channels
        .filter(|channel| {
            let slot = slot_of(channel);
            owner(&before, slot) != owner(&now, slot)
        })
        .collect())
}
