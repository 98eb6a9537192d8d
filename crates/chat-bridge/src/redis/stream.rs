//! Reading a room's stream (its history) back into messages.

use super::*;

impl Inner {
    /// What `room` missed after `after`, for the dispatcher: on a cluster
    /// read on the room's primary's own connection (`shards.rs`), so that a
    /// failover elsewhere does not hold it up.
    pub(super) async fn read_gap(&self, room: &str, after: MessageId) -> Result<Vec<ChatMessage>> {
        if !self.sharded {
            return self.read_after(room, after, None).await;
        }
        let key = self.keys.stream(room);
        let shard = self.shard_of(&key).map_err(unavailable)?;
        let value: Value = shard
            .client
            .xrange(key, format!("({after}"), "+", None)
            .await
            .map_err(unavailable)?;
        parse_entries(room, value)
    }

    /// Messages of `room` with id > `after`, oldest first.
    pub(super) async fn read_after(
        &self,
        room: &str,
        after: MessageId,
        count: Option<u64>,
    ) -> Result<Vec<ChatMessage>> {
        let value: Value = self
            .client
            .xrange(self.keys.stream(room), format!("({after}"), "+", count)
            .await
            .map_err(unavailable)?;
        parse_entries(room, value)
    }
}

/// Parses an XRANGE/XREVRANGE reply: `[[id, [field, value, ...]], ...]`.
pub(super) fn parse_entries(room: &str, value: Value) -> Result<Vec<ChatMessage>> {
    let mut out = Vec::new();
    for entry in value.into_array() {
        let mut parts = entry.into_array().into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(BridgeError::Corrupt(
                "stream entry without id or fields".into(),
            ));
        };
        let id: MessageId = id
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BridgeError::Corrupt("stream entry id".into()))?;
        let fields = fields.into_array();
        let body = fields
            .chunks(2)
            .find(|pair| pair.first().and_then(|f| f.as_str()).as_deref() == Some("m"))
            .and_then(|pair| pair.get(1))
            .and_then(|v| v.as_bytes().map(<[u8]>::to_vec))
            .ok_or_else(|| BridgeError::Corrupt(format!("stream entry {id} has no body")))?;
        let msg = wire::message_from_entry(room, id, &body)
            .ok_or_else(|| BridgeError::Corrupt(format!("stream entry {id} does not decode")))?;
        out.push(msg);
    }
    Ok(out)
}
