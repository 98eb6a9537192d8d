//! Message ids: `<ms>-<seq>`, as Redis Streams ids, ordered as the pair.

use std::fmt;
use std::str::FromStr;

/// A room-scoped message id. Ordering is by `(ms, seq)`, never by string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId {
    /// Milliseconds since the Unix epoch when the message was accepted.
    pub ms: u64,
    /// Order among the messages of the room accepted in the same millisecond.
    pub seq: u64,
}

impl MessageId {
    /// Before every message (`0-0`).
    pub const ZERO: MessageId = MessageId { ms: 0, seq: 0 };

    /// The id `<ms>-<seq>`.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The smallest id strictly greater than `self`.
    pub fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }

    /// The id to give a message accepted at `now_ms` after `self`: the
    /// Redis Streams rule, so ids stay increasing even if the clock goes back.
    pub fn successor_at(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            self.next()
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not `<ms>-<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message id {0:?}: expected <ms>-<seq>")]
pub struct ParseIdError(pub String);

impl FromStr for MessageId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError(s.chars().take(80).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(err)?;
        Ok(Self {
            ms: parse_decimal(ms).ok_or_else(err)?,
            seq: parse_decimal(seq).ok_or_else(err)?,
        })
    }
}

/// Unsigned decimal, digits only (`u64::from_str` would also take a `+`).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let id: MessageId = "1732712345678-7".parse().unwrap();
        assert_eq!(id, MessageId::new(1732712345678, 7));
        assert_eq!(id.to_string(), "1732712345678-7");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "a-1",
            "1-b",
            "+1-2",
            "1-+2",
            "1--2",
            "1-2-3",
            " 1-2",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_as_pair_not_string() {
        let a: MessageId = "9-0".parse().unwrap();
        let b: MessageId = "10-0".parse().unwrap();
        assert!(a < b, "string order would say otherwise");
        assert!(MessageId::new(5, 9) < MessageId::new(5, 10));
    }

    #[test]
    fn successor_is_strictly_greater() {
        let last = MessageId::new(100, 3);
        assert_eq!(last.successor_at(50), MessageId::new(100, 4));
        assert_eq!(last.successor_at(100), MessageId::new(100, 4));
        assert_eq!(last.successor_at(101), MessageId::new(101, 0));
        assert_eq!(MessageId::new(1, u64::MAX).next(), MessageId::new(2, 0));
    }
}
