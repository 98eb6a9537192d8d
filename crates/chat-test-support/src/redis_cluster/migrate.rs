//! Moving one hash slot to another primary, the way `redis-cli --cluster
//! reshard` does: mark it importing and migrating, move its keys with
//! `MIGRATE`, then give it to the target on every primary.

use std::time::Duration;

use tokio::time::Instant;

use super::slots::array;
use super::RedisCluster;
use crate::{HarnessError, RespValue};

/// How many keys one `CLUSTER GETKEYSINSLOT` and one `MIGRATE` move.
const BATCH: &str = "100";

/// `MIGRATE`'s own timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "5000";

/// How long moving a slot's keys may take, however many keys are written
/// into it meanwhile.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);

impl RedisCluster {
    /// Moves `slot` with its keys to primary `to`: `CLUSTER SETSLOT slot
    /// IMPORTING` on `to`, `MIGRATING` on the current owner, `GETKEYSINSLOT`
    /// and `MIGRATE ... KEYS` until no key is left, then `SETSLOT slot NODE`
    /// on `to`, on the old owner and on the other primaries. While it runs,
    /// clients of the slot get `ASK` redirects for keys already moved; once it
    /// returns, the old owner answers `MOVED`. Replicas learn the new owner by
    /// gossip: [`RedisCluster::wait_until_ok`] waits until every node agrees.
    /// Nothing to do when `to` already serves the slot.
    pub async fn migrate_slot(&self, slot: u16, to: usize) -> Result<(), HarnessError> {
        let from = self.owner_of_slot(slot).await?;
        if from == to {
            return Ok(());
        }
        let slot_arg = slot.to_string();
        let slot_arg = slot_arg.as_str();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.expect_ok(to, &["CLUSTER", "SETSLOT", slot_arg, "IMPORTING", from_id])
            .await?;
        self.expect_ok(from, &["CLUSTER", "SETSLOT", slot_arg, "MIGRATING", to_id])
            .await?;
        self.move_keys(slot, from, to).await?;
        let node = ["CLUSTER", "SETSLOT", slot_arg, "NODE", to_id];
        // The target first: it bumps its config epoch, so its claim wins
        // over any stale view the gossip may still carry.
        self.expect_ok(to, &node).await?;
        self.expect_ok(from, &node).await?;
        for primary in self.primaries().await? {
            if primary != from && primary != to {
                self.expect_ok(primary, &node).await?;
            }
        }
        Ok(())
    }

    /// Moves the keys of `slot` from `from` to `to` in batches until `from`
    /// has none left.
    async fn move_keys(&self, slot: u16, from: usize, to: usize) -> Result<(), HarnessError> {
        let slot_arg = slot.to_string();
        let port = self.node(to).port().to_string();
        let deadline = Instant::now() + MOVE_TIMEOUT;
        loop {
            let reply = self
                .command(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, BATCH])
                .await?;
            let keys = keys(&reply).map_err(|e| {
                HarnessError::Redis(format!("GETKEYSINSLOT {slot} on node {from}: {e}"))
            })?;
            if keys.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "moving the keys of slot {slot} took over {MOVE_TIMEOUT:?}"
                )));
            }
            let mut args: Vec<&[u8]> = ["MIGRATE", "127.0.0.1", &port, "", "0", MIGRATE_TIMEOUT_MS]
                .iter()
                .map(|a| a.as_bytes())
                .collect();
            args.push(b"KEYS");
            args.extend(keys.iter().map(Vec::as_slice));
            match self.node(from).command_bytes(&args).await? {
                // NOKEY: the keys expired or were deleted since the listing.
                RespValue::Simple(s) if s == "OK" || s == "NOKEY" => {}
                other => {
                    return Err(HarnessError::Redis(format!(
                        "MIGRATE of slot {slot} from node {from} to node {to} answered {other:?}"
                    )))
                }
            }
        }
    }
}

/// The keys of a `GETKEYSINSLOT` reply.
fn keys(reply: &RespValue) -> Result<Vec<Vec<u8>>, String> {
    array(reply)?
        .iter()
        .map(|key| match key {
            RespValue::Bulk(Some(key)) => Ok(key.clone()),
            other => Err(format!("expected a key, got {other:?}")),
        })
        .collect()
}
