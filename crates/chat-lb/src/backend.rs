//! One backend: its address, whether it takes new connections, and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// What a health observation says about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// `/healthz` answered 2xx.
    Healthy,
    /// `/healthz` failed: no connection, timeout, garbage or a non-2xx status other than 503.
    Failed,
    /// `/healthz` answered 503: the backend is draining and asks for no new connections, so it
    /// goes down at once instead of after `fall` checks.
    Draining,
    /// A client connection could not be opened (passive check): down at once.
    ConnectFailed,
}

/// A backend shared by the pool, the health checker, the admin endpoint and the connections
/// relaying to it. A connection keeps its `Arc` after a reload removed the backend, so counters
/// stay valid until the last relayed byte.
#[derive(Debug)]
pub(crate) struct Backend {
    /// `host:port` as configured; also the metrics label.
    addr: String,
    /// Read on every new connection, so it lives outside the mutex; written only while
    /// holding `health`, which keeps it consistent with the streak counters.
    up: AtomicBool,
    /// Consecutive results; a mutex (not atomics) because a transition reads and writes
    /// several fields together. parking_lot: held for a few instructions, never across `.await`.
    health: Mutex<Streak>,
    /// Counters exported on `/metrics`.
    pub(crate) stats: BackendStats,
}

#[derive(Debug, Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

/// Per-backend counters; relaxed atomics because each is read on its own.
#[derive(Debug, Default)]
pub(crate) struct BackendStats {
    pub(crate) active_connections: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) health_successes: AtomicU64,
    pub(crate) health_failures: AtomicU64,
    pub(crate) bytes_to_backend: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
}

/// A state change caused by an observation, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    WentUp,
    WentDown,
}

impl Backend {
    /// A new backend starts up (optimistic): a restarted balancer serves at once, and a dead
    /// backend costs at most one failed connect attempt, which is retried on the next backend.
    pub(crate) fn new(addr: String) -> Self {
        Self {
            addr,
            up: AtomicBool::new(true),
            health: Mutex::new(Streak::default()),
            stats: BackendStats::default(),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records one observation and applies the rise/fall rules.
    pub(crate) fn observe(
        &self,
        observation: Observation,
        fall: u32,
        rise: u32,
    ) -> Option<Transition> {
        match observation {
            Observation::Healthy => self.stats.health_successes.fetch_add(1, Ordering::Relaxed),
            Observation::Failed | Observation::Draining => {
                self.stats.health_failures.fetch_add(1, Ordering::Relaxed)
            }
            Observation::ConnectFailed => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        let mut streak = self.health.lock();
        let up = self.up.load(Ordering::Acquire);
        if observation == Observation::Healthy {
            streak.successes = streak.successes.saturating_add(1);
            streak.failures = 0;
            if !up && streak.successes >= rise {
                self.up.store(true, Ordering::Release);
                return Some(Transition::WentUp);
            }
            return None;
        }
        streak.successes = 0;
        streak.failures = streak.failures.saturating_add(1);
        let at_once = matches!(
            observation,
            Observation::Draining | Observation::ConnectFailed
        );
        if up && (at_once || streak.failures >= fall) {
            self.up.store(false, Ordering::Release);
            return Some(Transition::WentDown);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        Backend::new("127.0.0.1:1".into())
    }

    #[test]
    fn falls_after_consecutive_failures_only() {
        let b = backend();
        assert!(b.is_up());
        assert_eq!(b.observe(Observation::Failed, 2, 2), None);
        assert_eq!(b.observe(Observation::Healthy, 2, 2), None);
        assert_eq!(b.observe(Observation::Failed, 2, 2), None);
        assert!(b.is_up());
        assert_eq!(
            b.observe(Observation::Failed, 2, 2),
            Some(Transition::WentDown)
        );
        assert!(!b.is_up());
    }

    #[test]
    fn rises_after_consecutive_successes_only() {
        let b = backend();
        b.observe(Observation::ConnectFailed, 2, 3);
        assert!(!b.is_up());
        b.observe(Observation::Healthy, 2, 3);
        b.observe(Observation::Healthy, 2, 3);
        b.observe(Observation::Failed, 2, 3);
        b.observe(Observation::Healthy, 2, 3);
        b.observe(Observation::Healthy, 2, 3);
        assert!(!b.is_up());
        assert_eq!(
            b.observe(Observation::Healthy, 2, 3),
            Some(Transition::WentUp)
        );
        assert!(b.is_up());
    }

    #[test]
    fn draining_and_connect_failures_go_down_at_once() {
        let b = backend();
        assert_eq!(
            b.observe(Observation::Draining, 5, 1),
            Some(Transition::WentDown)
        );
        assert_eq!(
            b.observe(Observation::Healthy, 5, 1),
            Some(Transition::WentUp)
        );
        assert_eq!(
            b.observe(Observation::ConnectFailed, 5, 1),
            Some(Transition::WentDown)
        );
        assert_eq!(b.stats.connect_failures.load(Ordering::Relaxed), 1);
        assert_eq!(b.stats.health_failures.load(Ordering::Relaxed), 1);
        assert_eq!(b.stats.health_successes.load(Ordering::Relaxed), 1);
    }
}
