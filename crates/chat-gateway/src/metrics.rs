//! Counters for `/metrics`, kept as atomics so the message path never locks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use chat_bridge::ControlRejection;
use chat_net::prometheus::{Kind, TextWriter};
use chat_proto::v1::ErrorCode;

/// Number of `ErrorCode` values (0..=16).
const ERROR_CODES: usize = 17;

/// A series of one sample read from [`Metrics`]: name, type, help, and how
/// to read the value.
type Single = (&'static str, Kind, &'static str, fn(&Metrics) -> i128);

/// The series of one sample kept in [`Metrics`], in exposition order.
const SINGLES: &[Single] = &[
    (
        "chat_connections_open",
        Kind::Gauge,
        "Open WebSocket connections.",
        |m| m.connections_open.load(Relaxed).into(),
    ),
    (
        "chat_connections_total",
        Kind::Counter,
        "WebSocket connections accepted.",
        |m| m.connections_total.load(Relaxed).into(),
    ),
    (
        "chat_connections_refused_total",
        Kind::Counter,
        "Connections refused (limit or draining).",
        |m| m.connections_refused.load(Relaxed).into(),
    ),
    (
        "chat_frames_in_total",
        Kind::Counter,
        "Binary frames received from clients.",
        |m| m.frames_in.load(Relaxed).into(),
    ),
    (
        "chat_frames_out_total",
        Kind::Counter,
        "Frames written to clients.",
        |m| m.frames_out.load(Relaxed).into(),
    ),
    (
        "chat_messages_accepted_total",
        Kind::Counter,
        "Messages accepted (stored and published).",
        |m| m.messages_accepted.load(Relaxed).into(),
    ),
    (
        "chat_messages_duplicate_total",
        Kind::Counter,
        "Sends answered as duplicates of an accepted client_msg_id.",
        |m| m.messages_duplicate.load(Relaxed).into(),
    ),
    (
        "chat_slow_consumers_dropped_total",
        Kind::Counter,
        "Connections closed (1008) because their outbound queue was full.",
        |m| m.slow_consumers_dropped.load(Relaxed).into(),
    ),
    (
        "chat_sessions_resumed_total",
        Kind::Counter,
        "Hellos that took a name over with a resume token.",
        |m| m.sessions_resumed.load(Relaxed).into(),
    ),
    (
        "chat_tcp_connections_open",
        Kind::Gauge,
        "TCP connections open (WebSockets included).",
        |m| m.tcp_open.load(Relaxed).into(),
    ),
    (
        "chat_http_header_timeouts_total",
        Kind::Counter,
        "Connections closed because a request head or PROXY header did not arrive in time.",
        |m| m.header_timeouts.load(Relaxed).into(),
    ),
    (
        "chat_tls_handshake_failures_total",
        Kind::Counter,
        "Connections closed because their TLS handshake failed (--tls-cert).",
        |m| m.tls_handshake_failures.load(Relaxed).into(),
    ),
    (
        "chat_http_keepalive_closed_total",
        Kind::Counter,
        "Idle keep-alive HTTP connections closed.",
        |m| m.keepalive_closed.load(Relaxed).into(),
    ),
    (
        "chat_metrics_refused_total",
        Kind::Counter,
        "/metrics requests from addresses not allowed (404).",
        |m| m.metrics_refused.load(Relaxed).into(),
    ),
    (
        "chat_api_rooms_limited_total",
        Kind::Counter,
        "/api/rooms requests over their address's rate (429).",
        |m| m.rooms_api_limited.load(Relaxed).into(),
    ),
    (
        "chat_api_rooms_refreshes_total",
        Kind::Counter,
        "Times the /api/rooms snapshot was rebuilt.",
        |m| m.rooms_api_refreshes.load(Relaxed).into(),
    ),
    (
        "chat_origin_rejected_total",
        Kind::Counter,
        "WebSocket upgrades refused (403) for their Origin.",
        |m| m.origin_rejected.load(Relaxed).into(),
    ),
];

/// Process-wide gateway counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) connections_open: AtomicI64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) messages_accepted: AtomicU64,
    pub(crate) messages_duplicate: AtomicU64,
    pub(crate) slow_consumers_dropped: AtomicU64,
    pub(crate) sessions_resumed: AtomicU64,
    /// TCP connections open (accepted and admitted, WebSockets included).
    pub(crate) tcp_open: AtomicI64,
    /// Connections closed at accept: their address had `--max-sockets-per-ip` open.
    pub(crate) refused_address_cap: AtomicU64,
    /// Connections closed at accept: their address was over its connection rate.
    pub(crate) refused_address_rate: AtomicU64,
    /// Connections closed for a PROXY header from a peer not in `--proxy-protocol-from`.
    pub(crate) refused_proxy_untrusted: AtomicU64,
    /// Connections closed for a missing or malformed PROXY header from a trusted peer.
    pub(crate) refused_proxy_invalid: AtomicU64,
    /// Connections closed because a request head (or PROXY header) was not
    /// complete within `--header-read-timeout-ms`.
    pub(crate) header_timeouts: AtomicU64,
    /// Connections whose TLS handshake failed (not TLS, no shared cipher, ...).
    pub(crate) tls_handshake_failures: AtomicU64,
    /// Idle HTTP connections closed after `--keep-alive-timeout-ms`.
    pub(crate) keepalive_closed: AtomicU64,
    /// `/metrics` requests from addresses outside `--metrics-allow` (answered 404).
    pub(crate) metrics_refused: AtomicU64,
    /// `/api/rooms` requests over their address's rate (answered 429).
    pub(crate) rooms_api_limited: AtomicU64,
    /// Times the `/api/rooms` snapshot was rebuilt from the bridge.
    pub(crate) rooms_api_refreshes: AtomicU64,
    /// WebSocket upgrades refused (403) by the `Origin` check.
    pub(crate) origin_rejected: AtomicU64,
    errors: [AtomicU64; ERROR_CODES],
    /// Commands on the control path dropped, by `ControlRejection::ALL` index.
    control_rejected: [AtomicU64; ControlRejection::ALL.len()],
}

