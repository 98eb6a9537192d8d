//! The Redis backend's room log: subscriptions (`subscriptions.rs`),
//! submitting messages to the publisher task (`publisher.rs`), and reading
//! a room's stream back.

use super::*;

#[async_trait]
impl RoomLog for RedisBridge {
    async fn subscribe(&self, room: &str) -> Result<()> {
        self.inner.subscribe(room).await
    }

    async fn unsubscribe(&self, room: &str) -> Result<()> {
        self.inner.unsubscribe(room).await
    }

    async fn publish(&self, msg: NewMessage) -> Result<Accepted> {
        self.submit(msg).await.await
    }

    async fn submit(&self, msg: NewMessage) -> Pending {
        let inner = &self.inner;
        // On a cluster the message goes on its primary's own connection,
        // which may be up while another primary is failing over.
        if !inner.sharded {
            if let Err(e) = inner.check() {
                return Pending::ready(Err(e));
            }
        }
        let (reply, outcome) = oneshot::channel();
        let job = PublishJob::new(&inner.keys, msg, reply);
        match inner.enqueue(job).await {
            Ok(()) => Pending::waiting(outcome),
            Err(e) => Pending::ready(Err(e)),
        }
    }

    async fn find_duplicate(
        &self,
        room: &str,
        sender_key: &str,
        client_msg_id: &str,
    ) -> Result<Option<Accepted>> {
        let inner = &self.inner;
        inner.check()?;
        let id: Option<String> = inner
            .client
            .get(inner.keys.dedupe(room, sender_key, client_msg_id))
            .await
            .map_err(unavailable)?;
        Ok(id
            .and_then(|id| id.parse::<MessageId>().ok())
            .map(|id| Accepted {
                id,
                sent_at_ms: id.ms,
                duplicate: true,
            }))
    }

    async fn replay_after(&self, room: &str, after: MessageId) -> Result<Replay> {
        let inner = &self.inner;
        inner.check()?;
        // One round trip, the stream first: a trim between the two reads
        // then flags the replay as truncated rather than hiding a gap.
        let pipeline = inner.client.pipeline();
        let queued = async {
            let _: () = pipeline
                .xrange(
                    inner.keys.stream(room),
                    format!("({after}"),
                    "+",
                    None::<u64>,
                )
                .await?;
            pipeline.get::<(), _>(inner.keys.trimmed(room)).await
        };
        queued.await.map_err(unavailable)?;
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let (Some(entries), Some(trimmed)) = (replies.next(), replies.next()) else {
            return Err(BridgeError::Unavailable("no reply from redis".into()));
        };
        let messages = parse_entries(room, entries.map_err(unavailable)?)?;
        let trimmed: Option<String> = trimmed.map_err(unavailable)?.convert().ok().flatten();
        let truncated = trimmed
            .and_then(|t| t.parse::<MessageId>().ok())
            .is_some_and(|t| t > after);
        Ok(Replay {
            messages,
            truncated,
        })
    }

    async fn recent(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>> {
        let inner = &self.inner;
        inner.check()?;
        let value: Value = inner
            .client
            .xrevrange(inner.keys.stream(room), "+", "-", Some(limit as u64))
            .await
            .map_err(unavailable)?;
        let mut messages = parse_entries(room, value)?;
        messages.reverse();
        Ok(messages)
    }

    async fn history_before(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let inner = &self.inner;
        inner.check()?;
        let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let value: Value = inner
            .client
            .xrevrange(inner.keys.stream(room), end, "-", Some(limit as u64 + 1))
            .await
            .map_err(unavailable)?;
        let mut messages = parse_entries(room, value)?;
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        messages.reverse();
        Ok(HistoryPage { messages, has_more })
    }
}
