//! The protocol's fixed rules: size limits (the configurable ones travel in
//! `Welcome.limits`), the time windows that every backend of the bridge and
//! the gateway must agree on, and the clock that message times are read from.
//!
//! A rule that two places would otherwise restate is written here once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A reassembled WebSocket message larger than this is closed with 1009:
/// the default of the gateway's `--max-frame-bytes` (the largest legitimate
/// frame is about 4 KiB).
pub const MAX_FRAME_BYTES: usize = 65_536;
/// The smallest frame limit a server may set.
pub const MIN_FRAME_BYTES: usize = 16_384;
/// `Send.client_msg_id` longer than this (in UTF-8 bytes) is INVALID_ARGUMENT.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;
/// `Join.history_limit` / `FetchHistory.limit` of 0 means this.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// Larger page requests are served as this many messages.
pub const MAX_PAGE_LIMIT: usize = 200;

/// A `Send.client_msg_id` accepted from a sender in a room is remembered this
/// long: a retry with the same key within it gets the original outcome
/// (`Ack.duplicate`) instead of a second message.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(600);

/// How long a session that took over another's name (a resume) has to join
/// the earlier session's rooms again before it is shown leaving them.
pub const RESUME_WINDOW: Duration = Duration::from_secs(10);

/// How far back a message keeps an otherwise empty room in the admin room list.
pub const ACTIVE_ROOM_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Wall-clock milliseconds since the Unix epoch: the time base of message
/// ids, `sent_at_ms`, `Ping.client_time_ms` and `Pong.server_time_ms` (0 if
/// the clock is before the epoch).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Applies the protocol's page-size rule: 0 is the default, the maximum caps.
pub fn clamp_page_limit(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_LIMIT,
        n => (n as usize).min(MAX_PAGE_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limit_defaults_and_caps() {
        assert_eq!(clamp_page_limit(0), 50);
        assert_eq!(clamp_page_limit(1), 1);
        assert_eq!(clamp_page_limit(200), 200);
        assert_eq!(clamp_page_limit(201), 200);
        assert_eq!(clamp_page_limit(u32::MAX), 200);
    }

    #[test]
    fn the_clock_reads_milliseconds_since_the_epoch() {
        let before = now_ms();
        assert!(before > 1_600_000_000_000, "after September 2020: {before}");
        assert!(now_ms() >= before);
    }
}
