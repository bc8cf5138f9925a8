#!/usr/bin/env bash
# Benchmarks behind the README's results table. Starts a release sse-server on
# loopback for each run, drives it with sse-chaos, and prints every run's RESULT line
# and the medians.
#
#   ci/bench.sh [idle|idle-tls|fanout|fanout-wide|fanout-tls|publish|resume|sim|all] [runs]
#   ci/bench.sh profile       where the server's CPU goes in fan-out (perf, not in `all`)
#
# fanout-wide is 10,000 subscribers at 10 and at 50 events/s (500,000 deliveries a
# second offered), without coalescing and with auto;
# idle-tls is idle over TLS (the test certificate in fixtures/tls/, ALPN http/1.1);
# fanout-tls is 1,000 subscribers at 200 events/s without coalescing, every connection
# over TLS (each delivery its own record).
# idle and fanout run on the in-memory store (what they measure does not touch it);
# publish compares the disk store (--fsync always) with the in-memory one in the same
# run; resume restarts a disk-store server between writing a history and the herd.
# SSE_SERVER_BIN runs another sse-server build instead (a before/after comparison:
# alternate the two in one session).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
runs=${2:-3}
port=${BENCH_PORT:-18480}
addr=127.0.0.1:$port
if [[ $what != sim ]]; then
  cargo build --release --locked -p sse-server -p sse-chaos
fi
server=${SSE_SERVER_BIN:-target/release/sse-server}
chaos=target/release/sse-chaos
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

health=(curl -fsS "http://$addr/healthz")

start_server() {
  "$server" --listen "$addr" --max-connections 15000 --data-dir "$out/data" "$@" >>"$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    "${health[@]}" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$out/server.log"; exit 1
}

