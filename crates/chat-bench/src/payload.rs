//! What the benchmark puts in the bytes it sends: a send timestamp and enough
//! identity to tell publishers and sequence numbers apart on receipt.
//!
//! Chat text must be UTF-8, so chat stamps are fixed-width lowercase hex
//! (`SSSSSSSSSSSS.PPPPPP.QQQQQQQQQQ` = sent ns, publisher, sequence) padded
//! with `.` to the requested size. Ping-pong payloads are binary.

use anyhow::{bail, Result};

/// Bytes taken by the stamp at the start of a chat text.
pub(crate) const CHAT_STAMP_LEN: usize = 12 + 1 + 6 + 1 + 10;

/// Bytes taken by the header of a ping-pong payload.
pub(crate) const PING_HEADER_LEN: usize = 16;

/// First byte of every ping: never `G`, so the echo server can tell a ping
/// from a health check (`GET /healthz`).
pub(crate) const PING_MAGIC: u8 = 0xb7;

/// One chat message's identity and send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Nanoseconds since the run's epoch when the message was handed to the socket.
    pub sent_ns: u64,
    /// Global publisher index.
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
}

impl Stamp {
    /// Largest values that fit the fixed-width fields.
    const MAX_SENT_NS: u64 = (1 << 48) - 1;
    const MAX_PUBLISHER: u32 = (1 << 24) - 1;
    const MAX_SEQ: u64 = (1 << 40) - 1;

    /// The text of a chat message of exactly `size` bytes carrying this stamp.
    pub(crate) fn to_text(self, size: usize) -> String {
        let mut text = format!(
            "{:012x}.{:06x}.{:010x}",
            self.sent_ns.min(Self::MAX_SENT_NS),
            self.publisher.min(Self::MAX_PUBLISHER),
            self.seq.min(Self::MAX_SEQ)
        );
        debug_assert_eq!(text.len(), CHAT_STAMP_LEN);
        while text.len() < size {
            text.push('.');
        }
        text
    }

    /// Reads the stamp at the start of a chat text; `None` for any other text
    /// (traffic that is not the benchmark's).
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        if text.len() < CHAT_STAMP_LEN || text[12] != b'.' || text[19] != b'.' {
            return None;
        }
        Some(Self {
            sent_ns: hex(&text[0..12])?,
            publisher: u32::try_from(hex(&text[13..19])?).ok()?,
            seq: hex(&text[20..30])?,
        })
    }
}

/// Checks a requested chat payload size.
pub(crate) fn check_chat_size(size: usize) -> Result<()> {
    if size < CHAT_STAMP_LEN {
        bail!(
            "--payload must be at least {CHAT_STAMP_LEN} bytes (the timestamp and sequence stamp)"
        );
    }
    Ok(())
}

/// Lowercase hex without a prefix; `None` on any other byte.
fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(v))
    })
}

/// Writes a ping into `buf` (its whole length): magic byte, sequence, send time.
pub(crate) fn write_ping(buf: &mut [u8], seq: u64, sent_ns: u64) {
    debug_assert!(buf.len() >= PING_HEADER_LEN);
    buf[0] = PING_MAGIC;
    // 7 bytes of sequence: plenty, and keeps the header at 16 bytes.
    buf[1..8].copy_from_slice(&seq.to_le_bytes()[..7]);
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads a ping written by [`write_ping`]: sequence and send time.
pub(crate) fn read_ping(buf: &[u8]) -> Option<(u64, u64)> {
    if buf.len() < PING_HEADER_LEN || buf[0] != PING_MAGIC {
        return None;
    }
    let mut seq = [0u8; 8];
    seq[..7].copy_from_slice(&buf[1..8]);
    let sent = u64::from_le_bytes(buf[8..16].try_into().ok()?);
    Some((u64::from_le_bytes(seq), sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_stamps_round_trip_at_the_requested_size() {
        let stamp = Stamp {
            sent_ns: 123_456_789_012,
            publisher: 42,
            seq: 7,
        };
        let text = stamp.to_text(64);
        assert_eq!(text.len(), 64);
        assert!(text.is_ascii());
        assert_eq!(Stamp::parse(text.as_bytes()), Some(stamp));
        // Exactly the stamp, no padding.
        assert_eq!(Stamp::parse(stamp.to_text(0).as_bytes()), Some(stamp));
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        for text in [
            "hello",
            "",
            "0000000000zz.000001.0000000001",
            "000000000001-000001.0000000001",
        ] {
            assert_eq!(Stamp::parse(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn oversized_fields_saturate_instead_of_corrupting() {
        let stamp = Stamp {
            sent_ns: u64::MAX,
            publisher: u32::MAX,
            seq: u64::MAX,
        };
        let parsed = Stamp::parse(stamp.to_text(64).as_bytes()).unwrap();
        assert_eq!(parsed.sent_ns, Stamp::MAX_SENT_NS);
        assert_eq!(parsed.publisher, Stamp::MAX_PUBLISHER);
        assert_eq!(parsed.seq, Stamp::MAX_SEQ);
    }

    #[test]
    fn pings_round_trip_and_never_look_like_http() {
        let mut buf = [0u8; 64];
        write_ping(&mut buf, 99, 1_000_000);
        assert_ne!(buf[0], b'G');
        assert_eq!(read_ping(&buf), Some((99, 1_000_000)));
        assert_eq!(read_ping(b"GET /healthz HTTP/1.1\r\n"), None);
    }

    #[test]
    fn small_payloads_are_refused() {
        assert!(check_chat_size(CHAT_STAMP_LEN - 1).is_err());
        assert!(check_chat_size(64).is_ok());
    }
}
