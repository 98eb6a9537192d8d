//! Process-wide counters and their rendering in the Prometheus text format.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chat_net::prometheus::{Kind, Label, TextWriter};

use crate::backend::Backend;
use crate::pool::Pool;
use crate::sources::Sources;

/// Counters that belong to no single backend. Relaxed atomics: each is read on its own.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Client connections accepted (including the ones rejected afterwards).
    pub(crate) accepted: AtomicU64,
    /// Client connections holding a slot, from accept to the end of relaying.
    pub(crate) active: AtomicU64,
    /// Closed right after accept because `max-connections` were already open.
    pub(crate) rejected_max_connections: AtomicU64,
    /// Closed because no healthy backend accepted a connection.
    pub(crate) rejected_no_backend: AtomicU64,
    /// Closed right after accept because their source already held `max-conns-per-source`.
    pub(crate) rejected_source_cap: AtomicU64,
    /// Closed right after accept because their source's `conn-rate-per-source` bucket was empty.
    pub(crate) rejected_source_rate: AtomicU64,
    /// Closed because a peer in `accept-proxy-from` sent no valid PROXY v2 header.
    pub(crate) rejected_proxy_invalid: AtomicU64,
    /// Closed because a peer not in `accept-proxy-from` sent a PROXY v2 signature.
    pub(crate) rejected_proxy_untrusted: AtomicU64,
    /// Closed because a connect to a backend failed for want of local resources (no file
    /// descriptor, no ephemeral port, no memory): nothing was learnt about the backend.
    pub(crate) rejected_local_error: AtomicU64,
    /// Accepted clients still waiting for their first byte (no backend connection yet).
    pub(crate) awaiting_first_byte: AtomicU64,
    /// Clients closed because they sent nothing within `client-first-byte-timeout`.
    pub(crate) first_byte_timeouts: AtomicU64,
    /// Relayed connections closed because nothing moved for `idle-timeout`.
    pub(crate) idle_timeouts: AtomicU64,
    /// Backend connects (clients' or health checks') that failed for want of local resources;
    /// they count neither for nor against the backend.
    pub(crate) local_connect_errors: AtomicU64,
    /// `accept` failures other than a client giving up (EMFILE and the like).
    pub(crate) accept_errors: AtomicU64,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
    /// Set once shutdown began; `/healthz` then answers 503.
    pub(crate) draining: AtomicBool,
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Renders every metric; backends removed by a reload are no longer listed.
pub(crate) fn render(pool: &Pool, stats: &Stats, sources: &Sources) -> String {
    let backends = pool.snapshot();
    let mut m = TextWriter::with_capacity(2048 + backends.len() * 1024);
    render_process(&mut m, stats, sources);
    render_backends(&mut m, &backends);
    m.finish()
}

/// The families that belong to no single backend.
fn render_process(m: &mut TextWriter, stats: &Stats, sources: &Sources) {
    m.single(
        "chat_lb_connections_accepted_total",
        Kind::Counter,
        "Client connections accepted.",
        get(&stats.accepted),
    );
    m.single(
        "chat_lb_active_connections",
        Kind::Gauge,
        "Client connections currently open.",
        get(&stats.active),
    );
    m.family(
        "chat_lb_connections_rejected_total",
        Kind::Counter,
        "Client connections closed without relaying, by reason.",
    );
    m.sample(
        "chat_lb_connections_rejected_total",
        &[("reason", "max_connections")],
        get(&stats.rejected_max_connections),
    );
    for (reason, counter) in [
        ("no_backend", &stats.rejected_no_backend),
        ("max_conns_per_source", &stats.rejected_source_cap),
        ("conn_rate_per_source", &stats.rejected_source_rate),
        ("local_error", &stats.rejected_local_error),
        ("proxy_invalid", &stats.rejected_proxy_invalid),
        ("proxy_untrusted", &stats.rejected_proxy_untrusted),
    ] {
        m.sample(
            "chat_lb_connections_rejected_total",
            &[("reason", reason)],
            get(counter),
        );
    }
    m.single(
        "chat_lb_awaiting_first_byte",
        Kind::Gauge,
        "Clients accepted that have not sent a byte yet (no backend connection is open for them).",
        get(&stats.awaiting_first_byte),
    );
    m.family(
        "chat_lb_timeouts_total",
        Kind::Counter,
        "Client connections closed by a deadline, by deadline.",
    );
    m.sample(
        "chat_lb_timeouts_total",
        &[("timeout", "client_first_byte")],
        get(&stats.first_byte_timeouts),
    );
    m.sample(
        "chat_lb_timeouts_total",
        &[("timeout", "idle")],
        get(&stats.idle_timeouts),
    );
    m.single(
        "chat_lb_sources_tracked",
        Kind::Gauge,
        "Client sources (IPv4 addresses, IPv6 /64s) with open connections or a partly used rate bucket.",
        sources.tracked() as u64,
    );
    m.single(
        "chat_lb_local_connect_errors_total",
        Kind::Counter,
        "Backend connects (for clients or health checks) that failed for want of local resources (EMFILE and the like); not held against the backend.",
        get(&stats.local_connect_errors),
    );
    m.single(
        "chat_lb_accept_errors_total",
        Kind::Counter,
        "Accept failures that caused a back-off.",
        get(&stats.accept_errors),
    );
    m.family(
        "chat_lb_config_reloads_total",
        Kind::Counter,
        "Backend set reloads, by result.",
    );
    m.sample(
        "chat_lb_config_reloads_total",
        &[("result", "success")],
        get(&stats.reloads_ok),
    );
    m.sample(
        "chat_lb_config_reloads_total",
        &[("result", "failure")],
        get(&stats.reloads_failed),
    );
    m.single(
        "chat_lb_draining",
        Kind::Gauge,
        "1 once shutdown has begun.",
        u64::from(stats.draining.load(Ordering::Relaxed)),
    );
}