impl Metrics {
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(counter) = self.errors.get(code as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Counts a command dropped on the control path.
    pub(crate) fn control_rejected(&self, why: ControlRejection) {
        if let Some(at) = ControlRejection::ALL.iter().position(|r| *r == why) {
            self.control_rejected[at].fetch_add(1, Relaxed);
        }
    }

    /// Prometheus text exposition format.
    pub(crate) fn render(&self, gateway_id: &str, bridge_up: bool, draining: bool) -> String {
        let mut out = TextWriter::with_capacity(2048);
        for (name, kind, help, value) in SINGLES {
            out.single(name, *kind, help, value(self));
        }
        out.single(
            "chat_bridge_up",
            Kind::Gauge,
            "1 when the cluster backend (Redis) is reachable.",
            i128::from(bridge_up),
        );
        out.single(
            "chat_draining",
            Kind::Gauge,
            "1 while the gateway drains.",
            i128::from(draining),
        );
        out.family(
            "chat_tcp_refused_total",
            Kind::Counter,
            "TCP connections closed before HTTP, by reason.",
        );
        for (reason, counter) in [
            ("address_cap", &self.refused_address_cap),
            ("address_rate", &self.refused_address_rate),
            ("proxy_untrusted", &self.refused_proxy_untrusted),
            ("proxy_invalid", &self.refused_proxy_invalid),
        ] {
            out.sample(
                "chat_tcp_refused_total",
                &[("reason", reason)],
                counter.load(Relaxed),
            );
        }
        out.family(
            "chat_errors_total",
            Kind::Counter,
            "Error frames sent, by code.",
        );
        for (index, counter) in self.errors.iter().enumerate().skip(1) {
            let Ok(code) = ErrorCode::try_from(index as i32) else {
                continue;
            };
            let name = code.as_str_name().trim_start_matches("ERROR_CODE_");
            out.sample(
                "chat_errors_total",
                &[("code", name)],
                counter.load(Relaxed),
            );
        }
        out.family(
            "chat_control_rejected_total",
            Kind::Counter,
            "Commands on the control path dropped (unsigned, bad signature, stale, replayed).",
        );
        for (why, counter) in ControlRejection::ALL.iter().zip(&self.control_rejected) {
            out.sample(
                "chat_control_rejected_total",
                &[("reason", why.as_str())],
                counter.load(Relaxed),
            );
        }
        // The id is flag-given; characters a label value would escape become `_`.
        let gateway_id = gateway_id.replace(['"', '\\', '\n'], "_");
        out.family("chat_gateway_info", Kind::Gauge, "Gateway identity.")
            .sample("chat_gateway_info", &[("gateway_id", &gateway_id)], 1);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names and the layout are a public interface: dashboards and tests read them.
    #[test]
    fn renders_the_exposition_scrapers_read() {
        let metrics = Metrics::default();
        metrics.frames_in.store(7, Relaxed);
        metrics.refused_proxy_invalid.store(2, Relaxed);
        metrics.error(ErrorCode::NotInRoom);
        let text = metrics.render("gw\"1", true, false);
        assert!(text.starts_with(
            "# HELP chat_connections_open Open WebSocket connections.\n\
             # TYPE chat_connections_open gauge\nchat_connections_open 0\n"
        ));
        assert!(text.contains("\nchat_frames_in_total 7\n"));
        assert!(text.contains("\nchat_bridge_up 1\n# HELP chat_draining "));
        assert!(text.contains(
            "# HELP chat_tcp_refused_total TCP connections closed before HTTP, by reason.\n\
             # TYPE chat_tcp_refused_total counter\n\
             chat_tcp_refused_total{reason=\"address_cap\"} 0\n"
        ));
        assert!(text.contains("\nchat_tcp_refused_total{reason=\"proxy_invalid\"} 2\n"));
        assert!(text.contains("\nchat_errors_total{code=\"NOT_IN_ROOM\"} 1\n"));
        assert!(text.ends_with(
            "# HELP chat_gateway_info Gateway identity.\n\
             # TYPE chat_gateway_info gauge\nchat_gateway_info{gateway_id=\"gw_1\"} 1\n"
        ));
        metrics.control_rejected(ControlRejection::Stale);
        let text = metrics.render("gw", true, false);
        assert!(text.contains("\nchat_control_rejected_total{reason=\"stale\"} 1\n"));
        assert!(text.contains("\nchat_control_rejected_total{reason=\"unsigned\"} 0\n"));
    }
}
