//! Room subscriptions on the subscriber connection: reference-counted per
//! room, so that each room's SUBSCRIBE and UNSUBSCRIBE reach Redis in the
//! order the count changed, while other rooms' go on.

use super::*;

/// One room's subscription: how many local references it has (0 while it is
/// being set up or after it failed).
#[derive(Default)]
pub(super) struct RoomSubscription {
    count: tokio::sync::Mutex<usize>,
}

impl Inner {
    /// Whether `entry` is still the room's subscription entry.
    fn subscription_is(&self, room: &str, entry: &Arc<RoomSubscription>) -> bool {
        self.subs
            .lock()
            .get(room)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
    }

    /// Forgets the room's subscription entry if it is still `entry`.
    fn drop_subscription(&self, room: &str, entry: &Arc<RoomSubscription>) {
        let mut subs = self.subs.lock();
        if subs
            .get(room)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
        {
            subs.remove(room);
        }
    }

    /// See [`RoomLog::subscribe`](crate::RoomLog::subscribe).
    pub(super) async fn subscribe(&self, room: &str) -> Result<()> {
        loop {
            let entry = self.subs.lock().entry(room.to_owned()).or_default().clone();
            let mut count = entry.count.lock().await;
            if !self.subscription_is(room, &entry) {
                continue; // Dropped by an unsubscribe while we waited: start again.
            }
            if *count > 0 {
                *count += 1;
                return Ok(());
            }
            self.check()?;
            self.cursors.lock().entry(room.to_owned()).or_default();
            let subscribed = async {
                self.listen(self.keys.channel(room))
                    .await
                    .map_err(unavailable)?;
                // Where a gap read starts if the connection drops before the first message.
                let tip: Value = self
                    .client
                    .xrevrange(self.keys.stream(room), "+", "-", Some(1))
                    .await
                    .map_err(unavailable)?;
                Ok::<_, BridgeError>(
                    parse_entries(room, tip)?
                        .first()
                        .and_then(|m| m.id.parse().ok()),
                )
            }
            .await;
            return match subscribed {
                Ok(tip) => {
                    if let Some(cursor) = self.cursors.lock().get_mut(room) {
                        cursor.floor = tip.unwrap_or(MessageId::ZERO);
                    }
                    *count = 1;
                    Ok(())
                }
                Err(e) => {
                    self.cursors.lock().remove(room);
                    let _ = self.unlisten(self.keys.channel(room)).await;
                    self.drop_subscription(room, &entry);
                    Err(e)
                }
            };
        }
    }

    /// See [`RoomLog::unsubscribe`](crate::RoomLog::unsubscribe).
    pub(super) async fn unsubscribe(&self, room: &str) -> Result<()> {
        let Some(entry) = self.subs.lock().get(room).cloned() else {
            return Ok(());
        };
        let mut count = entry.count.lock().await;
        if *count == 0 || !self.subscription_is(room, &entry) {
            return Ok(());
        }
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        self.cursors.lock().remove(room);
        let unsubscribed = self
            .unlisten(self.keys.channel(room))
            .await
            .map_err(unavailable);
        // Only now: a subscribe waiting on this entry starts again with a
        // new one, so its SUBSCRIBE goes out after this UNSUBSCRIBE.
        self.drop_subscription(room, &entry);
        unsubscribed
    }
}
