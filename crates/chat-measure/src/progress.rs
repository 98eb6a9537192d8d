//! What a run shows while it goes: a progress bar on stderr (hidden when
//! stderr is not a terminal) and the timeline of a counter's rate.

use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::latency::Clock;
use crate::report::fmt_rate;
use crate::usage::{CpuUsage, ProcessUsage, WindowUsage};

/// How often the timeline is sampled and the bar redrawn.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// A progress bar over a known length (milliseconds or items).
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` units; `hidden` (or a non-terminal stderr) draws nothing.
    pub fn new(len: u64, hidden: bool) -> Self {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg}")
            .expect("static template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        Self { bar }
    }

    /// Restarts the bar for a new phase.
    pub fn phase(&self, prefix: &'static str, len: u64) {
        self.bar.set_prefix(prefix);
        self.bar.set_length(len);
        self.bar.set_position(0);
    }

    /// Moves the bar to `position` and shows `message` beside it.
    pub fn update(&self, position: u64, message: String) {
        self.bar.set_position(position);
        self.bar.set_message(message);
    }

    /// Clears the bar for good.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// What [`watch_window`] saw: the rate over time, and the resource use over the window.
pub struct Watch {
    /// (seconds since the epoch, rate) once per [`SAMPLE_EVERY`].
    pub timeline: Vec<[f64; 2]>,
    /// The bench's own CPU over the window.
    pub bench_cpu: CpuUsage,
    /// The watched processes over the window.
    pub processes: Vec<ProcessUsage>,
}

/// Shows a run until `clock`'s measured window ends: every
/// [`SAMPLE_EVERY`], the rate of the counter `total` for the bar and the
/// timeline (`unit`: what it counts per second); at the window's start and
/// end, the CPU of the bench and of what `usage` watches.
pub async fn watch_window(
    clock: &Clock,
    unit: &str,
    total: impl Fn() -> u64,
    progress: &Progress,
    mut usage: WindowUsage,
) -> Result<Watch> {
    let epoch = clock.epoch;
    let (start_at, end_at) = clock.window();
    progress.phase("run", end_at.duration_since(epoch).as_millis() as u64);
    let mut timeline = Timeline::default();
    timeline.rate(0.0, 0);
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.tick().await; // the first tick is immediate
    while !usage.ended() {
        ticks.tick().await;
        let now = Instant::now();
        let rate = timeline.rate(now.duration_since(epoch).as_secs_f64(), total());
        progress.update(
            now.duration_since(epoch).as_millis() as u64,
            format!("{} {unit}", fmt_rate(rate)),
        );
        if !usage.started() && now >= start_at {
            usage.start()?;
        }
        if now >= end_at {
            usage.end()?;
        }
    }
    let (bench_cpu, processes) = usage.into_usage().expect("the loop ends with the window");
    Ok(Watch {
        timeline: timeline.into_points(),
        bench_cpu,
        processes,
    })
}

/// Rate points `(seconds, per second)` from successive readings of a
/// monotonic counter.
#[derive(Debug, Default)]
pub struct Timeline {
    points: Vec<[f64; 2]>,
    last: Option<(f64, u64)>,
}

impl Timeline {
    /// Adds the reading `total` at `t` seconds; the first reading only sets
    /// the base. Returns the rate since the previous reading.
    pub fn rate(&mut self, t: f64, total: u64) -> f64 {
        let rate = match self.last {
            Some((t0, v0)) if t > t0 => total.saturating_sub(v0) as f64 / (t - t0),
            _ => 0.0,
        };
        if self.last.is_some() {
            self.points.push([t, rate]);
        }
        self.last = Some((t, total));
        rate
    }

    /// Adds a plain value (e.g. open connections) at `t` seconds.
    pub fn value(&mut self, t: f64, value: f64) {
        self.points.push([t, value]);
    }

    /// The points added so far, `(seconds, value)`.
    pub fn into_points(self) -> Vec<[f64; 2]> {
        self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_over_time() {
        let mut t = Timeline::default();
        assert_eq!(t.rate(0.0, 0), 0.0);
        assert_eq!(t.rate(0.5, 500), 1_000.0);
        assert_eq!(t.rate(1.5, 2_500), 2_000.0);
        assert_eq!(t.into_points(), vec![[0.5, 1_000.0], [1.5, 2_000.0]]);
    }

    #[test]
    fn hidden_bars_accept_updates() {
        let p = Progress::new(10, true);
        p.phase("test", 20);
        p.update(5, "halfway".into());
        p.finish();
    }
}
