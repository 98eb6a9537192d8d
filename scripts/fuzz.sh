#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer, AddressSanitizer):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# runs each target (default: frame_decoder and session) for SECONDS (default
# 300). The corpus grows in fuzz/corpus/TARGET (not committed), seeded from
# fuzz/seeds/TARGET and fuzz/regressions/TARGET. A crash stops the run and
# leaves its input in fuzz/artifacts/TARGET/; fix it, then keep the input as
# fuzz/regressions/TARGET/<what-it-found> so `cargo test` replays it (see
# the README's "Fuzzing").
#
# Only a stable toolchain is needed: cargo-fuzz passes nightly -Z flags,
# which RUSTC_BOOTSTRAP=1 lets stable rustc accept. cargo-fuzz is installed
# with `cargo install` when missing. The instrumented build has its own
# target directory (fuzz/target unless CARGO_TARGET_DIR is set); the first
# one compiles the gateway's dependencies again (about 10 minutes on 2 cores).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

secs="${1:-300}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decoder session)
[[ "$secs" =~ ^[0-9]+$ ]] || die "usage: scripts/fuzz.sh [SECONDS] [TARGET...]"

command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (https://rustup.rs)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz (cargo install)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd "$ROOT/fuzz"
say "building the fuzz targets (AddressSanitizer)"
cargo fuzz build

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "regressions/$target"
  # libFuzzer flags: -timeout is per input (the session harness has its own
  # 20 s deadlines and a 120 s bound per input, so only a real hang reaches
  # it). Leak detection is off for the session target: the gateway's state
  # (rooms, history, names) lives, reachable, across inputs.
  extra=()
  [ "$target" = session ] && extra=(-detect_leaks=0)
  say "fuzzing $target for ${secs} s"
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
    -max_total_time="$secs" -timeout=180 -rss_limit_mb=4096 -print_final_stats=1 "${extra[@]}"
done
say "no crash in ${targets[*]} (${secs} s each)"