stop_server() {
  kill -TERM "$pid"; wait "$pid" || true
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
field() { grep -o "$1=[0-9.]*" | cut -d= -f2; }

if [[ $what == idle || $what == all ]]; then
  : >"$out/idle"
  for run in $(seq "$runs"); do
    start_server --store memory
    "$chaos" idle --addr "$addr" --server-pid "$pid" --streams 10000 | tee -a "$out/idle"
    stop_server
  done
  echo "MEDIAN idle rss_per_stream_bytes=$(grep RESULT "$out/idle" | field rss_per_stream_bytes | median)"
fi

if [[ $what == idle-tls || $what == all ]]; then
  : >"$out/idle-tls"
  tls=fixtures/tls
  health=(curl -fsS --cacert "$tls/ca.pem" "https://$addr/healthz")
  for run in $(seq "$runs"); do
    start_server --store memory --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"
    "$chaos" idle --addr "$addr" --server-pid "$pid" --streams 10000 --tls-ca "$tls/ca.pem" | tee -a "$out/idle-tls"
    stop_server
  done
  health=(curl -fsS "http://$addr/healthz")
  echo "MEDIAN idle-tls rss_per_stream_bytes=$(grep RESULT "$out/idle-tls" | field rss_per_stream_bytes | median)"
fi

if [[ $what == fanout-wide || $what == all ]]; then
  cases=(0s@10 auto@10 0s@50 auto@50)
  for case in "${cases[@]}"; do : >"$out/wide-$case"; done
  for run in $(seq "$runs"); do
    for case in "${cases[@]}"; do
      start_server --store memory --coalesce "${case%@*}"
      echo "coalesce=$case subscribers=10000 run=$run"
      "$chaos" fanout --addr "$addr" --server-pid "$pid" --subscribers 10000 --rate "${case#*@}" --size 128 \
        --duration 10s | tee -a "$out/wide-$case"
      stop_server
    done
  done
  for case in "${cases[@]}"; do
    f="$out/wide-$case"
    echo "MEDIAN fanout-wide subscribers=10000 coalesce=${case%@*} rate=${case#*@}" \
      "deliveries_per_cpu_s=$(grep RESULT "$f" | field deliveries_per_cpu_s | median)" \
      "p50_ms=$(grep RESULT "$f" | field p50_ms | median) p99_ms=$(grep RESULT "$f" | field p99_ms | median)" \
      "max_ms=$(grep RESULT "$f" | field max_ms | median)"
  done
fi

if [[ $what == fanout || $what == all ]]; then
  # 1,000 subscribers at 200 events/s (busy) under each pacing: none, a fixed 10 ms, auto
  # with its default 5 ms budget and with a 10 ms one; then at 20 events/s (quiet: 50 ms
  # apart, past any budget) without coalescing and with auto. A label is the server's
  # --coalesce flags joined by commas, and the rate.
  cases=(0s@200 10ms@200 auto@200 auto,--coalesce-budget,10ms@200 0s@20 auto@20)
  for case in "${cases[@]}"; do : >"$out/fanout-$case"; done
  for run in $(seq "$runs"); do
    # Alternate the settings so that machine noise hits them alike.
    for case in "${cases[@]}"; do
      IFS=, read -r -a flags <<<"${case%@*}"
      start_server --store memory --coalesce "${flags[@]}"
      echo "coalesce=$case run=$run"
      "$chaos" fanout --addr "$addr" --server-pid "$pid" --subscribers 1000 --rate "${case#*@}" --size 128 \
        --duration 10s | tee -a "$out/fanout-$case"
      curl -fsS "http://$addr/metrics" | grep '^sse_wakeups' | paste -sd' ' - | tee -a "$out/fanout-$case"
      stop_server
    done
  done
  for case in "${cases[@]}"; do
    f="$out/fanout-$case"
    echo "MEDIAN fanout coalesce=${case%@*} rate=${case#*@} deliveries_per_cpu_s=$(grep RESULT "$f" | field deliveries_per_cpu_s | median)" \
      "p50_ms=$(grep RESULT "$f" | field p50_ms | median) p99_ms=$(grep RESULT "$f" | field p99_ms | median)"
  done
fi

if [[ $what == fanout-tls || $what == all ]]; then
  : >"$out/fanout-tls"
  tls=fixtures/tls
  health=(curl -fsS --cacert "$tls/ca.pem" "https://$addr/healthz")
  for run in $(seq "$runs"); do
    start_server --store memory --coalesce 0s --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"
    "$chaos" fanout --addr "$addr" --server-pid "$pid" --subscribers 1000 --rate 200 --size 128 \
      --duration 10s --tls-ca "$tls/ca.pem" | tee -a "$out/fanout-tls"
    stop_server
  done
  health=(curl -fsS "http://$addr/healthz")
  f="$out/fanout-tls"
  echo "MEDIAN fanout-tls coalesce=0s rate=200 deliveries_per_cpu_s=$(grep RESULT "$f" | field deliveries_per_cpu_s | median)" \
    "p50_ms=$(grep RESULT "$f" | field p50_ms | median) p99_ms=$(grep RESULT "$f" | field p99_ms | median)"
fi

if [[ $what == profile ]]; then
  # perf (Debian's linux-perf) samples the server for 6 s in the middle of a 15 s fan-out,
  # without coalescing, at 1,000 × 200 and 10,000 × 10: the share of kernel and user
  # space, then the server's own functions.
  for load in 1000x200 10000x10; do
    start_server --store memory --coalesce 0s
    (sleep 5; perf record -F 497 --call-graph dwarf,32768 -p "$pid" -o "$out/perf-$load" -- sleep 6 2>/dev/null) &
    profiler=$!
    "$chaos" fanout --addr "$addr" --server-pid "$pid" --subscribers "${load%x*}" --rate "${load#*x}" --size 128 \
      --duration 15s | grep RESULT
    wait "$profiler"
    stop_server
    echo "PROFILE $load: share of the server's samples"
    perf report -i "$out/perf-$load" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -4
    echo "PROFILE $load: the server's own functions (≥ 0.3% of all samples)"
    perf report -i "$out/perf-$load" --no-children --dso sse-server --sort symbol --stdio -g none --percent-limit 0.3 \
      2>/dev/null | grep '%' | cut -c1-120
  done
fi

if [[ $what == publish || $what == all ]]; then
  for run in $(seq "$runs"); do
    # Alternate the stores so that machine noise hits both alike.
    for store in disk memory; do
      for publishers in 64 1; do
        rm -rf "$out/data"
        start_server --store "$store"
        echo "store=$store publishers=$publishers run=$run"
        "$chaos" publish --addr "$addr" --publishers "$publishers" --size 128 --duration 10s \
          | tee -a "$out/publish-$store-$publishers"
        stop_server
      done
    done
  done
  for store in disk memory; do
    for publishers in 64 1; do
      f="$out/publish-$store-$publishers"
      echo "MEDIAN publish store=$store publishers=$publishers" \
        "publishes_per_s=$(grep RESULT "$f" | field publishes_per_s | median)" \
        "p50_ms=$(grep RESULT "$f" | field p50_ms | median) p99_ms=$(grep RESULT "$f" | field p99_ms | median)"
    done
  done
fi

if [[ $what == resume || $what == all ]]; then
  for run in $(seq "$runs"); do
    # window 1024: the restarted server holds the history in its windows; window 64:
    # the herd reads all but the last 64 events from the disk store.
    for window in 1024 64; do
      rm -rf "$out/data"
      start_server --window "$window"
      from=$("$chaos" history --addr "$addr" --events 1000 --size 128 | grep RESUME_FROM | cut -d= -f2)
      stop_server
      start_server --window "$window"
      echo "window=$window run=$run from=$from"
      "$chaos" resume --addr "$addr" --server-pid "$pid" --from "$from" --clients 10000 --events 1000 \
        | tee -a "$out/resume-$window"
      stop_server
    done
  done
  for window in 1024 64; do
    f="$out/resume-$window"
    echo "MEDIAN resume window=$window clients=10000 events_per_client=1000" \
      "seconds=$(grep RESULT "$f" | field seconds | median)" \
      "server_rss_growth_mib=$(grep RESULT "$f" | field server_rss_growth_mib | median)"
  done
fi

if [[ $what == sim || $what == all ]]; then
  # Simulation speed: simulated seconds per wall second for two 10-minute plans of 100
  # clients (fixtures/bench/), calm and with a fault on one client every 5 s. SIM_BIN
  # runs another sse-simulations build (a before/after comparison).
  cargo build --release --locked -p sse-simulations
  sim=${SIM_BIN:-target/release/sse-simulations}
  for run in $(seq "$runs"); do
    for plan in calm faults; do
      log="$out/sim-$plan.log"
      start=$(date +%s.%N)
      "$sim" replay --seed 1 --plan "fixtures/bench/$plan-100x10m.plan" >"$log"
      end=$(date +%s.%N)
      tail -1 "$log" | grep -qx PASS || { echo "sim plan=$plan run=$run did not pass: $log"; trap - EXIT; exit 1; }
      simulated=$(grep -E '^ *[0-9.]+s harness +done:' "$log" | awk '{print $1 + 0}')
      clients=all_clients
      if grep -q '^SKIPPED clients' "$log"; then clients=clients_capped; fi
      echo "RESULT sim plan=$plan run=$run $clients" \
        "$(awk -v s="$start" -v e="$end" -v sim="$simulated" \
          'BEGIN { printf "wall_s=%.2f simulated_s=%.1f speed=%.1f", e - s, sim, sim / (e - s) }')" | tee -a "$out/sim-$plan"
    done
  done
  for plan in calm faults; do
    f="$out/sim-$plan"
    echo "MEDIAN sim plan=$plan wall_s=$(grep RESULT "$f" | field wall_s | median)" \
      "speed=$(grep RESULT "$f" | field speed | median)"
  done
fi
