#!/usr/bin/env bash
# Runs the chat system on this machine and prints its URL.
#
# With redis-server available (installed with apt-get when run as root): the
# whole cluster, i.e. its own Redis on a private port, 3 gateways and chat-lb
# on :8080. Otherwise one gateway on the embedded bridge at :8080.
# Everything runs in the background; pids and logs are in .run/, and so is the
# admin API's token (.run/admin-token, made at the first start).
# scripts/down.sh stops it.
#
# With --redis-cluster: a Redis Cluster instead of the one Redis (6 nodes, 3
# primaries and 3 replicas, on 127.0.0.1:7001..7006, made by
# scripts/redis-cluster.sh), and the gateways on it with --redis-cluster.
#
# Environment: CHAT_PORT (8080), CHAT_GATEWAYS (3), CHAT_SINGLE=1 (one gateway,
# no Redis), CHAT_PROFILE (release | debug), CHAT_REDIS_PORT (6390),
# CHAT_REDIS_CLUSTER_PORT (7001: the first node of --redis-cluster).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

REDIS_CLUSTER=0
for arg in "$@"; do
  case "$arg" in
    --redis-cluster) REDIS_CLUSTER=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $arg (usage: scripts/up.sh [--redis-cluster])" ;;
  esac
done
if [ "$REDIS_CLUSTER" = 1 ] && [ "${CHAT_SINGLE:-0}" = 1 ]; then
  die "--redis-cluster runs several gateways on a Redis Cluster: it cannot go with CHAT_SINGLE=1"
fi

PORT="${CHAT_PORT:-8080}"
GATEWAYS="${CHAT_GATEWAYS:-3}"
PROFILE="${CHAT_PROFILE:-release}"
RUN="$ROOT/.run"
REDIS_PORT="${CHAT_REDIS_PORT:-6390}"

need_tools
command -v curl >/dev/null || need_pkg curl curl
if [ -n "$(ls "$RUN"/*.pid 2>/dev/null)" ]; then
  "$ROOT/scripts/down.sh" || true
fi
mkdir -p "$RUN"

say "building the web client"
web_deps
(cd web && npm run --silent build) || die "web build failed"

say "building the binaries ($PROFILE; the first build takes a few minutes)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p chat-gateway -p chat-lb -p chat-admin
else
  cargo build --locked -p chat-gateway -p chat-lb -p chat-admin
fi
BIN="$ROOT/target/$PROFILE"

start() { # start NAME COMMAND...: background process with pid file and log
  local name="$1"; shift
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

if [ "${CHAT_SINGLE:-0}" != 1 ]; then
  need_pkg redis-server redis-server
fi

# The admin API's bearer token: made once, kept in a file only its owner can
# read, and given to the gateways (and chat-admin) as a file, never on a
# command line.
TOKEN_FILE="$RUN/admin-token"
if [ ! -s "$TOKEN_FILE" ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE")
fi
chmod 600 "$TOKEN_FILE"

if [ "$REDIS_CLUSTER" = 0 ] && { [ "${CHAT_SINGLE:-0}" = 1 ] || ! command -v redis-server >/dev/null; }; then
  start gateway "$BIN/chat-gateway" --listen "0.0.0.0:$PORT" --web-root "$ROOT/web/dist" \
    --admin-listen 127.0.0.1:9090 --admin-token-file "$TOKEN_FILE"
  wait_http "http://127.0.0.1:$PORT/healthz" 30 || die "gateway did not start: see $RUN/gateway.log"
  say "chat is up: http://localhost:$PORT  (one gateway, embedded bridge; stop with scripts/down.sh)"
  echo "    admin:   $BIN/chat-admin --token-file $TOKEN_FILE gateways"
  exit 0
fi

if [ "$REDIS_CLUSTER" = 1 ]; then
  # Starts the nodes (pid files .run/redis-PORT.pid), creates the cluster
  # the first time, waits for cluster_state:ok; its last line is the seed list.
  SEEDS="$("$ROOT/scripts/redis-cluster.sh" | tee /dev/stderr | tail -n 1)"
  [[ "$SEEDS" == redis://* ]] || die "the Redis Cluster did not start"
  redis_flags=(--redis-cluster "$SEEDS")
else
  mkdir -p "$RUN/redis"
  start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN/redis" \
    --appendonly yes --appendfsync everysec --save ""
  for ((i = 0; i < 50; i++)); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis did not start: see $RUN/redis.log"
  redis_flags=(--redis "redis://127.0.0.1:$REDIS_PORT")
fi

# The secret the gateways sign their control commands with (kick, ban,
# drain): made once, readable by this user only, never on a command line.
if [ ! -s "$RUN/cluster-secret" ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$RUN/cluster-secret")
fi

backends=()
for ((g = 1; g <= GATEWAYS; g++)); do
  gport=$((PORT + g))
  start "gateway-$g" "$BIN/chat-gateway" --listen "127.0.0.1:$gport" --gateway-id "gw-$g" \
    "${redis_flags[@]}" --web-root "$ROOT/web/dist" --proxy-protocol \
    --admin-listen "127.0.0.1:$((9090 + g - 1))" --admin-token-file "$TOKEN_FILE" --cluster-secret-file "$RUN/cluster-secret"
  backends+=(--backend "127.0.0.1:$gport")
done
# The gateways expect chat-lb's PROXY v2 header (the real client address for
# logs and per-address limits), so readiness is read from their logs.
for ((g = 1; g <= GATEWAYS; g++)); do
  wait_log "$RUN/gateway-$g.log" "chat-gateway listening on" 30 || die "gateway $g did not start: see $RUN/gateway-$g.log"
done
start lb "$BIN/chat-lb" --listen "0.0.0.0:$PORT" --admin-listen 127.0.0.1:9100 --send-proxy-v2 "${backends[@]}"
wait_http "http://127.0.0.1:$PORT/healthz" 30 || die "chat-lb did not start: see $RUN/lb.log"

say "chat is up: http://localhost:$PORT"
if [ "$REDIS_CLUSTER" = 1 ]; then
  # Roles as they are now (a failover swaps a primary and its replica).
  primaries="" replicas="" down=""
  for seed in ${SEEDS//,/ }; do
    rport="${seed##*:}"
    case "$(redis-cli -p "$rport" role 2>/dev/null | head -n 1)" in
      master) primaries+=" :$rport" ;;
      slave) replicas+=" :$rport" ;;
      *) down+=" :$rport" ;;
    esac
  done
  redis_summary="redis cluster (primaries$primaries; replicas$replicas${down:+; down$down})"
else
  redis_summary="redis :$REDIS_PORT"
fi
echo "    cluster: $redis_summary, $GATEWAYS gateways (:$((PORT + 1))..:$((PORT + GATEWAYS))), chat-lb :$PORT (metrics :9100)"
echo "    admin:   $BIN/chat-admin --token-file $TOKEN_FILE gateways   (gRPC on 127.0.0.1:9090..)"
echo "    logs:    $RUN/*.log      stop: scripts/down.sh"
