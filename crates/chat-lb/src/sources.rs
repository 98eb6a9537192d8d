//! Per-source admission: how many connections one client source holds at once and how fast it
//! may open new ones (a token bucket), checked at accept before anything else is spent on it.
//!
//! A source is an IPv4 address or an IPv6 /64: one host is routinely given a whole /64 and
//! could otherwise take a fresh address for every connection.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::SourceLimits;

/// A client source, packed into 8 bytes because every connection keeps one for its whole life
/// (to give its place back when it ends).
///
/// IPv6 sources are the top 64 bits of the address. IPv4 sources are placed under
/// `ffff:ffff::/32`, a multicast range: no TCP peer can have such an address, so an IPv4
/// source never shares a key with an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(u64);

const V4_PREFIX: u64 = 0xffff_ffff << 32;

impl Source {
    /// The source of a peer address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a
    /// dual-stack `[::]` listener reports for IPv4 clients) count as their IPv4 address, or
    /// every IPv4 client would share the one `::ffff:0:0/64`.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(V4_PREFIX | u64::from(u32::from(v4))),
            IpAddr::V6(v6) => Self((u128::from(v6) >> 64) as u64),
        }
    }
}

/// For logs: `192.0.2.7` or `2001:db8:1:2::/64`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >> 32 == V4_PREFIX >> 32 {
            Ipv4Addr::from(self.0 as u32).fmt(f)
        } else {
            write!(f, "{}/64", Ipv6Addr::from(u128::from(self.0) << 64))
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The source already holds `max_connections`.
    Cap,
    /// The source's token bucket is empty.
    Rate,
}

/// The per-source state of every source that holds a connection or has used part of its
/// bucket recently.
#[derive(Debug)]
pub(crate) struct Sources {
    limits: SourceLimits,
    /// parking_lot: held for one hash-map operation when a connection is accepted (accept
    /// loop) or ends (relay threads), never across an await. One lock rather than shards:
    /// accepts come from one thread, and ends are rare next to relayed bytes.
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    /// The default (SipHash, randomly keyed) hasher on purpose: clients choose the keys, and
    /// a guessable hash would let them pile every source into one bucket.
    entries: HashMap<Source, Entry>,
    /// Entries no longer needed are dropped when they end (see `release`) or, for sources
    /// that still had a partly used bucket then, by a sweep once the table reaches this size
    /// (twice the size after the last sweep), so sweeping costs O(1) per admission.
    sweep_at: usize,
}

#[derive(Debug)]
struct Entry {
    /// Connections open now.
    connections: u32,
    /// Tokens in the bucket at `updated`; one per new connection.
    tokens: f64,
    updated: Instant,
}

/// The smallest table size that triggers a sweep.
const MIN_SWEEP: usize = 1024;

impl Sources {
    pub(crate) fn new(limits: SourceLimits) -> Self {
        Self {
            limits,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Admits one new connection from `source` at `now`, or says why not. An admitted
    /// connection must be given back with [`Sources::release`] when it ends. A refused one
    /// takes no token, so a source held at its cap does not also lose its rate.
    pub(crate) fn admit(&self, source: Source, now: Instant) -> Result<(), Refusal> {
        let limits = self.limits;
        if limits.is_off() {
            return Ok(());
        }
        let mut table = self.table.lock();
        if table.entries.len() >= table.sweep_at {
            table
                .entries
                .retain(|_, entry| !entry.is_spent(limits, now));
            table.sweep_at = (table.entries.len() * 2).max(MIN_SWEEP);
        }
        let entry = table.entries.entry(source).or_insert(Entry {
            connections: 0,
            tokens: f64::from(limits.burst),
            updated: now,
        });
        if limits.max_connections != 0 && entry.connections >= limits.max_connections {
            return Err(Refusal::Cap);
        }
        if limits.rate != 0 {
            entry.refill(limits, now);
            if entry.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            entry.tokens -= 1.0;
        }
        entry.connections += 1;
        Ok(())
    }

    /// Gives back the place of a connection admitted from `source`, which ended at `now`.
    pub(crate) fn release(&self, source: Source, now: Instant) {
        let limits = self.limits;
        if limits.is_off() {
            return;
        }
        let mut table = self.table.lock();
        if let Some(entry) = table.entries.get_mut(&source) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.is_spent(limits, now) {
                table.entries.remove(&source);
            }
        }
    }

    /// Sources tracked now (for `/metrics`).
    pub(crate) fn tracked(&self) -> usize {
        self.table.lock().entries.len()
    }
}

impl Entry {
    fn refill(&mut self, limits: SourceLimits, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(limits.rate)).min(f64::from(limits.burst));
        self.updated = now;
    }

