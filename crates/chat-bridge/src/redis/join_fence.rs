//! Join fences: a join that published the member's JOINED is answered only
//! once this gateway's dispatcher has handed that JOINED to its members.
//!
//! Without it, the Joined answer could overtake the JOINED on its way back
//! through pub/sub, and a member who joins the room right after (on this
//! gateway) would find the first one both in its own Joined list and, late,
//! in a JOINED. The wait is one pub/sub round trip, bounded by
//! [`JOIN_FENCE_WAIT`] (a subscription being restored may drop the event;
//! the join is answered anyway).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// How long a join waits for its own JOINED at most.
pub(super) const JOIN_FENCE_WAIT: Duration = Duration::from_millis(500);

/// (room, name key) -> the joins waiting for that JOINED, by ticket.
type Waiting = HashMap<(String, String), Vec<(u64, oneshot::Sender<()>)>>;

/// The joins waiting for their JOINED.
#[derive(Default)]
pub(super) struct JoinFences {
    waiting: Mutex<Waiting>,
    tickets: std::sync::atomic::AtomicU64,
}

/// One join's wait; forgotten when dropped.
pub(super) struct Fence<'a> {
    fences: &'a JoinFences,
    room: String,
    key: String,
    ticket: u64,
    passed: oneshot::Receiver<()>,
}

impl JoinFences {
    /// Starts waiting for `key`'s JOINED in `room` (before the script that
    /// publishes it runs).
    pub(super) fn expect(&self, room: &str, key: &str) -> Fence<'_> {
        let ticket = self
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, passed) = oneshot::channel();
        self.waiting
            .lock()
            .entry((room.to_owned(), key.to_owned()))
            .or_default()
            .push((ticket, tx));
        Fence {
            fences: self,
            room: room.to_owned(),
            key: key.to_owned(),
            ticket,
            passed,
        }
    }

    /// `key`'s JOINED in `room` was handed to the sink.
    pub(super) fn passed(&self, room: &str, key: &str) {
        let mut waiting = self.waiting.lock();
        if waiting.is_empty() {
            return;
        }
        if let Some(joins) = waiting.remove(&(room.to_owned(), key.to_owned())) {
            for (_, join) in joins {
                let _ = join.send(());
            }
        }
    }
}

impl Fence<'_> {
    /// Waits until the JOINED passed, at most `max`.
    pub(super) async fn wait(mut self, max: Duration) {
        let _ = tokio::time::timeout(max, &mut self.passed).await;
    }
}

impl Drop for Fence<'_> {
    fn drop(&mut self) {
        let mut waiting = self.fences.waiting.lock();
        let slot = (
            std::mem::take(&mut self.room),
            std::mem::take(&mut self.key),
        );
        if let Some(joins) = waiting.get_mut(&slot) {
            joins.retain(|(ticket, _)| *ticket != self.ticket);
            if joins.is_empty() {
                waiting.remove(&slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fence_opens_when_its_joined_passes_and_is_forgotten_either_way() {
        let fences = JoinFences::default();
        let fence = fences.expect("lobby", "ann");
        let other = fences.expect("lobby", "bob");
        fences.passed("lobby", "ann");
        tokio::time::timeout(Duration::from_secs(1), fence.wait(Duration::from_secs(5)))
            .await
            .expect("the fence opened");
        drop(other);
        assert!(fences.waiting.lock().is_empty(), "nothing left waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_whose_joined_never_comes_gives_up() {
        let fences = JoinFences::default();
        let fence = fences.expect("lobby", "ann");
        fence.wait(JOIN_FENCE_WAIT).await;
        assert!(fences.waiting.lock().is_empty());
    }
}
