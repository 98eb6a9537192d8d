//! What the summary says about the machine the suite ran on: cores, CPU, memory, kernel,
//! open-file limit, load before and after, the commit and the binaries.

use std::path::Path;
use std::process::Command;

/// What is known before the runs begin.
pub(super) struct Machine {
    load_before: String,
}

impl Machine {
    pub(super) fn before() -> Self {
        Self {
            load_before: load_average(),
        }
    }

    /// The summary's bullet list; `gateway` is one of the binaries measured.
    pub(super) fn describe(&self, gateway: &Path, quick: bool) -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown CPU", |(_, m)| m.trim());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / (1024 * 1024));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let open_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| soft);
        let dir = gateway.parent().unwrap_or(gateway);
        let profile = ["release", "debug"]
            .into_iter()
            .find(|profile| dir.ends_with(profile))
            .unwrap_or("given");
        let commit =
            output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = Command::new("git")
            .args(["diff", "--quiet"])
            .status()
            .is_ok_and(|s| s.code() == Some(1));
        format!(
            "- machine: {cores} cores, {model}, {gib} GiB\n\
             - kernel: {}; open files per process: {open_files}\n\
             - load average when the runs began: {}; at the end: {} (other work on the machine competes for the same 2 cores)\n\
             - commit: {commit}{}\n\
             - binaries: {} ({profile}); mode: {}\n",
            kernel.trim(),
            self.load_before,
            load_average(),
            if dirty { " (with uncommitted changes)" } else { "" },
            dir.display(),
            if quick { "quick" } else { "full" },
        )
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Now, as `2026-12-04T20:35Z`.
pub(super) fn utc_minute() -> String {
    output("date", &["-u", "+%Y-%m-%dT%H:%MZ"]).unwrap_or_default()
}

/// The trimmed stdout of a command that succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
