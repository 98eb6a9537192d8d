//! Rate pacing: when the n-th send of a paced sender is due.
//!
//! The schedule is absolute (send n at `offset + n / rate`), not "sleep one
//! interval after each send", so timer slop and slow sends do not lower the
//! achieved rate: a sender that falls behind sends what is due at once and
//! the lag is reported. Tokio timers have millisecond resolution, so above
//! 1,000/s sends leave in small bursts, each on schedule on average.

use std::time::Duration;

/// What a paced sender does next (see [`Pacer::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Sleep until this time after the start.
    Wait(Duration),
    /// Send up to (not including) this sequence number now.
    Send(u64),
    /// The window is over: stop.
    Done,
}

/// The schedule of one paced sender.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    /// Sends per second; must be positive.
    rate: f64,
    /// When send 0 is due, after the start (to spread senders apart).
    offset: Duration,
}

impl Pacer {
    /// `rate` sends per second, the first one `offset` after the start.
    pub fn new(rate: f64, offset: Duration) -> Self {
        assert!(
            rate > 0.0 && rate.is_finite(),
            "a pacer needs a positive rate"
        );
        Self { rate, offset }
    }

    /// Sender `index` of `count` senders sharing one rate: starts spread
    /// evenly over one interval, so they do not all send in the same instant.
    pub fn staggered(rate: f64, index: usize, count: usize) -> Self {
        let fraction = index as f64 / count.max(1) as f64;
        Self::new(
            rate,
            Duration::from_nanos((1e9 / rate * fraction).round() as u64),
        )
    }

    /// When send `n` (from 0) is due, after the start (whole nanoseconds, rounded up).
    pub fn due_at(&self, n: u64) -> Duration {
        self.offset + Duration::from_nanos((n as f64 * 1e9 / self.rate).ceil() as u64)
    }

    /// How many sends are due by `elapsed` since the start (sends `0..count`);
    /// exactly consistent with [`Pacer::due_at`].
    pub fn due_count(&self, elapsed: Duration) -> u64 {
        if elapsed < self.offset {
            return 0;
        }
        let since_first = elapsed - self.offset;
        // The float estimate, then corrected against due_at's rounding.
        let mut n = (since_first.as_secs_f64() * self.rate).floor() as u64;
        while self.due_at(n) <= elapsed {
            n += 1;
        }
        while n > 0 && self.due_at(n - 1) > elapsed {
            n -= 1;
        }
        n
    }

    /// The next step of a sender that has sent `sent` messages, at `elapsed`
    /// since the start, in a window ending at `end`, sending at most
    /// `max_batch` at once. Once `elapsed` reaches `end` the answer is
    /// `Done`, even for a send that was due earlier: a sender woken late must
    /// not spin on sends it may no longer make.
    pub fn step(&self, sent: u64, elapsed: Duration, end: Duration, max_batch: u64) -> Step {
        let due = self.due_at(sent);
        if elapsed >= end || due >= end {
            Step::Done
        } else if elapsed < due {
            Step::Wait(due)
        } else {
            Step::Send(self.due_count(elapsed).min(sent + max_batch.max(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_due_on_an_absolute_schedule() {
        let p = Pacer::new(1_000.0, Duration::ZERO);
        assert_eq!(p.due_at(0), Duration::ZERO);
        assert_eq!(p.due_at(1), Duration::from_millis(1));
        assert_eq!(p.due_at(2_500), Duration::from_millis(2_500));
        assert_eq!(p.due_count(Duration::ZERO), 1);
        assert_eq!(p.due_count(Duration::from_micros(999)), 1);
        assert_eq!(p.due_count(Duration::from_millis(1)), 2);
        assert_eq!(p.due_count(Duration::from_secs(1)), 1_001);
    }

    #[test]
    fn the_achieved_rate_matches_over_any_window() {
        for rate in [0.5, 3.0, 100.0, 12_345.0, 1_000_000.0] {
            let p = Pacer::new(rate, Duration::ZERO);
            for secs in [1u64, 2, 10] {
                let sent = p.due_count(Duration::from_secs(secs)) - 1;
                let want = rate * secs as f64;
                assert!(
                    (sent as f64 - want).abs() <= 1.0,
                    "rate {rate}: {sent} in {secs}s"
                );
            }
        }
    }

    #[test]
    fn due_at_and_due_count_agree() {
        let p = Pacer::new(777.0, Duration::from_millis(3));
        for n in [0u64, 1, 2, 776, 777, 10_000] {
            let at = p.due_at(n);
            assert!(p.due_count(at) > n, "send {n} is due at {at:?}");
            assert!(p.due_count(at.saturating_sub(Duration::from_micros(10))) <= n + 1);
        }
    }

    #[test]
    fn steps_wait_send_and_end() {
        let p = Pacer::new(100.0, Duration::ZERO); // one every 10 ms
        let end = Duration::from_millis(1_000);
        let ms = Duration::from_millis;
        assert_eq!(p.step(0, ms(0), end, 64), Step::Send(1));
        assert_eq!(p.step(1, ms(3), end, 64), Step::Wait(ms(10)));
        // Behind schedule: everything due, at most a batch at once.
        assert_eq!(p.step(1, ms(55), end, 64), Step::Send(6));
        assert_eq!(p.step(1, ms(995), end, 64), Step::Send(65));
        // The last send is due at 990 ms; woken at or after the end, stop.
        assert_eq!(p.step(99, ms(990), end, 64), Step::Send(100));
        assert_eq!(p.step(99, ms(1_000), end, 64), Step::Done);
        assert_eq!(p.step(99, ms(1_001), end, 64), Step::Done);
        assert_eq!(
            p.step(100, ms(995), end, 64),
            Step::Done,
            "the next one would be due at the end"
        );
    }

    #[test]
    fn staggered_senders_spread_over_one_interval() {
        let offsets: Vec<Duration> = (0..4)
            .map(|i| Pacer::staggered(100.0, i, 4).due_at(0))
            .collect();
        assert_eq!(offsets, [0, 2_500, 5_000, 7_500].map(Duration::from_micros));
        // Before its offset, a sender has nothing due.
        assert_eq!(
            Pacer::staggered(100.0, 3, 4).due_count(Duration::from_millis(7)),
            0
        );
    }
}
