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

say "web client: typecheck, unit tests, build"
web_deps
(cd web && npm run --silent typecheck && npm test --silent && npm run --silent build)

say "browser test (headless chromium)"
(cd web && CHAT_GATEWAY_BIN="$ROOT/target/debug/chat-gateway" npm run --silent test:browser)

say "all tests passed in $((SECONDS - started)) s"
