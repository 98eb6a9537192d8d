//! The current set of backends and the round-robin choice among the healthy ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::backend::Backend;

/// The backend set. Readers take a cheap snapshot (`Arc` clone) and work on it without a lock,
/// so a reload never waits for connections and connections never see a half-applied reload.
#[derive(Debug)]
pub(crate) struct Pool {
    /// parking_lot `RwLock`: held only to clone or swap the `Arc`, never across `.await`.
    backends: RwLock<Arc<[Arc<Backend>]>>,
    /// Round-robin cursor; one step per client connection.
    next: AtomicUsize,
}

/// What a reload changed, for logging.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
}

impl Pool {
    pub(crate) fn new(addrs: &[String]) -> Self {
        let backends: Vec<_> = addrs
            .iter()
            .map(|addr| Arc::new(Backend::new(addr.clone())))
            .collect();
        Self {
            backends: RwLock::new(backends.into()),
            next: AtomicUsize::new(0),
        }
    }

    /// All configured backends, in configuration order.
    pub(crate) fn snapshot(&self) -> Arc<[Arc<Backend>]> {
        self.backends.read().clone()
    }

    /// The healthy backends in the order to try them for one new connection: round-robin
    /// picks the first, the others follow as failover candidates.
    pub(crate) fn candidates(&self) -> Vec<Arc<Backend>> {
        let healthy: Vec<_> = self
            .snapshot()
            .iter()
            .filter(|b| b.is_up())
            .cloned()
            .collect();
        if healthy.is_empty() {
            return healthy;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
        let mut ordered = Vec::with_capacity(healthy.len());
        ordered.extend_from_slice(&healthy[start..]);
        ordered.extend_from_slice(&healthy[..start]);
        ordered
    }

    /// Replaces the backend set. Backends present before and after keep their state and
    /// counters; removed ones leave the pool but stay alive for their established connections.
    pub(crate) fn replace(&self, addrs: &[String]) -> Change {
        let mut guard = self.backends.write();
        let old: HashMap<&str, &Arc<Backend>> = guard.iter().map(|b| (b.addr(), b)).collect();
        let mut change = Change::default();
        let new: Vec<_> = addrs
            .iter()
            .map(|addr| match old.get(addr.as_str()) {
                Some(existing) => Arc::clone(existing),
                None => {
                    change.added.push(addr.clone());
                    Arc::new(Backend::new(addr.clone()))
                }
            })
            .collect();
        change.removed = guard
            .iter()
            .filter(|b| !addrs.iter().any(|a| a == b.addr()))
            .map(|b| b.addr().to_owned())
            .collect();
        *guard = new.into();
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Observation;

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn first(pool: &Pool) -> String {
        pool.candidates()[0].addr().to_owned()
    }

    #[test]
    fn round_robin_is_even_and_skips_down_backends() {
        let pool = Pool::new(&addrs(&["a:1", "b:1", "c:1"]));
        let picks: Vec<_> = (0..6).map(|_| first(&pool)).collect();
        assert_eq!(picks, ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
        pool.snapshot()[1].observe(Observation::Draining, 2, 2);
        for _ in 0..10 {
            let candidates = pool.candidates();
            assert_eq!(candidates.len(), 2);
            assert!(candidates.iter().all(|b| b.addr() != "b:1"));
        }
    }

    #[test]
    fn candidates_list_every_healthy_backend_once() {
        let pool = Pool::new(&addrs(&["a:1", "b:1", "c:1"]));
        pool.next.store(2, Ordering::Relaxed);
        let order: Vec<_> = pool
            .candidates()
            .iter()
            .map(|b| b.addr().to_owned())
            .collect();
        assert_eq!(order, ["c:1", "a:1", "b:1"]);
    }

    #[test]
    fn replace_keeps_state_of_kept_backends() {
        let pool = Pool::new(&addrs(&["a:1", "b:1"]));
        let b = Arc::clone(&pool.snapshot()[1]);
        b.observe(Observation::ConnectFailed, 2, 2);
        let change = pool.replace(&addrs(&["b:1", "c:1"]));
        assert_eq!(change.added, ["c:1"]);
        assert_eq!(change.removed, ["a:1"]);
        let now = pool.snapshot();
        assert!(Arc::ptr_eq(&now[0], &b));
        assert!(!now[0].is_up());
        assert!(now[1].is_up());
    }
}
