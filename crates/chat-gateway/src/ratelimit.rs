//! A token bucket per connection: full at start, `rate` tokens a second up to `burst`.

use std::time::Instant;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self::new_at(rate, burst, Instant::now())
    }

    fn new_at(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// Takes a token if one is available.
    pub(crate) fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for a request that was then rejected.
    pub(crate) fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn starts_full_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new_at(10, 20, t0);
        for _ in 0..20 {
            assert!(bucket.try_take_at(t0));
        }
        assert!(!bucket.try_take_at(t0));
        // 10/s: one token every 100 ms.
        assert!(!bucket.try_take_at(t0 + Duration::from_millis(50)));
        assert!(bucket.try_take_at(t0 + Duration::from_millis(101)));
        assert!(!bucket.try_take_at(t0 + Duration::from_millis(102)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert!(bucket.try_take_at(later));
        }
        assert!(!bucket.try_take_at(later));
    }

    #[test]
    fn refund_restores_a_token_up_to_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new_at(1, 1, t0);
        assert!(bucket.try_take_at(t0));
        bucket.refund();
        assert!(bucket.try_take_at(t0));
        bucket.refund();
        bucket.refund();
        assert!(bucket.try_take_at(t0));
        assert!(!bucket.try_take_at(t0));
    }
}
