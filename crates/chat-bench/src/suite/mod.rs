//! `chat-bench suite`: the standard scenarios (issue 6; see `scripts/bench.sh`, which builds
//! the binaries and calls this) on fresh local processes, each run a child `chat-bench` whose
//! table, JSON report and plot land in the output folder, then a summary table read back
//! from those reports (`summary.rs`).
//!
//! `machine.rs` describes the machine, `procs.rs` starts and stops the servers,
//! `scenarios.rs` holds what each scenario starts and runs (scenario 6, one Redis vs a
//! Redis Cluster, in `scenarios/redis_cluster.rs`).

mod machine;
mod procs;
mod scenarios;
mod summary;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::SuiteArgs;
use anyhow::{bail, Context as _, Result};

/// The ping-pong targets of scenario 4, in the order they run and are shown.
const PINGPONG_TARGETS: [&str; 4] = ["direct", "chat-lb", "haproxy", "relay"];
/// Source addresses for the clients (more than one for many connections).
const LOCAL_IPS: &str = "127.0.0.1-127.0.0.40";
/// Scenario 6's two setups as its report names spell them (`s6a-one-max`,
/// `s6b-cluster-paced`): one Redis, then the Redis Cluster.
const S6_SETUPS: [&str; 2] = ["one", "cluster"];

/// The sizes of a full or a quick run.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    pub quick: bool,
    pub duration: &'static str,
    pub warmup: &'static str,
    pub s1_members: usize,
    pub s2_rooms: usize,
    pub s2_members: usize,
    /// Messages per second per room in 2b (times rooms and members: deliveries/s).
    pub s2b_rate: usize,
    pub s3a_n: usize,
    pub s3b_n: usize,
    pub s3_rate: usize,
    pub s3_hold: &'static str,
    pub s4_duration: &'static str,
    pub s4_conns: usize,
    pub s5_n: usize,
    pub s5_duration: &'static str,
    /// Scenario 6: many small rooms, so that Redis carries the load rather than the fan-out.
    pub s6_rooms: usize,
    pub s6_members: usize,
    /// Messages per second per room in 6b (times rooms and members: deliveries/s).
    pub s6_rate: usize,
    /// Runs of the comparisons that sit near their targets (2a, all of 4, 6a): single runs on
    /// a shared 2-core machine vary by +-15 %, a p99 of tens of microseconds by more.
    pub rounds: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                duration: "3s",
                warmup: "1s",
                s1_members: 200,
                s2_rooms: 4,
                s2_members: 25,
                s2b_rate: 100, // 4 x 25 x 100 = 10,000 deliveries/s
                s3a_n: 500,
                s3b_n: 300,
                s3_rate: 500,
                s3_hold: "2s",
                s4_duration: "2s",
                s4_conns: 8,
                s5_n: 300,
                s5_duration: "3s",
                s6_rooms: 30,
                s6_members: 5,
                s6_rate: 20, // 30 x 5 x 20 = 3,000 deliveries/s
                rounds: 1,
            }
        } else {
            Self {
                quick,
                duration: "20s",
                warmup: "3s",
                s1_members: 1000,
                s2_rooms: 10,
                s2_members: 100,
                s2b_rate: 100, // 10 x 100 x 100 = 100,000 deliveries/s
                // chat-lb holds two sockets per proxied connection and a process may open
                // 20,000 files here, so 9,000 is as many as it can proxy.
                s3a_n: 15_000,
                s3b_n: 9_000,
                s3_rate: 2_000,
                s3_hold: "10s",
                s4_duration: "10s",
                s4_conns: 64,
                // 9,000 again for chat-lb's two sockets per member; a third of them on the
                // gateway that dies. 300 rooms of 60 (each member in 2), 1 message/s per room.
                s5_n: 9_000,
                s5_duration: "10s",
                // 1,000 members (chat-lb holds 2,000 sockets); 200 rooms put about 67 on
                // each of the cluster's 3 primaries.
                s6_rooms: 200,
                s6_members: 5,
                // 200 x 5 x 10 = 10,000 deliveries/s, 2,000 messages/s: at 50,000 the 2
                // cores were 90 % busy and the p99 measured the queues, not Redis.
                s6_rate: 10,
                rounds: 3,
            }
        }
    }

    /// The floor's rates per room: 2b's, and a tenth of it.
    pub(crate) fn floor_rates(&self) -> [usize; 2] {
        [self.s2b_rate, self.s2b_rate / 10]
    }
}

