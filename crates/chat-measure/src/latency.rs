//! Latency recording: HDR histograms in nanoseconds, filled in batches from
//! many tasks, summarised as percentiles in microseconds.
//!
//! A histogram per connection would cost hundreds of KiB each at three
//! significant digits; one shared histogram would be a lock per delivery.
//! So each task buffers samples locally and moves them into one of a few
//! shared shards (a short, uncontended lock) when its buffer is full, when
//! it is about to wait for the socket, or when it finishes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Largest latency kept exactly: 60 s; anything above is recorded as 60 s.
const MAX_NS: u64 = 60_000_000_000;

/// Samples buffered by a task before it moves them into its shard.
const BATCH: usize = 512;

/// A run's time base: send times are nanoseconds since `epoch`, and only
/// what was sent in the measured window `[start_ns, end_ns)` is measured.
pub struct Clock {
    /// When the run started.
    pub epoch: Instant,
    /// Where the measured window starts, in nanoseconds since `epoch`.
    pub start_ns: u64,
    /// Where the measured window ends (excluded), in nanoseconds since `epoch`.
    pub end_ns: u64,
}

impl Clock {
    /// Starts now: `warmup` unmeasured, then `duration` measured.
    pub fn start(warmup: Duration, duration: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            start_ns: warmup.as_nanos() as u64,
            end_ns: (warmup + duration).as_nanos() as u64,
        }
    }

    /// Nanoseconds since `epoch`.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// When the measured window starts and ends.
    pub fn window(&self) -> (Instant, Instant) {
        (
            self.epoch + Duration::from_nanos(self.start_ns),
            self.epoch + Duration::from_nanos(self.end_ns),
        )
    }

    /// Whether something sent at `sent_ns` is in the measured window.
    #[inline]
    pub fn measured(&self, sent_ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&sent_ns)
    }
}

/// An empty histogram with the benchmark's range and precision (1 ns .. 60 s, 3 digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Shared state of one measurement: the shards, and live counters the
/// progress display and the drain check read while the run goes on.
pub struct Shards {
    /// Latency samples of the measured window (mutex: held only to copy a batch in).
    shards: Vec<Mutex<Histogram<u64>>>,
    /// Every event counted so far, measured or not (for the timeline).
    total: AtomicU64,
    /// Samples moved into the shards so far (the measured events).
    measured: AtomicU64,
}

impl Shards {
    /// `count` empty shards (at least one): about one per core keeps the
    /// recorders from contending.
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..count.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            total: AtomicU64::new(0),
            measured: AtomicU64::new(0),
        })
    }

    /// A recorder for task number `index` (spread over the shards).
    pub fn recorder(self: &Arc<Self>, index: usize) -> Recorder {
        Recorder {
            shards: Arc::clone(self),
            shard: index % self.shards.len(),
            samples: Vec::new(),
            unflushed: 0,
        }
    }

    /// Events counted so far (flushed ones).
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Measured samples so far (flushed ones).
    pub fn measured(&self) -> u64 {
        self.measured.load(Relaxed)
    }

    /// All shards merged into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            all.add(&*shard.lock())
                .expect("shards share the same bounds");
        }
        all
    }
}

/// One task's buffer in front of the shared shards.
pub struct Recorder {
    shards: Arc<Shards>,
    shard: usize,
    /// Measured latencies not yet moved into the shard.
    samples: Vec<u64>,
    /// Events (measured or not) not yet added to the total.
    unflushed: u64,
}

impl Recorder {
    /// Counts one event outside the measured window.
    #[inline]
    pub fn count(&mut self) {
        self.unflushed += 1;
    }

