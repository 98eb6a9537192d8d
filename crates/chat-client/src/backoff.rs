//! When a reconnecting client tries again: at once (a little jitter) after a
//! loss, then with a growing, jittered delay while attempts keep failing.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The retry schedule of [`crate::Resuming`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first attempt after a loss waits a random time up to this, so
    /// that the clients of a dead gateway do not all arrive in the same
    /// millisecond.
    pub first_jitter: Duration,
    /// The delay after the first failed attempt; it doubles with every
    /// further failure.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first_jitter: Duration::from_millis(50),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before the next attempt after `failures` failed ones in a
    /// row, with `random` uniform in [0, 1): up to `first_jitter` when
    /// nothing failed yet, else between half and all of `base * 2^(failures
    /// - 1)`, at most `cap`.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let random = random.clamp(0.0, 1.0);
        if failures == 0 {
            return self.first_jitter.mul_f64(random);
        }
        let doubling = 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        let ceiling = self.base.mul_f64(doubling).min(self.cap);
        ceiling.mul_f64(0.5 + random / 2.0)
    }
}

/// A number uniform in [0, 1), different on every call. Jitter needs no
/// more than this: std's randomly keyed SipHash over a counter.
pub(crate) fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_attempt_only_waits_for_its_jitter() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.0), Duration::ZERO);
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(25));
        assert!(b.delay(0, 0.999_999) <= b.first_jitter);
    }

    #[test]
    fn failures_double_the_delay_up_to_the_cap() {
        let b = Backoff::default();
        // The top of each range: base, 2 base, 4 base, ...
        let top: Vec<Duration> = (1..=8).map(|n| b.delay(n, 1.0)).collect();
        assert_eq!(
            top,
            [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000].map(Duration::from_millis)
        );
        // The bottom is half of it: never a burst of instant retries.
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_millis(2_500));
    }

    #[test]
    fn random_units_are_in_range_and_vary() {
        let values: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((350..650).contains(&low), "{low} of 1000 below 0.5");
    }
}
