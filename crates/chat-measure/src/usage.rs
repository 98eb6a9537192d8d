//! CPU time and memory: the benchmark's own (getrusage), and other
//! processes' by pid (`/proc/PID/stat` and `/proc/PID/status`), so a report
//! shows whether the load generator or the server was the bottleneck.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use serde::{Deserialize, Serialize};

/// Clock ticks per second in `/proc/PID/stat` (USER_HZ: 100 on every Linux ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user, system) of this process so far.
pub fn own_cpu() -> (f64, f64) {
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => (secs(usage.user_time()), secs(usage.system_time())),
        Err(_) => (0.0, 0.0),
    }
}

/// CPU used over a span of wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// CPU seconds in user mode.
    pub user_secs: f64,
    /// CPU seconds in the kernel.
    pub system_secs: f64,
    /// The wall time they were used over.
    pub wall_secs: f64,
    /// (user + system) / wall: 1.0 is one core busy all the time.
    pub cores_used: f64,
}

impl CpuUsage {
    fn new(user: f64, system: f64, wall: Duration) -> Self {
        let wall_secs = wall.as_secs_f64();
        let cores_used = if wall_secs > 0.0 {
            (user + system) / wall_secs
        } else {
            0.0
        };
        Self {
            user_secs: user,
            system_secs: system,
            wall_secs,
            cores_used,
        }
    }
}

/// The benchmark's own CPU time from a starting point.
pub struct OwnCpu {
    start: Instant,
    user: f64,
    system: f64,
}

impl OwnCpu {
    /// Starts counting from now.
    pub fn start() -> Self {
        let (user, system) = own_cpu();
        Self {
            start: Instant::now(),
            user,
            system,
        }
    }

    /// The CPU used since the start.
    pub fn usage(&self) -> CpuUsage {
        let (user, system) = own_cpu();
        CpuUsage::new(user - self.user, system - self.system, self.start.elapsed())
    }
}

/// A process watched during a run: `--watch-pid NAME=PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The name it is reported under.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// One thread of the process (its CPU time alone), or the whole process.
    pub tid: Option<u32>,
}

/// Parses `NAME=PID` (or a bare `PID`, named after it).
pub fn parse_watched(spec: &str) -> Result<Watched> {
    let (name, pid) = match spec.split_once('=') {
        Some((name, pid)) => (name.trim().to_owned(), pid.trim()),
        None => (format!("pid-{}", spec.trim()), spec.trim()),
    };
    let pid: u32 = pid
        .parse()
        .with_context(|| format!("invalid pid in {spec:?}"))?;
    if name.is_empty() {
        bail!("empty name in {spec:?}");
    }
    Ok(Watched {
        name,
        pid,
        tid: None,
    })
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    user_secs: f64,
    system_secs: f64,
    rss_kib: u64,
}

impl Watched {
    /// A thread of this process (`/proc/self/task/TID`): its own CPU time,
    /// and the process's RSS.
    pub fn own_thread(name: &str, tid: u32) -> Self {
        Self {
            name: name.into(),
            pid: std::process::id(),
            tid: Some(tid),
        }
    }

    /// Reads its CPU times and RSS now.
    pub fn sample(&self) -> Result<Sample> {
        let dir = match self.tid {
            // /proc/TID/stat would add up the whole process.
            Some(tid) => format!("/proc/{}/task/{tid}", self.pid),
            None => format!("/proc/{}", self.pid),
        };
        let dir = Path::new(&dir);
        let stat = std::fs::read_to_string(dir.join("stat"))
            .with_context(|| format!("reading {}/stat ({})", dir.display(), self.name))?;
        let (user_ticks, system_ticks) =
            parse_stat_times(&stat).with_context(|| format!("parsing {}/stat", dir.display()))?;
        let status = std::fs::read_to_string(dir.join("status"))
            .with_context(|| format!("reading {}/status", dir.display()))?;
        let rss_kib = parse_status_rss_kib(&status)
            .with_context(|| format!("no VmRSS in {}/status", dir.display()))?;
        Ok(Sample {
            at: Instant::now(),
            user_secs: user_ticks as f64 / TICKS_PER_SEC,
            system_secs: system_ticks as f64 / TICKS_PER_SEC,
            rss_kib,
        })
    }
}

/// What a watched process did between two samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// The name it was watched under.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// The CPU it used between the samples.
    pub cpu: CpuUsage,
    /// Its resident memory at the first sample, in KiB.
    pub rss_before_kib: u64,
    /// Its resident memory at the second sample, in KiB.
    pub rss_after_kib: u64,
}

impl ProcessUsage {
    /// What `watched` did from `before` to `after`.
    pub fn between(watched: &Watched, before: &Sample, after: &Sample) -> Self {
        Self {
            name: watched.name.clone(),
            pid: watched.pid,
            cpu: CpuUsage::new(
                after.user_secs - before.user_secs,
                after.system_secs - before.system_secs,
                after.at.duration_since(before.at),
            ),
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
        }
    }