    /// Counts one measured event with its latency.
    #[inline]
    pub fn record(&mut self, latency_ns: u64) {
        self.unflushed += 1;
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(BATCH);
        }
        self.samples.push(latency_ns);
        if self.samples.len() >= BATCH {
            self.flush();
        }
    }

    /// Moves everything buffered into the shared state.
    pub fn flush(&mut self) {
        if !self.samples.is_empty() {
            let mut shard = self.shards.shards[self.shard].lock();
            for &ns in &self.samples {
                shard.saturating_record(ns.clamp(1, MAX_NS));
            }
            drop(shard);
            self.shards
                .measured
                .fetch_add(self.samples.len() as u64, Relaxed);
            self.samples.clear();
        }
        if self.unflushed > 0 {
            self.shards.total.fetch_add(self.unflushed, Relaxed);
            self.unflushed = 0;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// The smallest sample.
    pub min_us: f64,
    /// The mean of the samples.
    pub mean_us: f64,
    /// The median.
    pub p50_us: f64,
    /// The 90th percentile.
    pub p90_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The 99.9th percentile.
    pub p999_us: f64,
    /// The largest sample.
    pub max_us: f64,
    /// (percentile, latency in µs) pairs for percentile plots, from 0 to 100.
    pub distribution: Vec<[f64; 2]>,
}

impl LatencySummary {
    /// Summarises `hist` (nanoseconds); an empty histogram gives zeros.
    pub fn from_histogram(hist: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if hist.is_empty() {
            return Self {
                count: 0,
                min_us: 0.0,
                mean_us: 0.0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
                distribution: Vec::new(),
            };
        }
        let at = |q: f64| us(hist.value_at_quantile(q));
        Self {
            count: hist.len(),
            min_us: us(hist.min()),
            mean_us: hist.mean() / 1_000.0,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: us(hist.max()),
            distribution: distribution(hist),
        }
    }
}

/// Points of the percentile curve: denser towards the tail, where each
/// "nine" gets the same number of points, up to the largest value.
fn distribution(hist: &Histogram<u64>) -> Vec<[f64; 2]> {
    let mut points = Vec::new();
    let mut last_percentile = -1.0;
    // Ten points per decade of 1/(1-q), to six nines.
    for step in 0..=60 {
        let q = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
        let q = if step == 0 { 0.0 } else { q };
        let percentile = q * 100.0;
        if percentile - last_percentile < 1e-9 {
            continue;
        }
        points.push([percentile, hist.value_at_quantile(q) as f64 / 1_000.0]);
        last_percentile = percentile;
        // Past the resolution of the sample count the tail is just the max.
        if (1.0 - q) * (hist.len() as f64) < 1.0 {
            break;
        }
    }
    points.push([100.0, hist.max() as f64 / 1_000.0]);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_measures_what_was_sent_inside_its_window() {
        let clock = Clock::start(Duration::from_secs(2), Duration::from_secs(10));
        let (start, end) = clock.window();
        assert_eq!(start - clock.epoch, Duration::from_secs(2));
        assert_eq!(end - clock.epoch, Duration::from_secs(12));
        assert!(!clock.measured(1_999_999_999));
        assert!(clock.measured(2_000_000_000));
        assert!(clock.measured(11_999_999_999));
        assert!(!clock.measured(12_000_000_000));
    }

    /// Within HDR's precision at three significant digits.
    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= want * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut hist = new_histogram();
        // 1..=10_000 µs, once each.
        for us in 1..=10_000u64 {
            hist.record(us * 1_000).unwrap();
        }
        let s = LatencySummary::from_histogram(&hist);
        assert_eq!(s.count, 10_000);
        assert!(close(s.min_us, 1.0), "{s:?}");
        assert!(close(s.p50_us, 5_000.0), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 9_000.0), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 9_900.0), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 9_990.0), "p99.9 {}", s.p999_us);
        assert!(close(s.max_us, 10_000.0), "max {}", s.max_us);
        assert!(close(s.mean_us, 5_000.5), "mean {}", s.mean_us);
    }

    #[test]
    fn tail_percentiles_see_rare_outliers() {
        let mut hist = new_histogram();
        for _ in 0..9_990 {
            hist.record(100_000).unwrap(); // 100 µs
        }
        for _ in 0..10 {
            hist.record(50_000_000).unwrap(); // 50 ms
        }
        let s = LatencySummary::from_histogram(&hist);
        assert!(close(s.p99_us, 100.0), "{s:?}");
        assert!(
            close(s.p999_us, 100.0),
            "p99.9 is the 9990th value: {}",
            s.p999_us
        );
        assert!(close(s.max_us, 50_000.0));
    }

    #[test]
    fn distribution_is_monotonic_and_ends_at_the_max() {
        let mut hist = new_histogram();
        for ns in (1..=100_000u64).map(|i| i * 37) {
            hist.record(ns).unwrap();
        }
        let s = LatencySummary::from_histogram(&hist);
        let d = &s.distribution;
        assert!(d.len() > 20, "{}", d.len());
        assert_eq!(d[0][0], 0.0);
        assert_eq!(d.last().unwrap()[0], 100.0);
        assert!(close(d.last().unwrap()[1], s.max_us));
        for pair in d.windows(2) {
            assert!(
                pair[1][0] > pair[0][0] && pair[1][1] >= pair[0][1],
                "{pair:?}"
            );
        }
    }

    #[test]
    fn empty_histogram_summarises_to_zeros() {
        let s = LatencySummary::from_histogram(&new_histogram());
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_us, 0.0);
        assert!(s.distribution.is_empty());
    }

    #[test]
    fn recorders_batch_into_shared_shards() {
        let shards = Shards::new(4);
        let mut a = shards.recorder(0);
        let mut b = shards.recorder(1);
        for i in 0..1_000u64 {
            a.record(1_000 + i);
            b.count();
        }
        b.record(u64::MAX); // saturates at the histogram's top
                            // Partly flushed (full batches), then everything once dropped.
        assert_eq!(shards.measured(), BATCH as u64);
        drop(a);
        drop(b);
        assert_eq!(shards.measured(), 1_001);
        assert_eq!(shards.total(), 2_001);
        let merged = shards.merged();
        assert_eq!(merged.len(), 1_001);
        assert!(merged.max() >= MAX_NS * 999 / 1_000);
    }
}
