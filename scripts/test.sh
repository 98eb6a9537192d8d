#!/usr/bin/env bash
# Runs every test: formatting, lints, Rust unit and integration tests (real
# redis-server, real gateway and chat-lb binaries), the web client's unit
# tests, the browser test in headless Chromium, and the benchmark smoke runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
started=$SECONDS

need_tools
need_pkg redis-server redis-server
need_pkg /usr/bin/chromium chromium
command -v curl >/dev/null || need_pkg curl curl

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "building (debug)"
cargo build --workspace --all-targets --locked

say "rust tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
fi

# The fuzz crate (its own workspace) without libFuzzer or sanitizers: every
# seed and kept regression, then a few seconds of random mutations per
# target. Coverage-guided fuzzing is scripts/fuzz.sh (cargo-fuzz, ASan).
say "fuzz targets: seeds, regressions, ${CHAT_FUZZ_SMOKE_SECS:-3} s of mutations each"
fuzz_started=$SECONDS
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo test --manifest-path fuzz/Cargo.toml --no-default-features --locked \
  --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}"
say "fuzz targets took $((SECONDS - fuzz_started)) s"

say "web client: typecheck, unit tests, build"
web_deps
(cd web && npm run --silent typecheck && npm test --silent && npm run --silent build)

say "browser test (headless chromium)"
(cd web && CHAT_GATEWAY_BIN="$ROOT/target/debug/chat-gateway" npm run --silent test:browser)

say "all tests passed in $((SECONDS - started)) s"
