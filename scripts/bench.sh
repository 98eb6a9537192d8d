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
#
# Two yardsticks run next to them, to read the figures against what this
# machine can do at all: `chat-bench floor` (2b's deliveries with nothing but
# sockets and one relay hop: no protocol, no Redis, no runtime), and
# `chat-bench relay` (the least a balancer can do) as a fourth target in 4.
#
# The comparisons that sit near their targets (2a, and all of 4) run 3
# rounds (4's interleaved: direct, chat-lb, HAProxy, relay, then again) and the
# summary shows the median and the range: single runs on this shared 2-core
# machine vary by +-15 %, and a p99 of tens of microseconds by more.
#
# Every process it starts (redis-server, gateways, chat-lb, haproxy, echo
# servers) is stopped on exit, by pid.
#
# Usage: scripts/bench.sh [--quick] [--only 1,2,3,4,5] [--profile release|debug]
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
ONLY="1,2,3,4,5"
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
# The first round's reports keep the plain name; later rounds get -2, -3.
round_suffix() { [ "$1" = 1 ] || echo "-$1"; }

# ------------------------------------------------------------------ sizes
if [ "$QUICK" = 1 ]; then
  DUR=3s; WARM=1s
  S1_MEMBERS=200
  S2_ROOMS=4; S2_MEMBERS=25; S2B_RATE=100      # 4 x 25 x 100 = 10,000 deliveries/s
  S3A_N=500; S3B_N=300; S3_RATE=500; S3_HOLD=2s
  S4_DUR=2s; S4_CONNS=8
  S5_N=300; S5_DUR=3s
  ROUNDS=1
else
  DUR=20s; WARM=3s
  S1_MEMBERS=1000
  S2_ROOMS=10; S2_MEMBERS=100; S2B_RATE=100    # 10 x 100 x 100 = 100,000 deliveries/s
  # chat-lb holds two sockets per proxied connection and a process may open
  # 20,000 files here, so 9,000 is as many as it can proxy.
  S3A_N=15000; S3B_N=9000; S3_RATE=2000; S3_HOLD=10s
  S4_DUR=10s; S4_CONNS=64
  # 9,000 again for chat-lb's two sockets per member; a third of them on the
  # gateway that dies. 300 rooms of 60 (each member in 2), 1 message/s per room.
  S5_N=9000; S5_DUR=10s
  ROUNDS=3
fi
LOCAL_IPS=127.0.0.1-127.0.0.40

# ------------------------------------------------------------------ tools
need_pkg redis-server redis-server
if wants 4; then need_pkg haproxy haproxy; fi
need_pkg jq jq
if [ "$PERF" = 1 ]; then need_pkg perf linux-perf; fi

if [ "$BUILD" = 1 ]; then
  say "building chat-gateway, chat-lb and chat-bench ($PROFILE)"
  if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p chat-gateway -p chat-lb -p chat-bench
  else
    cargo build --locked -p chat-gateway -p chat-lb -p chat-bench
  fi
fi
BIN="${BIN_DIR:-$ROOT/target/$PROFILE}"
BIN="$(cd "$BIN" && pwd)" || die "no folder $BIN"
for b in chat-gateway chat-lb chat-bench; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (run without --no-build)"
done

# Every connection is a file; this machine allows 20,000 per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "$OUT" ]; then
  OUT="$ROOT/bench-results/$(date +%Y%m%d-%H%M%S)$([ "$QUICK" = 1 ] && echo -quick || true)"
fi
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
if [[ "$OUT" == "$ROOT/bench-results/"* ]]; then
  ln -sfn "$OUT" "$ROOT/bench-results/latest"
fi
LOGS="$OUT/logs"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ processes
PIDS=()

