//! Counters for `/metrics`, kept as atomics so the message path never locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use chat_proto::v1::ErrorCode;

/// Number of `ErrorCode` values (0..=16).
const ERROR_CODES: usize = 17;

/// Process-wide gateway counters.
#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub messages_accepted: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub slow_consumers_dropped: AtomicU64,
    pub sessions_resumed: AtomicU64,
    /// TCP connections open (accepted and admitted, WebSockets included).
    pub tcp_open: AtomicI64,
    /// Connections closed at accept: their address had `--max-sockets-per-ip` open.
    pub refused_address_cap: AtomicU64,
    /// Connections closed at accept: their address was over its connection rate.
    pub refused_address_rate: AtomicU64,
    /// Connections closed for a PROXY header from a peer not in `--proxy-protocol-from`.
    pub refused_proxy_untrusted: AtomicU64,
    /// Connections closed for a missing or malformed PROXY header from a trusted peer.
    pub refused_proxy_invalid: AtomicU64,
    /// Connections closed because a request head (or PROXY header) was not
    /// complete within `--header-read-timeout-ms`.
    pub header_timeouts: AtomicU64,
    /// Idle HTTP connections closed after `--keep-alive-timeout-ms`.
    pub keepalive_closed: AtomicU64,
    /// `/metrics` requests from addresses outside `--metrics-allow` (answered 404).
    pub metrics_refused: AtomicU64,
    /// `/api/rooms` requests over their address's rate (answered 429).
    pub rooms_api_limited: AtomicU64,
    /// Times the `/api/rooms` snapshot was rebuilt from the bridge.
    pub rooms_api_refreshes: AtomicU64,
    errors: [AtomicU64; ERROR_CODES],
}

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        if let Some(counter) = self.errors.get(code as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, gateway_id: &str, bridge_up: bool, draining: bool) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: i128| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "chat_connections_open",
            "gauge",
            "Open WebSocket connections.",
            self.connections_open.load(Relaxed).into(),
        );
        metric(
            "chat_connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed).into(),
        );
        metric(
            "chat_connections_refused_total",
            "counter",
            "Connections refused (limit or draining).",
            self.connections_refused.load(Relaxed).into(),
        );
        metric(
            "chat_frames_in_total",
            "counter",
            "Binary frames received from clients.",
            self.frames_in.load(Relaxed).into(),
        );
        metric(
            "chat_frames_out_total",
            "counter",
            "Frames written to clients.",
            self.frames_out.load(Relaxed).into(),
        );
        metric(
            "chat_messages_accepted_total",
            "counter",
            "Messages accepted (stored and published).",
            self.messages_accepted.load(Relaxed).into(),
        );
        metric(
            "chat_messages_duplicate_total",
            "counter",
            "Sends answered as duplicates of an accepted client_msg_id.",
            self.messages_duplicate.load(Relaxed).into(),
        );
        metric(
            "chat_slow_consumers_dropped_total",
            "counter",
            "Connections closed (1008) because their outbound queue was full.",
            self.slow_consumers_dropped.load(Relaxed).into(),
        );
        metric(
            "chat_sessions_resumed_total",
            "counter",
            "Hellos that took a name over with a resume token.",
            self.sessions_resumed.load(Relaxed).into(),
        );
        metric(
            "chat_tcp_connections_open",
            "gauge",
            "TCP connections open (WebSockets included).",
            self.tcp_open.load(Relaxed).into(),
        );
        metric(
            "chat_http_header_timeouts_total",
            "counter",
            "Connections closed because a request head or PROXY header did not arrive in time.",
            self.header_timeouts.load(Relaxed).into(),
        );
        metric(
            "chat_http_keepalive_closed_total",
            "counter",
            "Idle keep-alive HTTP connections closed.",
            self.keepalive_closed.load(Relaxed).into(),
        );
        metric(
            "chat_metrics_refused_total",
            "counter",
            "/metrics requests from addresses not allowed (404).",
            self.metrics_refused.load(Relaxed).into(),
        );
        metric(
            "chat_api_rooms_limited_total",
            "counter",
            "/api/rooms requests over their address's rate (429).",
            self.rooms_api_limited.load(Relaxed).into(),
        );
        metric(
            "chat_api_rooms_refreshes_total",
            "counter",
            "Times the /api/rooms snapshot was rebuilt.",
            self.rooms_api_refreshes.load(Relaxed).into(),
        );
        metric(
            "chat_bridge_up",
            "gauge",
            "1 when the cluster backend (Redis) is reachable.",
            i128::from(bridge_up),
        );
        metric(
            "chat_draining",
            "gauge",
            "1 while the gateway drains.",
            i128::from(draining),
        );
        let _ = writeln!(out, "# HELP chat_tcp_refused_total TCP connections closed before HTTP, by reason.\n# TYPE chat_tcp_refused_total counter");
        for (reason, counter) in [
            ("address_cap", &self.refused_address_cap),
            ("address_rate", &self.refused_address_rate),
            ("proxy_untrusted", &self.refused_proxy_untrusted),
            ("proxy_invalid", &self.refused_proxy_invalid),
        ] {
            let _ = writeln!(
                out,
                "chat_tcp_refused_total{{reason=\"{reason}\"}} {}",
                counter.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP chat_errors_total Error frames sent, by code.\n# TYPE chat_errors_total counter");
        for (index, counter) in self.errors.iter().enumerate().skip(1) {
            let Ok(code) = ErrorCode::try_from(index as i32) else {
                continue;
            };
            let name = code.as_str_name().trim_start_matches("ERROR_CODE_");
            let _ = writeln!(
                out,
                "chat_errors_total{{code=\"{name}\"}} {}",
                counter.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP chat_gateway_info Gateway identity.\n# TYPE chat_gateway_info gauge\nchat_gateway_info{{gateway_id=\"{}\"}} 1", gateway_id.replace(['"', '\\', '\n'], "_"));
        out
    }
}