    /// RSS growth in bytes (negative if it shrank).
    pub fn rss_growth_bytes(&self) -> i64 {
        (self.rss_after_kib as i64 - self.rss_before_kib as i64) * 1024
    }
}

/// The resource use over a run's measured window: the bench's own CPU and
/// the watched processes', sampled when the window starts and when it ends.
pub struct WindowUsage {
    watched: Vec<Watched>,
    start: Option<(OwnCpu, Vec<Sample>)>,
    end: Option<(CpuUsage, Vec<ProcessUsage>)>,
}

impl WindowUsage {
    /// A window over `watched` (and the bench itself), not started yet.
    pub fn new(watched: Vec<Watched>) -> Self {
        Self {
            watched,
            start: None,
            end: None,
        }
    }

    /// Whether the start was sampled.
    pub fn started(&self) -> bool {
        self.start.is_some()
    }

    /// Whether the end was sampled.
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// Samples the start of the window.
    pub fn start(&mut self) -> Result<()> {
        self.start = Some((OwnCpu::start(), sample_all(&self.watched)?));
        Ok(())
    }

    /// Samples the end of the window; it must have started.
    pub fn end(&mut self) -> Result<()> {
        let (cpu, before) = self
            .start
            .as_ref()
            .context("the window ends before it started")?;
        let after = sample_all(&self.watched)?;
        self.end = Some((cpu.usage(), usage_between(&self.watched, before, &after)));
        Ok(())
    }

    /// The bench's CPU and every watched process's use over the window, once it has ended.
    pub fn into_usage(self) -> Option<(CpuUsage, Vec<ProcessUsage>)> {
        self.end
    }
}

/// This thread's kernel id, from `/proc/thread-self` (a link to `PID/task/TID`).
pub fn current_tid() -> Result<u32> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    link.file_name()
        .and_then(|tid| tid.to_str()?.parse().ok())
        .with_context(|| format!("no thread id in {}", link.display()))
}

/// Samples every watched process (failing on the first that cannot be read).
pub fn sample_all(watched: &[Watched]) -> Result<Vec<Sample>> {
    watched.iter().map(Watched::sample).collect()
}

/// Usage of each watched process between two `sample_all` readings.
pub fn usage_between(
    watched: &[Watched],
    before: &[Sample],
    after: &[Sample],
) -> Vec<ProcessUsage> {
    watched
        .iter()
        .zip(before)
        .zip(after)
        .map(|((w, b), a)| ProcessUsage::between(w, b, a))
        .collect()
}

/// utime and stime (fields 14 and 15) from a `/proc/PID/stat` line. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted after its closing parenthesis.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts at field 3 (state): utime is the 12th field from there.
    let mut fields = after_comm.split_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// `VmRSS:   1234 kB` from `/proc/PID/status`.
fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's open-file limit to its hard limit (each connection
/// is a file); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_survive_odd_command_names() {
        let stat = "4242 (chat gw (x)) S 1 4242 4242 0 -1 4194560 1519 0 0 0 731 42 0 0 20 0 3 0 123 456 789";
        assert_eq!(parse_stat_times(stat), Some((731, 42)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tchat-gateway\nVmPeak:\t  9000 kB\nVmRSS:\t   5120 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(5120));
        assert_eq!(parse_status_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn watched_specs_parse() {
        assert_eq!(
            parse_watched("gateway=123").unwrap(),
            Watched {
                name: "gateway".into(),
                pid: 123,
                tid: None,
            }
        );
        assert_eq!(parse_watched("77").unwrap().name, "pid-77");
        assert!(parse_watched("gw=abc").is_err());
        assert!(parse_watched("=5").is_err());
    }

    #[test]
    fn this_process_can_be_watched() {
        let me = Watched {
            name: "me".into(),
            pid: std::process::id(),
            tid: None,
        };
        let before = me.sample().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = me.sample().unwrap();
        let usage = ProcessUsage::between(&me, &before, &after);
        assert!(usage.rss_after_kib > 0);
        assert!(usage.cpu.user_secs >= 0.0 && usage.cpu.wall_secs > 0.0);
        let (user, _) = own_cpu();
        assert!(user > 0.0);
    }

    #[test]
    fn a_thread_is_watched_alone() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let idle_thread = std::thread::spawn(move || {
            tid_tx.send(current_tid().unwrap()).unwrap();
            let _ = stopped.recv();
        });
        let idle = Watched::own_thread("idle", tid_rx.recv().unwrap());
        let busy = Watched::own_thread("busy", current_tid().unwrap());
        let before = sample_all(&[idle.clone(), busy.clone()]).unwrap();
        let spin_until = Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let after = sample_all(&[idle.clone(), busy.clone()]).unwrap();
        drop(stop);
        idle_thread.join().unwrap();
        let usage = usage_between(&[idle, busy], &before, &after);
        let cpu = |u: &ProcessUsage| u.cpu.user_secs + u.cpu.system_secs;
        assert!(cpu(&usage[1]) >= 0.1, "the spinning thread: {:?}", usage[1]);
        assert!(cpu(&usage[0]) < 0.05, "the idle thread: {:?}", usage[0]);
    }
}
