//! Publisher lanes: on a Redis Cluster, one publisher task (`publisher.rs`)
//! per primary, so that a shard that is slow or failing over holds up only
//! its own rooms' messages; on one Redis, one lane.
//!
//! A message goes to the lane of the primary serving its room's slot (by the
//! command client's view of the slots), except while messages of the same
//! slot are still in flight in another lane (the slot just moved): then it
//! follows them, so that one room's messages reach Redis in the order they
//! were submitted. Every lane's queue is bounded.

use fred::types::config::Server;

use super::publisher::{self, PublishJob, PUBLISH_QUEUE};
use super::*;

/// Lanes at most: one per primary is the rule; after many failovers, slots
/// whose primary has no lane yet share the one unnamed lane.
const MAX_LANES: usize = 64;

/// The lanes and what is in flight in them.
#[derive(Default)]
pub(super) struct Lanes {
    state: Mutex<State>,
}

/// A lane's name: the primary it serves (`None`: the one lane on one Redis,
/// and the shared one).
type Lane = Option<Server>;

#[derive(Default)]
struct State {
    queues: HashMap<Lane, mpsc::Sender<PublishJob>>,
    /// Slots with messages in flight: their lane and how many.
    busy: HashMap<u16, (Lane, usize)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// Stops every lane's task (the bridge is dropped).
    pub(super) fn abort(&self) {
        for task in &self.state.lock().tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// The primary serving `slot`, on a cluster.
    fn primary_of(&self, slot: u16) -> Lane {
        if !self.sharded {
            return None;
        }
        self.shards.owner(slot)
    }

    /// The connection a lane sends on: the primary's own on a cluster (none
    /// while the slot map is unknown), the one connection on one Redis.
    fn lane_client(&self, lane: &Lane) -> Option<Client> {
        if !self.sharded {
            return Some(self.client.clone());
        }
        Some(self.shards.shard(lane.as_ref()?)?.client.clone())
    }

    /// Queues `job` on its lane, starting the lane's task if it is new;
    /// waits while that lane's queue is full. Fails if the lane stopped.
    pub(super) async fn enqueue(self: &Arc<Self>, job: PublishJob) -> Result<()> {
        let slot = job.slot;
        let primary = self.primary_of(slot);
        let queue = {
            let mut state = self.lanes.state.lock();
            let lane = match state.busy.get_mut(&slot) {
                Some((lane, in_flight)) => {
                    *in_flight += 1;
                    lane.clone()
                }
                None => {
                    let lane =
                        if state.queues.len() < MAX_LANES || state.queues.contains_key(&primary) {
                            primary
                        } else {
                            None
                        };
                    state.busy.insert(slot, (lane.clone(), 1));
                    lane
                }
            };
            match state.queues.get(&lane) {
                Some(queue) => Some(queue.clone()),
                None => self.lane_client(&lane).map(|client| {
                    let (queue, jobs) = mpsc::channel(PUBLISH_QUEUE);
                    state
                        .tasks
                        .push(tokio::spawn(publisher::run(self.clone(), client, jobs)));
                    state.queues.insert(lane, queue.clone());
                    queue
                }),
            }
        };
        let Some(queue) = queue else {
            self.release(slot);
            return Err(BridgeError::Unavailable(
                "the cluster's slot map is not known yet".into(),
            ));
        };
        if queue.send(job).await.is_err() {
            self.release(slot);
            return Err(BridgeError::Unavailable("the publisher stopped".into()));
        }
        Ok(())
    }

    /// Closes the lanes of primaries that no longer serve slots (each ends
    /// once what it holds is answered); their slots go to the new owners.
    pub(super) fn forget_lanes(&self, gone: &[Server]) {
        let mut state = self.lanes.state.lock();
        for server in gone {
            let lane = Some(server.clone());
            state.queues.remove(&lane);
            state.busy.retain(|_, (busy, _)| *busy != lane);
        }
    }

    /// One message of `slot` left its lane (it was answered).
    pub(super) fn release(&self, slot: u16) {
        let mut state = self.lanes.state.lock();
        if let Some((_, in_flight)) = state.busy.get_mut(&slot) {
            *in_flight -= 1;
            if *in_flight == 0 {
                state.busy.remove(&slot);
            }
        }
    }
}
