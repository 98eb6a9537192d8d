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