/// One family per backend figure, one sample per backend (and variant).
fn render_backends(m: &mut TextWriter, backends: &[Arc<Backend>]) {
    let up = |b: &Backend| u64::from(b.is_up());
    let active = |b: &Backend| get(&b.stats.active_connections);
    let connections = |b: &Backend| get(&b.stats.connections);
    let connect_failures = |b: &Backend| get(&b.stats.connect_failures);
    let health_ok = |b: &Backend| get(&b.stats.health_successes);
    let health_failed = |b: &Backend| get(&b.stats.health_failures);
    let to_backend = |b: &Backend| get(&b.stats.bytes_to_backend);
    let to_client = |b: &Backend| get(&b.stats.bytes_to_client);
    let families = [
        Family {
            name: "chat_lb_backend_up",
            kind: Kind::Gauge,
            help: "1 if the backend takes new connections.",
            variants: &[(None, up)],
        },
        Family {
            name: "chat_lb_backend_active_connections",
            kind: Kind::Gauge,
            help: "Connections currently relayed to the backend.",
            variants: &[(None, active)],
        },
        Family {
            name: "chat_lb_backend_connections_total",
            kind: Kind::Counter,
            help: "Connections relayed to the backend.",
            variants: &[(None, connections)],
        },
        Family {
            name: "chat_lb_backend_connect_failures_total",
            kind: Kind::Counter,
            help: "Failed or timed-out connect attempts for clients.",
            variants: &[(None, connect_failures)],
        },
        Family {
            name: "chat_lb_backend_health_checks_total",
            kind: Kind::Counter,
            help: "Active health checks, by result.",
            variants: &[
                (Some(("result", "success")), health_ok),
                (Some(("result", "failure")), health_failed),
            ],
        },
        Family {
            name: "chat_lb_backend_bytes_total",
            kind: Kind::Counter,
            help: "Bytes relayed, by direction.",
            variants: &[
                (Some(("direction", "to_backend")), to_backend),
                (Some(("direction", "to_client")), to_client),
            ],
        },
    ];
    for family in families {
        m.family(family.name, family.kind, family.help);
        for &(extra, read) in family.variants {
            for backend in backends.iter() {
                let mut labels = vec![("backend", backend.addr())];
                labels.extend(extra);
                m.sample(family.name, &labels, read(backend));
            }
        }
    }
}

/// A per-backend metric: one sample per backend and variant (an extra label and its value).
struct Family<'a> {
    name: &'a str,
    kind: Kind,
    help: &'a str,
    variants: &'a [(Option<Label<'a>>, ReadValue)],
}

/// Reads a sample's value from a backend.
type ReadValue = fn(&Backend) -> u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_family_once_with_backend_labels() {
        let pool = Pool::new(&["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()]);
        pool.snapshot()[1]
            .stats
            .bytes_to_client
            .store(42, Ordering::Relaxed);
        let stats = Stats::default();
        stats.rejected_max_connections.store(3, Ordering::Relaxed);
        stats.rejected_source_rate.store(4, Ordering::Relaxed);
        stats.first_byte_timeouts.store(5, Ordering::Relaxed);
        let sources = Sources::new(crate::config::SourceLimits::default());
        let text = render(&pool, &stats, &sources);
        assert!(text.contains("chat_lb_connections_rejected_total{reason=\"max_connections\"} 3\n"));
        assert!(text
            .contains("chat_lb_connections_rejected_total{reason=\"conn_rate_per_source\"} 4\n"));
        assert!(text.contains("chat_lb_timeouts_total{timeout=\"client_first_byte\"} 5\n"));
        assert!(text.contains("chat_lb_sources_tracked 0\n"));
        assert!(text.contains("chat_lb_backend_up{backend=\"127.0.0.1:1\"} 1\n"));
        assert!(text.contains(
            "chat_lb_backend_bytes_total{backend=\"127.0.0.1:2\",direction=\"to_client\"} 42\n"
        ));
        assert_eq!(
            text.matches("# TYPE chat_lb_backend_bytes_total ").count(),
            1
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
