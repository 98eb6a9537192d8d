#!/usr/bin/env bash
# Runs the standard benchmark scenarios (issue 6) against fresh local
# processes and writes the reports under bench-results/ (git-ignored):
#
#   1. one gateway (embedded bridge), 1 room x 1,000 members, 1 publisher as
#      fast as acks allow, 64-byte text            target >= 1,000,000 deliveries/s, 0 loss
#   2. 3 gateways + Redis + chat-lb, 10 rooms x 100 members, 1 publisher per room
#      (a) as fast as acks allow                   target >= 1,000,000 deliveries/s, 0 loss
#      (b) paced at 100,000 deliveries/s           target p99 <= 5 ms
#   3. idle connections: (a) 15,000 on one gateway target <= 8 KiB RSS each
#      (b) through chat-lb                         target <= 2 KiB chat-lb RSS each
#   4. chat-lb alone vs direct vs HAProxy (mode tcp), 64-byte ping-pongs on
#      the same echo backends                      target added p99 <= 50 µs, throughput >= HAProxy
#   5. failover (issue 16): 9,000 members chatting through chat-lb on 3
#      gateways + Redis, one gateway (3,000 members) SIGKILLed: (a) it stays
#      down, (b) it is restarted at once with the same id
#                                                  target loss -> back in all rooms p99 <= 1 s,
#                                                  max <= 2 s, 0 lost, 0 duplicates, 0 presence flicker
#   6. one Redis vs a Redis Cluster (issue 12): the 3 gateways + chat-lb of 2
#      on one Redis and on a local Redis Cluster of 3 primaries + 3 replicas
#      (sharded pub/sub), 200 rooms x 5 members, 1 publisher per room, 64-byte
#      text: many small rooms, so that Redis carries the load rather than the
#      fan-out, spread over every shard. Both setups run side by side, their
#      measurements interleaved; CPU of every Redis process, gateway and chat-lb
#      (a) as fast as acks allow                   deliveries/s, one Redis vs the cluster
#      (b) paced at 10,000 deliveries/s            p99 of both
#                                                  target: with 3 primaries no Redis process
#                                                  is busier than the gateways
#
# Two yardsticks run next to them, to read the figures against what this
# machine can do at all: `chat-bench floor` (2b's deliveries with nothing but
# sockets and one relay hop: no protocol, no Redis, no runtime), and
# `chat-bench relay` (the least a balancer can do) as a fourth target in 4.
#
# The comparisons that sit near their targets (2a, all of 4, and 6a) run 3
# rounds (4's interleaved: direct, chat-lb, HAProxy, relay, then again; 6a's:
# one Redis, the cluster, then again) and the summary shows the median and
# the range: single runs on this shared 2-core machine vary by +-15 %, and a
# p99 of tens of microseconds by more.
#
# This script builds the binaries and calls `chat-bench suite`, which starts
# every process (redis-server, the Redis Cluster's nodes created with
# redis-cli --cluster create, gateways, chat-lb, haproxy, echo servers),
# stops each by pid when its scenario ends, and writes summary.md from the
# typed reports (crates/chat-bench/src/suite/).
#
# Usage: scripts/bench.sh [--quick] [--only 1,2,3,4,5,6] [--profile release|debug]
#                         [--perf] [--no-build] [--bin-dir DIR] [--out DIR]
#   --quick    a few seconds per scenario, small sizes (a smoke run; debug
#              binaries unless --profile is given)
#   --only     run only these scenarios
#   --perf     also profile the gateway under scenario 1 with `perf record`
#              (flat profile of the top functions, next to the reports)
#   --no-build use the binaries already in target/
#   --bin-dir  take chat-gateway, chat-lb and chat-bench from DIR (no build),
#              e.g. a copy that a concurrent build cannot replace mid-run
#   --out      report folder (default bench-results/<date-time>; bench-results/latest
#              points at the last one)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

QUICK=0
ONLY="1,2,3,4,5,6"
PROFILE=""
PERF=0
BUILD=1
BIN_DIR=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    --profile) PROFILE="$2"; shift ;;
    --perf) PERF=1 ;;
    --no-build) BUILD=0 ;;
    --bin-dir) BIN_DIR="$2"; BUILD=0; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
if [ -z "$PROFILE" ]; then
  if [ "$QUICK" = 1 ]; then PROFILE=debug; else PROFILE=release; fi
fi
case "$PROFILE" in release|debug) ;; *) die "--profile must be release or debug" ;; esac
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

need_pkg redis-server redis-server
if wants 4; then need_pkg haproxy haproxy; fi
if wants 6; then need_pkg redis-cli redis-tools; fi
if [ "$PERF" = 1 ]; then need_pkg perf linux-perf; fi

if [ "$BUILD" = 1 ]; then
  say "building chat-gateway, chat-lb and chat-bench ($PROFILE)"
  if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p chat-gateway -p chat-lb -p chat-bench
  else
    cargo build --locked -p chat-gateway -p chat-lb -p chat-bench
  fi
fi
BIN="${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE}"
BIN="$(cd "$BIN" && pwd)" || die "no folder $BIN"
for b in chat-gateway chat-lb chat-bench; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (run without --no-build)"
done

# Every connection is a file; this machine allows 20,000 per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "$OUT" ]; then
  OUT="$ROOT/bench-results/$(date +%Y%m%d-%H%M%S)$([ "$QUICK" = 1 ] && echo -quick || true)"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [[ "$OUT" == "$ROOT/bench-results/"* ]]; then
  ln -sfn "$OUT" "$ROOT/bench-results/latest"
fi

args=(suite --only "$ONLY" --bin-dir "$BIN" --out "$OUT")
if [ "$QUICK" = 1 ]; then args+=(--quick); fi
if [ "$PERF" = 1 ]; then args+=(--perf); fi
exec "$BIN/chat-bench" "${args[@]}"
