//! Hash slots: Redis Cluster's key-to-slot function, and one node's view of
//! which primary serves each slot (read from `CLUSTER SLOTS`).

use crate::{HarnessError, RedisServer, RespValue};

/// How many hash slots a Redis Cluster has.
pub const SLOTS: u16 = 16_384;

/// The hash slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) of
/// the key modulo 16384, where a key with a non-empty `{...}` hash tag (the
/// first `{` and the first `}` after it) is hashed by the tag alone, so
/// `chat:{lobby}:stream` and `chat:{lobby}:presence` share a slot.
pub fn key_slot(key: &str) -> u16 {
    key_slot_bytes(key.as_bytes())
}

/// [`key_slot`] of a key that is bytes.
pub(crate) fn key_slot_bytes(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The part of `key` that is hashed: the hash tag when there is a non-empty one.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &rest[..len],
        _ => key,
    }
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), Redis' `crc16`.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One node's view of the cluster: the port of the primary serving each slot
/// (`None`: no one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotMap(Vec<Option<u16>>);

impl SlotMap {
    /// Asks `node` with `CLUSTER SLOTS`.
    pub(crate) async fn read(node: &RedisServer) -> Result<Self, HarnessError> {
        let reply = node.command(&["CLUSTER", "SLOTS"]).await?;
        Self::parse(&reply)
            .map_err(|e| HarnessError::Redis(format!("CLUSTER SLOTS on port {}: {e}", node.port())))
    }

    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, ...], replicas...], ...]`.
    fn parse(reply: &RespValue) -> Result<Self, String> {
        let mut owners = vec![None; usize::from(SLOTS)];
        for range in array(reply)? {
            let range = array(range)?;
            let (Some(start), Some(end), Some(primary)) =
                (range.first(), range.get(1), range.get(2))
            else {
                return Err(format!("short slot range {range:?}"));
            };
            let port = array(primary)?
                .get(1)
                .ok_or_else(|| format!("no port in {primary:?}"))
                .and_then(integer)?;
            let port = u16::try_from(port).map_err(|e| format!("port {port}: {e}"))?;
            let (start, end) = (slot(start)?, slot(end)?);
            for owner in &mut owners[usize::from(start)..=usize::from(end)] {
                *owner = Some(port);
            }
        }
        Ok(Self(owners))
    }

    /// The port of the primary serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<u16> {
        self.0.get(usize::from(slot)).copied().flatten()
    }

    /// The first slot that `self` and `other` assign differently.
    pub(crate) fn first_difference(&self, other: &Self) -> Option<u16> {
        (0..SLOTS).find(|&s| self.owner(s) != other.owner(s))
    }

    /// The first slot not served by one of `ports`, with its owner.
    pub(crate) fn first_outside(&self, ports: &[u16]) -> Option<(u16, Option<u16>)> {
        (0..SLOTS)
            .map(|s| (s, self.owner(s)))
            .find(|(_, owner)| !owner.is_some_and(|p| ports.contains(&p)))
    }
}

/// The items of an array reply.
pub(crate) fn array(value: &RespValue) -> Result<&[RespValue], String> {
    match value {
        RespValue::Array(Some(items)) => Ok(items),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

/// An integer reply, or a bulk string holding one (`ROLE` mixes both).
pub(crate) fn integer(value: &RespValue) -> Result<i64, String> {
    match value {
        RespValue::Integer(n) => Ok(*n),
        RespValue::Bulk(Some(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected a number, got {value:?}")),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

fn slot(value: &RespValue) -> Result<u16, String> {
    let n = integer(value)?;
    u16::try_from(n)
        .ok()
        .filter(|&s| s < SLOTS)
        .ok_or_else(|| format!("slot {n} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_the_xmodem_variant() {
        // The check value of CRC-16/XMODEM, also in Redis' crc16.c.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn hash_tags_follow_the_redis_rules() {
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("{user1000}.followers"), key_slot("user1000"));
        // Empty tag: the whole key.
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        // First `{`, first `}` after it.
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        // No closing brace: the whole key.
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(key_slot("room:{lobby}:stream"), key_slot("lobby"));
        assert!((0..1000).all(|i| key_slot(&format!("k{i}")) < SLOTS));
    }

    #[test]
    fn parses_cluster_slots_replies() {
        let node = |port: i64| {
            RespValue::Array(Some(vec![
                RespValue::Bulk(Some(b"127.0.0.1".to_vec())),
                RespValue::Integer(port),
                RespValue::Bulk(Some(b"id".to_vec())),
                RespValue::Array(Some(vec![])),
            ]))
        };
        let range = |start, end, port| {
            RespValue::Array(Some(vec![
                RespValue::Integer(start),
                RespValue::Integer(end),
                node(port),
                node(port + 1),
            ]))
        };
        let reply = RespValue::Array(Some(vec![range(0, 100, 7001), range(101, 16383, 7003)]));
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.owner(0), Some(7001));
        assert_eq!(map.owner(100), Some(7001));
        assert_eq!(map.owner(101), Some(7003));
        assert_eq!(map.owner(16383), Some(7003));
        assert_eq!(map.first_outside(&[7001, 7003]), None);
        assert_eq!(map.first_outside(&[7003]), Some((0, Some(7001))));
        let half = RespValue::Array(Some(vec![range(0, 100, 7001)]));
        let half = SlotMap::parse(&half).unwrap();
        assert_eq!(half.first_outside(&[7001]), Some((101, None)));
        assert_eq!(map.first_difference(&half), Some(101));
    }
}