stop_pid() { # stop_pid PID: SIGTERM, up to 10 s, then SIGKILL
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_all() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  PIDS=()
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

start() { # start NAME COMMAND...: in the background, log in $LOGS/NAME.log; sets STARTED_PID
  local name="$1"; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

wait_match() { # wait_match FILE REGEX [SECONDS]: prints the first match of REGEX (grep -o)
  local file="$1" re="$2" secs="${3:-30}" i m
  for ((i = 0; i < secs * 10; i++)); do
    if m="$(grep -o -m1 -E "$re" "$file" 2>/dev/null)"; then echo "$m"; return 0; fi
    sleep 0.1
  done
  return 1
}

free_port() { # a TCP port on 127.0.0.1 nothing listens on now
  # Below the kernel's ephemeral range, so no outgoing connection holds it
  # (scenario 3 leaves thousands of them behind).
  local p low
  low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
  [ "$low" -gt 11000 ] 2>/dev/null || low=32768
  for ((;;)); do
    p=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

GATEWAY_ARGS=(--listen 127.0.0.1:0 --web-root "$OUT" --messages-per-second 1000000 --message-burst 1000000)
if "$BIN/chat-gateway" --help | grep -q -- '--admin-listen'; then
  GATEWAY_ARGS+=(--admin-listen 127.0.0.1:0)
fi

start_gateway() { # start_gateway NAME [ARGS...]: sets GW_ADDR and GW_PID
  local name="$1"; shift
  start "$name" "$BIN/chat-gateway" "${GATEWAY_ARGS[@]}" --gateway-id "$name" "$@"
  GW_PID=$STARTED_PID
  GW_ADDR="$(wait_match "$LOGS/$name.log" 'listening on http://[0-9.:]+' 30 | sed 's|.*http://||')" \
    || die "$name did not start: see $LOGS/$name.log"
}

# Extra chat-lb flags (the cluster scenarios send PROXY v2 so that the
# gateways' per-address limits see the clients, not chat-lb).
LB_EXTRA=()

start_lb() { # start_lb NAME BACKEND...: chat-lb; sets LB_ADDR and LB_PID
  local name="$1"; shift
  local args=() b
  for b in "$@"; do args+=(--backend "$b"); done
  start "$name" "$BIN/chat-lb" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json "${LB_EXTRA[@]}" "${args[@]}"
  LB_PID=$STARTED_PID
  LB_ADDR="$(wait_match "$LOGS/$name.log" '"proxy":"[0-9.:]+"' 30 | sed 's/"proxy":"//; s/"$//')" \
    || die "$name did not start: see $LOGS/$name.log"
}

start_redis() { # sets REDIS_URL and REDIS_PID
  local port; port="$(free_port)"
  mkdir -p "$OUT/redis"
  # Persistence as scripts/up.sh runs it: AOF, fsync every second.
  start redis redis-server --port "$port" --bind 127.0.0.1 --dir "$OUT/redis" \
    --appendonly yes --appendfsync everysec --save ""
  REDIS_PID=$STARTED_PID
  local i
  for ((i = 0; i < 100; i++)); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 || die "redis did not start: see $LOGS/redis.log"
  REDIS_URL="redis://127.0.0.1:$port"
}

start_cluster() { # start_cluster PREFIX: Redis, 3 gateways on it, chat-lb in front (PROXY v2);
  # sets LB_ADDR, REDIS_PID and CLUSTER_WATCH (NAME=PID of the gateways and chat-lb)
  local prefix="$1" g backends=()
  start_redis
  CLUSTER_WATCH=()
  for g in 1 2 3; do
    start_gateway "$prefix-gateway-$g" --redis "$REDIS_URL" --proxy-protocol
    backends+=("$GW_ADDR"); CLUSTER_WATCH+=("gateway-$g=$GW_PID")
  done
  LB_EXTRA=(--send-proxy-v2)
  start_lb "$prefix-lb" "${backends[@]}"
  LB_EXTRA=()
  CLUSTER_WATCH+=("chat-lb=$LB_PID")
}

bench() { # bench NAME ARGS...: chat-bench with a table, JSON and plot under $OUT
  local name="$1"; shift
  say "$name: chat-bench $*"
  # A failed run is noted and the others still run.
  "$BIN/chat-bench" "$@" --json-file "$OUT/$name.json" --plot "$OUT/$name.svg" 2>&1 | tee "$OUT/$name.txt" \
    || echo "$name (see $name.txt)" >>"$OUT/failed.txt"
}

machine() {
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "- kernel: $(uname -r); open files per process: $(ulimit -n)"
  echo "- load average when the runs began: $LOAD_BEFORE; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine competes for the same 2 cores)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- binaries: $BIN ($PROFILE); mode: $([ "$QUICK" = 1 ] && echo quick || echo full)"
}

# ------------------------------------------------------------------ scenario 1
if wants 1; then
  say "scenario 1: one gateway, 1 room x $S1_MEMBERS members, 1 publisher as fast as acks allow"
  start_gateway s1-gateway
  bench s1-fanout fanout --url "ws://$GW_ADDR/ws" --rooms 1 --members "$S1_MEMBERS" --publishers 1 --rate 0 \
    --duration "$DUR" --warmup "$WARM" --payload 64 --local-ips "$LOCAL_IPS" \
    --watch-pid "gateway=$GW_PID" --label "1 gateway, 1 room x $S1_MEMBERS"
  if [ "$PERF" = 1 ]; then
    say "scenario 1 again under perf record (gateway pid $GW_PID)"
    secs="${DUR%s}"
    ( sleep "${WARM%s}"; perf record -F 499 -p "$GW_PID" -o "$OUT/s1-gateway.perf.data" -- sleep "$secs" ) \
      >"$LOGS/perf.log" 2>&1 &
    perf_pid=$!
    "$BIN/chat-bench" fanout --url "ws://$GW_ADDR/ws" --rooms 1 --members "$S1_MEMBERS" --publishers 1 --rate 0 \
      --duration "$DUR" --warmup "$WARM" --payload 64 --local-ips "$LOCAL_IPS" --no-progress \
      --label "under perf" --json-file "$OUT/s1-fanout-perf.json" >"$OUT/s1-fanout-perf.txt"
    wait "$perf_pid" || true
    perf report -i "$OUT/s1-gateway.perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 \
      2>/dev/null | grep -v '^$' | head -80 >"$OUT/s1-gateway.perf.txt" || true
    perf report -i "$OUT/s1-gateway.perf.data" --stdio --no-children --sort dso \
      2>/dev/null | grep -v '^$' | head -30 >"$OUT/s1-gateway.perf-dso.txt" || true
    say "profile: $OUT/s1-gateway.perf.txt"
  fi
  stop_all
fi

# ------------------------------------------------------------------ scenario 2
if wants 2; then
  say "scenario 2: Redis + 3 gateways + chat-lb, $S2_ROOMS rooms x $S2_MEMBERS members, 1 publisher per room"
  start_cluster s2
  watch_csv="$(IFS=,; echo "redis=$REDIS_PID,${CLUSTER_WATCH[*]}")"
  for ((round = 1; round <= ROUNDS; round++)); do
    bench "s2a-fanout-max$(round_suffix "$round")" fanout --url "ws://$LB_ADDR/ws" --rooms "$S2_ROOMS" \
      --members "$S2_MEMBERS" --publishers 1 --rate 0 --duration "$DUR" --warmup "$WARM" --payload 64 \
      --local-ips "$LOCAL_IPS" --watch-pid "$watch_csv" --label "cluster, as fast as acks allow"
  done
  bench s2b-fanout-paced fanout --url "ws://$LB_ADDR/ws" --rooms "$S2_ROOMS" --members "$S2_MEMBERS" --publishers 1 \
    --rate "$S2B_RATE" --duration "$DUR" --warmup "$WARM" --payload 64 --local-ips "$LOCAL_IPS" \
    --watch-pid "$watch_csv" --label "cluster, $((S2_ROOMS * S2_MEMBERS * S2B_RATE)) deliveries/s"
  stop_all
  # The floor runs alone: the cluster is stopped.
  for rate in "$S2B_RATE" "$((S2B_RATE / 10))"; do
    bench "s2-floor-$((S2_ROOMS * S2_MEMBERS * rate))" floor --rooms "$S2_ROOMS" --members "$S2_MEMBERS" \
      --rate "$rate" --payload 80 --duration "$DUR" --warmup "$WARM" \
      --label "floor, $((S2_ROOMS * S2_MEMBERS * rate)) deliveries/s"
  done
fi

# ------------------------------------------------------------------ scenario 3
if wants 3; then
  say "scenario 3a: $S3A_N idle members on one gateway"
  start_gateway s3-gateway
  bench s3a-connections connections --url "ws://$GW_ADDR/ws" --n "$S3A_N" --rate "$S3_RATE" --hold "$S3_HOLD" \
    --local-ips "$LOCAL_IPS" --watch-pid "gateway=$GW_PID" --label "one gateway"
  stop_all

  say "scenario 3b: $S3B_N idle members through chat-lb (Redis + 3 gateways)"
  start_cluster s3
  bench s3b-connections-lb connections --url "ws://$LB_ADDR/ws" --n "$S3B_N" --rate "$S3_RATE" --hold "$S3_HOLD" \
    --local-ips "$LOCAL_IPS" --watch-pid "$(IFS=,; echo "${CLUSTER_WATCH[*]}")" --label "through chat-lb"
  stop_all
fi

# ------------------------------------------------------------------ scenario 4
if wants 4; then
  say "scenario 4: TCP ping-pong direct, through chat-lb and through HAProxy (same 3 echo backends)"
  ports=("$(free_port)" "$(free_port)" "$(free_port)")
  start echo "$BIN/chat-bench" --threads 1 echo-server \
    --listen "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  ECHO_PID=$STARTED_PID
  wait_match "$LOGS/echo.log" "listening on 127.0.0.1:${ports[2]}" 30 >/dev/null || die "echo servers did not start"
  start_lb s4-lb "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}"
  start relay "$BIN/chat-bench" relay --listen 127.0.0.1:0 --backend "127.0.0.1:${ports[0]}"
  RELAY_PID=$STARTED_PID
  RELAY_ADDR="$(wait_match "$LOGS/relay.log" 'listening on [0-9.:]+' 30 | sed 's/listening on //')" \
    || die "the relay did not start: see $LOGS/relay.log"
  hport="$(free_port)"
  cat >"$OUT/haproxy.cfg" <<EOF
global
    # Two sockets per connection within the 20,000 files a process may open.
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend bench
    bind 127.0.0.1:$hport
    default_backend echo
backend echo
    balance roundrobin
    server e1 127.0.0.1:${ports[0]}
    server e2 127.0.0.1:${ports[1]}
    server e3 127.0.0.1:${ports[2]}
EOF
  haproxy -c -f "$OUT/haproxy.cfg" >/dev/null || die "invalid haproxy config: $OUT/haproxy.cfg"
  start haproxy haproxy -db -f "$OUT/haproxy.cfg"
  HAPROXY_PID=$STARTED_PID
  for ((i = 0; i < 100; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$hport") 2>/dev/null && break; sleep 0.1; done

  targets=("direct tcp://127.0.0.1:${ports[0]} echo=$ECHO_PID"
           "chat-lb tcp://$LB_ADDR chat-lb=$LB_PID,echo=$ECHO_PID"
           "haproxy tcp://127.0.0.1:$hport haproxy=$HAPROXY_PID,echo=$ECHO_PID"
           "relay tcp://$RELAY_ADDR relay=$RELAY_PID,echo=$ECHO_PID")
  for ((round = 1; round <= ROUNDS; round++)); do
    for target in "${targets[@]}"; do
      read -r label url watch <<<"$target"
      bench "s4-latency-$label$(round_suffix "$round")" pingpong --url "$url" --conns 1 --depth 1 \
        --size 64 --duration "$S4_DUR" --warmup 1s --watch-pid "$watch" --label "$label"
    done
    for target in "${targets[@]}"; do
      read -r label url watch <<<"$target"
      bench "s4-throughput-$label$(round_suffix "$round")" pingpong --url "$url" --conns "$S4_CONNS" \
        --depth 4 --size 64 --duration "$S4_DUR" --warmup 1s --local-ips "$LOCAL_IPS" \
        --watch-pid "$watch" --label "$label"
    done
  done
  "$BIN/chat-bench" plot --out "$OUT/s4-latency.svg" --title "64-byte ping-pong round trip, 1 connection" \
    "$OUT"/s4-latency-{direct,chat-lb,haproxy,relay}.json
  "$BIN/chat-bench" plot --out "$OUT/s4-throughput.svg" \
    --title "64-byte ping-pong round trip, $S4_CONNS connections x 4 in flight" \
    "$OUT"/s4-throughput-{direct,chat-lb,haproxy,relay}.json
  stop_all
fi

# ------------------------------------------------------------------ scenario 5
if wants 5; then
  # chat-bench starts the gateways and chat-lb itself (it kills one and, in
  # 5b, restarts it with the same id and address); Redis is fresh for each.
  for variant in a b; do
    restart=(); label="gateway killed"
    if [ "$variant" = b ]; then restart=(--restart); label="gateway killed and restarted"; fi
    say "scenario 5$variant: $S5_N members via chat-lb on 3 gateways, $label"
    start_redis
    bench "s5$variant-failover" failover --redis "$REDIS_URL" --members "$S5_N" --room-size 30 \
      --rooms-per-member 2 --rate 1 --warmup "$WARM" --duration "$S5_DUR" --local-ips "$LOCAL_IPS" \
      --chat-gateway-bin "$BIN/chat-gateway" --chat-lb-bin "$BIN/chat-lb" --log-dir "$LOGS/s5$variant" \
      --watch-pid "redis=$REDIS_PID" "${restart[@]}" --label "$label, $S5_N members"
    stop_all
  done
fi

# ------------------------------------------------------------------ summary
say "summary"
{
  echo "# chat-bench results $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  machine
  echo
  echo "| scenario | measured | target |"
  echo "|---|---|---|"
  j() { jq -r "$2" "$OUT/$1.json" 2>/dev/null || echo "n/a"; }
  # rounds NAME FIELD: "median (min-max over N runs)" of a number in every round's report.
  # spread: numbers on stdin, one per line -> "median (min-max over N runs)".
  spread() {
    jq -rs 'map(floor) | sort | if length == 0 then "n/a" elif length == 1 then "\(.[0])"
      else "\(.[length / 2 | floor]) (\(.[0])-\(.[-1]) over \(length) runs)" end'
  }
  # rounds NAME FIELD: the spread of a number in every round's report.
  rounds() {
    local r f
    for ((r = 1; r <= ROUNDS; r++)); do
      f="$OUT/$1$(round_suffix "$r").json"
      [ -f "$f" ] && jq -r "$2" "$f" 2>/dev/null
    done | spread
  }
  if [ -f "$OUT/s1-fanout.json" ]; then
    echo "| 1. one gateway, 1 x $S1_MEMBERS, as fast as acks allow | $(j s1-fanout '"\(.deliveries_per_sec | floor) deliveries/s, loss \(.loss), p99 \(.latency.p99_us | floor) µs"') | >= 1,000,000/s, 0 loss |"
  fi
  if [ -f "$OUT/s2a-fanout-max.json" ]; then
    echo "| 2a. cluster via chat-lb, $S2_ROOMS x $S2_MEMBERS, as fast as acks allow | $(rounds s2a-fanout-max .deliveries_per_sec) deliveries/s, loss $(rounds s2a-fanout-max .loss), p99 $(rounds s2a-fanout-max .latency.p99_us) µs | >= 1,000,000/s, 0 loss |"
    echo "| 2b. cluster via chat-lb, paced | $(j s2b-fanout-paced '"\(.deliveries_per_sec | floor) deliveries/s, loss \(.loss), p50 \(.latency.p50_us | floor) µs, p99 \(.latency.p99_us | floor) µs"') | p99 <= 5 ms at 100,000/s |"
  fi
  for f in "$OUT"/s2-floor-*.json; do
    [ -f "$f" ] || continue
    echo "| floor: 2b's shape, sockets and one relay hop only | $(jq -r '"\(.deliveries_per_sec | floor) deliveries/s, p50 \(.latency.p50_us | floor) µs, p99 \(.latency.p99_us | floor) µs, \([.stages[].cpu.cores_used] | add * 100 | floor) % of one core"' "$f") | (yardstick) |"
  done
  if [ -f "$OUT/s3a-connections.json" ]; then
    echo "| 3a. $S3A_N idle on one gateway | $(j s3a-connections '"\(.connected) connected, \(.failed) failed, gateway \(.rss_per_connection_bytes.gateway / 1024 * 10 | floor / 10) KiB/connection"') | <= 8 KiB/connection |"
  fi
  if [ -f "$OUT/s3b-connections-lb.json" ]; then
    echo "| 3b. $S3B_N idle through chat-lb | $(j s3b-connections-lb '"\(.connected) connected, \(.failed) failed, chat-lb \(.rss_per_connection_bytes["chat-lb"] / 1024 * 10 | floor / 10) KiB/connection"') | <= 2 KiB/connection |"
  fi
  if [ -f "$OUT/s4-latency-direct.json" ]; then
    for l in direct chat-lb haproxy relay; do
      echo "| 4. ping-pong $l, 1 connection | p50 $(rounds "s4-latency-$l" .latency.p50_us) µs, p99 $(rounds "s4-latency-$l" .latency.p99_us) µs | added p99 <= 50 µs |"
    done
    # What a balancer adds: its p99 minus direct's in the same round.
    added() {
      local r d l
      for ((r = 1; r <= ROUNDS; r++)); do
        d="$OUT/s4-latency-direct$(round_suffix "$r").json"; l="$OUT/s4-latency-$1$(round_suffix "$r").json"
        [ -f "$d" ] && [ -f "$l" ] && jq -n --slurpfile a "$l" --slurpfile b "$d" '$a[0].latency.p99_us - $b[0].latency.p99_us'
      done | spread
    }
    for l in chat-lb haproxy relay; do
      echo "| 4. added by $l at p99, 1 connection | $(added "$l") µs | <= 50 µs |"
    done
    for l in direct chat-lb haproxy relay; do
      echo "| 4. ping-pong $l, $S4_CONNS x 4 in flight | $(rounds "s4-throughput-$l" .round_trips_per_sec) round trips/s | chat-lb >= HAProxy |"
    done
  fi
  for v in a b; do
    f="s5$v-failover"
    [ -f "$OUT/$f.json" ] || continue
    echo "| 5$v. failover, $(j "$f" '.label') ($(j "$f" .on_killed_gateway) on it) | $(j "$f" '"loss -> back in all rooms p50 \(.recovery.p50_ms | floor) ms, p99 \(.recovery.p99_ms | floor) ms, max \(.recovery.max_ms | floor) ms; \(.resumed_by_token) by token, \(.locked_out) locked out; lost \(.lost), duplicates \(.duplicates), out of order \(.out_of_order), presence flicker \(.presence_flicker), rooms listed wrong \(.rooms_listed_wrong)"') | p99 <= 1 s, max <= 2 s, 0 lost, 0 duplicates, 0 flicker |"
  done
  if [ -f "$OUT/failed.txt" ]; then
    echo
    echo "Runs that failed: $(paste -sd, "$OUT/failed.txt")"
  fi
  echo
  echo "Reports (tables, JSON, SVG plots) and logs: $OUT"
} | tee "$OUT/summary.md"
