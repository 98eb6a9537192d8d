//! The suite's process harness: the servers a scenario needs (redis-server, gateways,
//! chat-lb, haproxy, echo servers, the relay), each started from its binary with its output
//! in a log file, found by the address it prints, and stopped by pid when the scenario ends.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a server gets to start (print its address, or accept connections).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often logs and ports are polled while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Processes started for one scenario, stopped (last first) by [`Procs::stop_all`] or on drop.
pub(super) struct Procs {
    logs: PathBuf,
    children: Vec<Child>,
}

impl Procs {
    /// Processes whose output goes to `logs/NAME.log`.
    pub(super) fn new(logs: &Path) -> Self {
        Self {
            logs: logs.to_owned(),
            children: Vec::new(),
        }
    }

    /// The log file of the process started as `name`.
    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `command` in the background, stdout and stderr in its log; returns its pid.
    pub(super) fn start(&mut self, name: &str, mut command: Command) -> Result<u32> {
        let log = File::create(self.log(name))
            .with_context(|| format!("creating {}", self.log(name).display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts `command` and waits for a line of its log containing `marker`; returns what
    /// follows the marker on that line, up to `end` (or the end of the line).
    pub(super) fn start_and_read(
        &mut self,
        name: &str,
        command: Command,
        marker: &str,
        end: char,
    ) -> Result<(u32, String)> {
        let pid = self.start(name, command)?;
        let log = self.log(name);
        let found = wait_for_line(&log, marker)
            .with_context(|| format!("{name} did not start: see {}", log.display()))?;
        let rest = &found[found.find(marker).unwrap_or(0) + marker.len()..];
        let value = rest.split(end).next().unwrap_or(rest).trim().to_owned();
        Ok((pid, value))
    }

    /// SIGTERM to every process, last started first; SIGKILL for any still there after
    /// [`STOP_TIMEOUT`].
    pub(super) fn stop_all(&mut self) {
        while let Some(mut child) = self.children.pop() {
            stop(&mut child);
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn stop(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to [`START_TIMEOUT`] for a line of `log` that contains `marker`.
fn wait_for_line(log: &Path, marker: &str) -> Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(marker)) {
            return Ok(line.to_owned());
        }
        if Instant::now() >= deadline {
            bail!("no {marker:?} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Waits up to [`START_TIMEOUT`] until something accepts connections on `addr`.
pub(super) fn wait_for_port(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, POLL).is_err() {
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {START_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that nothing listens on now, below the kernel's ephemeral range,
/// so that no outgoing connection holds it (scenario 3 leaves thousands of them behind).
pub(super) fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&low| low > 11_000)
        .unwrap_or(32_768);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    loop {
        // xorshift: any spread will do, this only has to differ between calls.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 10_000 + (seed % u64::from(low - 10_000)) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_err() {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_a_process_prints_and_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut procs = Procs::new(dir.path());
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'starting'; echo 'x listening on 127.0.0.1:5 now'; exec sleep 60",
        ]);
        let (pid, addr) = procs
            .start_and_read("sleeper", command, "listening on ", ' ')
            .unwrap();
        assert_eq!(addr, "127.0.0.1:5");
        let started = Instant::now();
        procs.stop_all();
        assert!(started.elapsed() < STOP_TIMEOUT, "SIGTERM was enough");
        assert!(kill(Pid::from_raw(pid as i32), None).is_err(), "gone");
    }

    #[test]
    fn free_ports_are_free_and_below_the_ephemeral_range() {
        let port = free_port();
        assert!(port >= 10_000);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
