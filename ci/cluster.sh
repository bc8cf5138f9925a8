#!/usr/bin/env bash
# Cluster mode on one machine, for a person to try: a 3-node NATS JetStream cluster
# (file storage, every message synced before it is acknowledged) and N sse-server nodes
# sharing one address with SO_REUSEPORT, all on loopback. Ctrl-C stops everything.
#
#   ci/cluster.sh [nodes] [address]     defaults: 2 nodes on 127.0.0.1:8080
#
# NATS listens on 127.0.0.1:14222-14224 (clients), 16222-16224 (routes) and
# 18222-18224 (monitoring); its files and the servers' logs go to a temporary directory
# that is removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-2}
address=${2:-127.0.0.1:8080}
ci/install-nats.sh
cargo build --release --locked -p sse-server
work=$(mktemp -d /tmp/sse-cluster.XXXXXX)
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap stop INT TERM EXIT

routes="nats-route://127.0.0.1:16222,nats-route://127.0.0.1:16223,nats-route://127.0.0.1:16224"
for n in 0 1 2; do
  cat >"$work/nats-$n.conf" <<CONF
server_name: nats-$n
listen: 127.0.0.1:1422$((2 + n))
http: 127.0.0.1:1822$((2 + n))
jetstream {
  store_dir: "$work/nats-$n"
  sync_interval: always
}
cluster {
  name: sse
  listen: 127.0.0.1:1622$((2 + n))
  routes: [$routes]
}
CONF
  .tools/bin/nats-server -c "$work/nats-$n.conf" >"$work/nats-$n.log" 2>&1 &
  pids+=($!)
done
urls="nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"
echo "waiting for JetStream to elect its meta leader..."
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:18222/jsz" 2>/dev/null | grep -q '"leader"'; then break; fi
  sleep 0.2
done
for n in $(seq 1 "$nodes"); do
  SSE_LOG_FORMAT=text target/release/sse-server --store nats --nats-url "$urls" \
    --listen "$address" --reuse-port >"$work/sse-$n.log" 2>&1 &
  pids+=($!)
done
echo "cluster up: $nodes sse-server node(s) on http://$address, NATS at $urls"
echo "  publish:   curl -d hello 'http://$address/events?topic=demo'"
echo "  subscribe: curl -N 'http://$address/events?topic=demo'"
echo "  logs:      $work/*.log     stop: Ctrl-C"
wait -n "${pids[@]}" || true
echo "a process of the cluster exited; stopping the rest (logs in $work, KEEP=1 keeps them)" >&2
