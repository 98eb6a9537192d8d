//! Replays every seed and every kept regression of both fuzz targets
//! through the same harness the fuzzers use (without libFuzzer or
//! sanitizers), then runs each target on randomly mutated inputs for a few
//! seconds: `cargo test --no-default-features` in this directory, as
//! scripts/test.sh does.
//!
//! A crash found by `scripts/fuzz.sh` is fixed and its input kept in
//! `regressions/<target>/` (named after what it found), so it runs here
//! from then on. Session inputs can depend on timing (two clients, one
//! gateway), so each is replayed several times.
//!
//! `CHAT_FUZZ_SMOKE_SECS` (default 3) sets the mutation time per target,
//! `CHAT_FUZZ_SMOKE_SEED` its random seed (default: from the clock,
//! printed).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Replays of each session input (a race that a fuzzer hit once shows up
/// in most runs of this many).
const SESSION_REPEATS: usize = 20;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                let bytes = std::fs::read(&path).expect("read input");
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

fn replay(target: &str, check: fn(&[u8]), repeats: usize) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no inputs for {target}");
    for (path, bytes) in &inputs {
        eprintln!("replaying {} x{repeats}", path.display());
        for _ in 0..repeats {
            check(bytes);
        }
    }
}

#[test]
fn frame_decoder_inputs() {
    replay("frame_decoder", chat_fuzz::frames::check, 1);
}

#[test]
fn session_inputs() {
    replay("session", chat_fuzz::session::run, SESSION_REPEATS);
}

fn smoke(target: &str, check: fn(&[u8])) {
    let secs: f64 = std::env::var("CHAT_FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let seed = std::env::var("CHAT_FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let pool: Vec<Vec<u8>> = inputs(target).into_iter().map(|(_, b)| b).collect();
    let runs = chat_fuzz::smoke::run(target, &pool, check, Duration::from_secs_f64(secs), seed);
    eprintln!("{target}: {runs} mutated inputs in {secs} s (CHAT_FUZZ_SMOKE_SEED={seed})");
}

#[test]
fn frame_decoder_mutated() {
    smoke("frame_decoder", chat_fuzz::frames::check);
}

#[test]
fn session_mutated() {
    smoke("session", chat_fuzz::session::run);
}

#[test]
fn seed_files_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in [
        ("frame_decoder", chat_fuzz::seeds::frame_decoder()),
        ("session", chat_fuzz::seeds::session()),
    ] {
        for (name, bytes) in seeds {
            let path = root.join(target).join(name);
            assert_eq!(
                std::fs::read(&path).ok().as_deref(),
                Some(bytes.as_slice()),
                "{} is stale: cargo run --no-default-features --example write_seeds",
                path.display()
            );
        }
    }
}

/// The session input format reads back what `encode` wrote.
#[test]
fn session_input_format_round_trips() {
    use chat_fuzz::session::{encode, parse, Op};
    let ops = vec![
        (0, Op::Hello(3)),
        (1, Op::Binary(vec![1, 2, 3])),
        (1, Op::Text(b"t".to_vec())),
        (0, Op::Ping(Vec::new())),
        (0, Op::Close(4000)),
        (1, Op::Resume(9)),
        (0, Op::Sync),
        (1, Op::Oversized),
    ];
    assert_eq!(parse(&encode(&ops)), ops);
}