/// The first round's reports keep the plain name; later rounds get `-2`, `-3`.
pub(crate) fn round_name(name: &str, round: usize) -> String {
    if round == 1 {
        name.to_owned()
    } else {
        format!("{name}-{round}")
    }
}

/// Where a suite writes and what it runs with.
pub(crate) struct Suite {
    pub sizes: Sizes,
    /// The report folder; `logs/` under it holds every process's output.
    pub out: PathBuf,
    pub logs: PathBuf,
    /// This chat-bench, run once per measurement.
    pub bench: PathBuf,
    pub gateway: PathBuf,
    pub lb: PathBuf,
    pub perf: bool,
}

impl Suite {
    /// Runs `chat-bench ARGS` as the measurement `name`: its table in `NAME.txt` (and on
    /// stdout), its JSON report and plot next to it. A failed run is noted in `failed.txt`
    /// and the suite goes on.
    pub(crate) fn bench(&self, name: &str, args: &[String]) -> Result<()> {
        println!("==> {name}: chat-bench {}", args.join(" "));
        let txt = self.out.join(format!("{name}.txt"));
        let file =
            std::fs::File::create(&txt).with_context(|| format!("creating {}", txt.display()))?;
        let status = Command::new(&self.bench)
            .args(args)
            .arg("--json-file")
            .arg(self.out.join(format!("{name}.json")))
            .arg("--plot")
            .arg(self.out.join(format!("{name}.svg")))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .context("running chat-bench")?;
        print!("{}", std::fs::read_to_string(&txt).unwrap_or_default());
        if !status.success() {
            let mut failed = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.out.join("failed.txt"))?;
            writeln!(failed, "{name} (see {name}.txt)")?;
        }
        Ok(())
    }
}

/// Runs the scenarios asked for, then writes `summary.md` (and prints it).
pub(crate) async fn run(args: SuiteArgs) -> Result<()> {
    if let Some(bad) = args.only.iter().find(|s| !(1..=6).contains(*s)) {
        return Err(chat_measure::args::invalid(format!(
            "--only: there is no scenario {bad}"
        )));
    }
    let suite = prepare(&args)?;
    let machine = machine::Machine::before();
    // The scenarios start and wait for processes: blocking work, off the runtime's threads.
    let wanted = args.only.clone();
    let suite = tokio::task::spawn_blocking(move || -> Result<Suite> {
        scenarios::run_all(&suite, &wanted)?;
        Ok(suite)
    })
    .await
    .context("the suite panicked")??;
    let summary = render(&suite, &machine);
    std::fs::write(suite.out.join("summary.md"), &summary)?;
    println!("==> summary\n{summary}");
    Ok(())
}

/// Resolves the binaries and creates the report folder.
fn prepare(args: &SuiteArgs) -> Result<Suite> {
    let bench = std::env::current_exe().context("locating chat-bench")?;
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => bench.parent().map(Path::to_owned).unwrap_or_default(),
    };
    let (gateway, lb) = (bin_dir.join("chat-gateway"), bin_dir.join("chat-lb"));
    for bin in [&gateway, &lb] {
        if !bin.is_file() {
            bail!("{} is missing (build it, or give --bin-dir)", bin.display());
        }
    }
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let out = args.out.canonicalize()?;
    Ok(Suite {
        sizes: Sizes::new(args.quick),
        logs: out.join("logs"),
        out,
        bench,
        gateway,
        lb,
        perf: args.perf,
    })
}

/// The summary: the machine, one table row per figure, the runs that failed.
fn render(suite: &Suite, machine: &machine::Machine) -> String {
    let mut text = format!(
        "# chat-bench results {}\n\n{}\n| scenario | measured | target |\n|---|---|---|\n",
        machine::utc_minute(),
        machine.describe(&suite.gateway, suite.sizes.quick)
    );
    for row in summary::rows(&suite.out, &suite.sizes) {
        text.push_str(&row);
        text.push('\n');
    }
    if let Ok(failed) = std::fs::read_to_string(suite.out.join("failed.txt")) {
        let failed: Vec<&str> = failed.lines().collect();
        text.push_str(&format!("\nRuns that failed: {}\n", failed.join(",")));
    }
    text.push_str(&format!(
        "\nReports (tables, JSON, SVG plots) and logs: {}\n",
        suite.out.display()
    ));
    text
}
