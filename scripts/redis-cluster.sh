#!/usr/bin/env bash
# Starts a local Redis Cluster in the background, as `scripts/up.sh
# --redis-cluster` does before its gateways: 6 redis-server nodes on
# 127.0.0.1 (3 primaries, one replica each), ports CHAT_REDIS_CLUSTER_PORT
# (7001) to +5; each node's cluster bus listens on its port + 10000, so the
# ports stay below 55536. Data and nodes.conf in .run/redis-cluster/PORT
# (appendonly: a restarted node keeps its data and its place in the cluster),
# pids and logs in .run/redis-PORT.{pid,log}; scripts/down.sh stops them.
#
# The first start creates the cluster with `redis-cli --cluster create`; later
# starts find it in nodes.conf and only wait for it. Either way it returns
# once every node reports cluster_state:ok and every replica is linked to its
# primary, and prints the seed list for the
# gateways' --redis-cluster on its last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

RUN="$ROOT/.run"
BASE="${CHAT_REDIS_CLUSTER_PORT:-7001}"
NODES=6
# Failure detection: a primary unreachable this long (ms) is replaced by its
# replica; meanwhile the other shards keep serving (cluster-require-full-coverage
# no below), and so do the gateways for their rooms.
NODE_TIMEOUT="${CHAT_REDIS_CLUSTER_NODE_TIMEOUT:-5000}"

[[ "$BASE" =~ ^[0-9]+$ ]] && ((BASE >= 1024 && BASE + NODES - 1 < 55536)) \
  || die "CHAT_REDIS_CLUSTER_PORT=$BASE: the ports must be 1024..55535 (the cluster bus uses port + 10000)"
need_pkg redis-server redis-server
command -v redis-cli >/dev/null || need_pkg redis-cli redis-tools
# Sharded pub/sub (SPUBLISH/SSUBSCRIBE) needs Redis 7.
major="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')"
((${major:-0} >= 7)) || die "redis-server $major.x found: a Redis Cluster for chat needs Redis 7 or newer"

# listening PORT: whether anything accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ports=()
for ((i = 0; i < NODES; i++)); do ports+=($((BASE + i))); done

for port in "${ports[@]}"; do
  pidfile="$RUN/redis-$port.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    die "redis node :$port is already running (pid $(cat "$pidfile")); stop it with scripts/down.sh"
  fi
  if listening "$port" || listening $((port + 10000)); then
    die "port $port or $((port + 10000)) is taken; choose others with CHAT_REDIS_CLUSTER_PORT"
  fi
done

say "starting the Redis Cluster nodes :${ports[0]}..:${ports[-1]}"
for port in "${ports[@]}"; do
  dir="$RUN/redis-cluster/$port"
  mkdir -p "$dir"
  nohup redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$NODE_TIMEOUT" \
    --cluster-require-full-coverage no \
    --appendonly yes --appendfsync everysec --save "" >"$RUN/redis-$port.log" 2>&1 &
  echo $! >"$RUN/redis-$port.pid"
done
for port in "${ports[@]}"; do
  for ((i = 0; i < 100; i++)); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 || die "redis node :$port did not start: see $RUN/redis-$port.log"
done

# A node that knows only itself has never been part of a cluster.
known() { redis-cli -p "$1" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }
fresh=0
for port in "${ports[@]}"; do
  [ "$(known "$port")" = 1 ] && fresh=$((fresh + 1))
done
if ((fresh == NODES)); then
  say "creating the cluster (3 primaries, 3 replicas)"
  addrs=()
  for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$RUN/redis-cluster-create.log" 2>&1 \
    || die "redis-cli --cluster create failed: see $RUN/redis-cluster-create.log"
elif ((fresh > 0)); then
  die "some nodes of $RUN/redis-cluster are in a cluster and some are not: stop them (scripts/down.sh) and remove $RUN/redis-cluster to start afresh"
fi

# Every node says cluster_state:ok, and every replica's link to its primary is up.
cluster_ok() {
  local port replication
  for port in "${ports[@]}"; do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    replication="$(redis-cli -p "$port" info replication 2>/dev/null)" || return 1
    if grep -q '^role:slave' <<<"$replication"; then
      grep -q '^master_link_status:up' <<<"$replication" || return 1
    fi
  done
}
for ((i = 0; i < 300; i++)); do
  cluster_ok && break
  sleep 0.1
done
cluster_ok || die "the Redis Cluster is not ok after 30 s: see $RUN/redis-*.log (redis-cli -p $BASE cluster nodes)"

seeds=()
for port in "${ports[@]}"; do seeds+=("redis://127.0.0.1:$port"); done
(IFS=,; echo "${seeds[*]}")
