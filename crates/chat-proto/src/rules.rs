//! Fixed protocol limits (the configurable ones travel in `Welcome.limits`).

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
}