    /// An entry with no connection and a full bucket says nothing a fresh one would not.
    fn is_spent(&self, limits: SourceLimits, now: Instant) -> bool {
        if self.connections > 0 {
            return false;
        }
        if limits.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * f64::from(limits.rate) >= f64::from(limits.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn source(text: &str) -> Source {
        Source::of(text.parse().unwrap())
    }

    #[test]
    fn ipv6_sources_are_their_64_and_ipv4_ones_their_address() {
        assert_eq!(source("2001:db8:1:2::1"), source("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_ne!(source("192.0.2.1"), source("192.0.2.2"));
        // A dual-stack listener reports IPv4 clients as mapped addresses: still one each.
        assert_eq!(source("::ffff:192.0.2.1"), source("192.0.2.1"));
        assert_ne!(source("::ffff:192.0.2.1"), source("::ffff:192.0.2.2"));
        // No IPv4 source shares a key with an IPv6 /64, not even ::/64 or ffff:ffff::/64.
        assert_ne!(source("0.0.0.0"), source("::"));
        assert_ne!(source("0.0.0.1"), source("::1"));
        assert_eq!(source("192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(source("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(source("::1").to_string(), "::/64");
    }

    fn limits(max_connections: u32, rate: u32, burst: u32) -> SourceLimits {
        SourceLimits {
            max_connections,
            rate,
            burst,
        }
    }

    #[test]
    fn the_cap_counts_open_connections_per_source() {
        let sources = Sources::new(limits(2, 0, 0));
        let (a, b, now) = (source("192.0.2.1"), source("192.0.2.2"), Instant::now());
        assert_eq!(sources.admit(a, now), Ok(()));
        assert_eq!(sources.admit(a, now), Ok(()));
        assert_eq!(sources.admit(a, now), Err(Refusal::Cap));
        assert_eq!(sources.admit(b, now), Ok(()));
        sources.release(a, now);
        assert_eq!(sources.admit(a, now), Ok(()));
        for s in [a, a, b] {
            sources.release(s, now);
        }
        assert_eq!(sources.tracked(), 0, "idle sources are forgotten");
    }

    #[test]
    fn the_rate_is_a_token_bucket_per_source() {
        let sources = Sources::new(limits(0, 10, 3));
        let (a, b, start) = (source("2001:db8::1"), source("2001:db9::1"), Instant::now());
        for _ in 0..3 {
            assert_eq!(sources.admit(a, start), Ok(()));
            sources.release(a, start);
        }
        assert_eq!(sources.admit(a, start), Err(Refusal::Rate));
        // Another address in the same /64 is the same source.
        assert_eq!(
            sources.admit(source("2001:db8::2"), start),
            Err(Refusal::Rate)
        );
        assert_eq!(sources.admit(b, start), Ok(()));
        // 10 a second: one token every 100 ms, never more than the burst.
        let later = start + Duration::from_millis(100);
        assert_eq!(sources.admit(a, later), Ok(()));
        assert_eq!(sources.admit(a, later), Err(Refusal::Rate));
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(sources.admit(a, much_later), Ok(()));
        }
        assert_eq!(sources.admit(a, much_later), Err(Refusal::Rate));
    }

    #[test]
    fn a_refusal_for_the_cap_takes_no_token() {
        let sources = Sources::new(limits(1, 1, 2));
        let (a, now) = (source("192.0.2.1"), Instant::now());
        assert_eq!(sources.admit(a, now), Ok(()));
        for _ in 0..5 {
            assert_eq!(sources.admit(a, now), Err(Refusal::Cap));
        }
        sources.release(a, now);
        assert_eq!(
            sources.admit(a, now),
            Ok(()),
            "the second token is still there"
        );
    }

    #[test]
    fn sources_with_a_partly_used_bucket_are_swept_once_refilled() {
        let sources = Sources::new(limits(0, 1, 1));
        let start = Instant::now();
        for i in 0..MIN_SWEEP as u32 {
            let s = Source::of(IpAddr::V4(Ipv4Addr::from(i)));
            sources.admit(s, start).unwrap();
            sources.release(s, start);
        }
        assert_eq!(
            sources.tracked(),
            MIN_SWEEP,
            "buckets still refilling are kept"
        );
        let refilled = start + Duration::from_secs(1);
        sources.admit(source("192.0.2.1"), refilled).unwrap();
        assert_eq!(sources.tracked(), 1);
    }

    #[test]
    fn with_both_limits_off_nothing_is_tracked() {
        let sources = Sources::new(limits(0, 0, 0));
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(sources.admit(source("192.0.2.1"), now), Ok(()));
        }
        assert_eq!(sources.tracked(), 0);
    }
}
