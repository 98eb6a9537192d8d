//! A few seconds of blind mutation for `scripts/test.sh`: seeds and
//! regressions mutated at random (no coverage feedback, no sanitizers) and
//! run through a target's harness. It needs no cargo-fuzz and no second,
//! instrumented build of the gateway; the coverage-guided runs are
//! `scripts/fuzz.sh`'s. A crashing input is written to
//! `artifacts/<target>/smoke-<hash>` before the panic goes on.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that often matter: protobuf tags and lengths, limits, UTF-8 lead bytes.
const INTERESTING: [u8; 12] = [
    0, 1, 0x0a, 0x12, 0x1a, 0x22, 0x3a, 0x7f, 0x80, 0xc3, 0xe2, 0xff,
];

fn mutate(input: &mut Vec<u8>, pool: &[Vec<u8>], rng: &mut Rng) {
    for _ in 0..1 + rng.below(6) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = input[at..at + n].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, chunk);
            }
            _ => {
                // Splice in part of another input.
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(256));
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..from + n].iter().copied());
                }
            }
        }
    }
}

/// Runs mutated `pool` inputs through `check` for `time`; returns how many ran.
pub fn run(target: &str, pool: &[Vec<u8>], check: fn(&[u8]), time: Duration, seed: u64) -> u64 {
    assert!(!pool.is_empty(), "nothing to mutate for {target}");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut runs = 0;
    while runs == 0 || started.elapsed() < time {
        let mut input = pool[rng.below(pool.len())].clone();
        mutate(&mut input, pool, &mut rng);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("artifacts")
                .join(target);
            let path = dir.join(format!("smoke-{:016x}", fnv(&input)));
            let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &input));
            eprintln!(
                "{target}: a mutated input (seed {seed}, run {runs}) failed; {}",
                match saved {
                    Ok(()) => format!("written to {}", path.display()),
                    Err(e) => format!("not written ({e}): {input:?}"),
                }
            );
            resume_unwind(panic);
        }
        runs += 1;
    }
    runs
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}
