//! The admin room list's activity index ([`Keys::room_activity`]): the time
//! of each room's newest message. It is one key for all rooms, so it lives
//! on one shard of a Redis Cluster; writing it with every message would put
//! every message's cost on that shard and make every room's messages wait for
//! it. So the publisher only notes which rooms had a message, and this task
//! writes them in one ZADD, best effort: at once after a quiet spell, at most
//! once every [`FLUSH_EVERY`] under load.

use super::*;

/// How often the noted rooms are written at most (and how stale the index
/// may be under load).
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Rooms written in one ZADD at most.
const PER_ZADD: usize = 1_000;

impl Inner {
    /// Notes that `rooms` had a message now.
    pub(super) fn note_activity<'a>(&self, rooms: impl Iterator<Item = &'a str>) {
        let now = now_ms();
        let mut active = self.active_rooms.lock();
        let mut new = false;
        for room in rooms {
            match active.get_mut(room) {
                Some(at) => *at = now,
                None => {
                    active.insert(room.to_owned(), now);
                    new = true;
                }
            }
        }
        if new {
            self.activity_noted.notify_one();
        }
    }

    /// Writes the rooms noted since the last flush.
    async fn flush_activity(&self) -> Result<(), fred::error::Error> {
        let active: Vec<(f64, String)> = std::mem::take(&mut *self.active_rooms.lock())
            .into_iter()
            .map(|(room, at)| (at as f64, room))
            .collect();
        for chunk in active.chunks(PER_ZADD) {
            let _: () = self
                .client
                .zadd(
                    self.keys.room_activity(),
                    None,
                    None,
                    false,
                    false,
                    chunk.to_vec(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Writes the noted rooms while the bridge lives (see the module docs).
pub(super) async fn run(inner: Arc<Inner>) {
    loop {
        inner.activity_noted.notified().await;
        if let Err(e) = inner.flush_activity().await {
            tracing::debug!(error = %e, "indexing room activity failed");
        }
        tokio::time::sleep(FLUSH_EVERY).await;
    }
}
