#!/usr/bin/env bash
# Stops exactly the processes that scripts/up.sh started (by pid file).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
RUN="$ROOT/.run"
shopt -s nullglob
pids=()
# Redis last: redis.pid (one Redis), redis-PORT.pid (the nodes of --redis-cluster).
for f in "$RUN"/lb.pid "$RUN"/gateway*.pid "$RUN"/redis.pid "$RUN"/redis-*.pid; do
  [ -f "$f" ] || continue
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
  rm -f "$f"
done
for pid in "${pids[@]}"; do
  for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
done
say "stopped ${#pids[@]} process(es)"
