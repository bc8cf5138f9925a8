#!/usr/bin/env bash
# The nightly tier: long real chaos runs against the release binary behind Toxiproxy,
# generated fault plans run for real (cluster plans on a JetStream cluster too), many SIGKILL crash seeds, damaged-store copies, fresh simulation seeds, long fuzz
# runs, and mutation testing (the mutants of the day's changes, one shard of the full run). Writes $OUT/report.jsonl (one JSON object per real run: each named plan under each
# round's seed, each swarm seed with a failure's shrunk plan, the soak), an HTML report per
# real run and per swarm in $OUT/html/ (timelines with fault windows, verdict, replay
# command; no JavaScript) and $OUT/summary.txt.
#
#   ci/nightly-chaos.sh [rounds]        (OUT defaults to target/nightly)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
out=${OUT:-target/nightly}
mkdir -p "$out/html"
: >"$out/report.jsonl"
ci/install-toxiproxy.sh
ci/install-nats.sh
cargo build --release --locked -p sse-server -p sse-chaos
export SSE_SERVER_BIN=$PWD/target/release/sse-server
base=${NIGHTLY_SEED:-$(date +%s)}
# The full mutation run's shards (ci/mutants.sh): one a night, in rotation.
MUTANT_SHARDS=${MUTANT_SHARDS:-10}
nightly() {
  local status=0
  echo "nightly chaos, seeds from $base, $rounds rounds"
  for round in $(seq 0 $((rounds - 1))); do
    seed=$((base + round))
    # The named plans (one per classic fault: latency, slicer, … sigkill) under this seed.
    for plan in fixtures/plans/*.plan; do
      target/release/sse-chaos replay --plan "$plan" --seed "$seed" --report "$out/report.jsonl" \
        --report-html "$out/html/$(basename "$plan" .plan)-$seed.html" >/dev/null \
        || { echo "FAIL $plan seed $seed: replay with cargo run -p sse-chaos -- replay --plan $plan --seed $seed"; status=1; }
    done
  done
  # Generated plans for real (the simulation's generator at real-time size), about 10 s each; a failure is
  # shrunk (dropping whole faults, 2 of 3 runs, at most 24 runs), written to fixtures/real-regressions/ and printed
  # with its plan and replay command.
  target/release/sse-chaos swarm --seeds $((rounds * 20)) --from "$base" --report "$out/report.jsonl" \
    --report-html "$out/html/swarm.html" || status=1
  # A long cluster run: 5 minutes of publishing on 3 nodes, a node or backplane fault every ~9 s.
  target/release/sse-chaos replay --plan fixtures/nightly/cluster-long.plan --seed "$base" --report "$out/report.jsonl" \
    --report-html "$out/html/cluster-long-$base.html" >/dev/null || { echo "FAIL cluster-long seed $base"; status=1; }
  # Generated cluster plans (2-3 nodes on a 3-node JetStream cluster, node kills and pauses, leader kills, NATS
  # pauses and restarts, nodes cut from NATS), about 30 s each, shrunk the same way on failure.
  target/release/sse-chaos swarm --cluster --seeds $((rounds * 4)) --from "$base" --report "$out/report.jsonl" \
    --report-html "$out/html/cluster-swarm.html" || status=1
  # One hour of generated client-side faults on one server: availability and leak slopes.
  target/release/sse-chaos soak --duration "${SOAK:-1h}" --seed "$base" --report "$out/report.jsonl" \
    --report-html "$out/html/soak-$base.html" || status=1
  SSE_CRASH_SEEDS=50 SSE_CRASH_SEED_BASE=$base SSE_CORRUPTION_SEEDS=500 \
    cargo test --release --locked -p sse-server --test http --test store -- sigkill damaged || status=1
  SIM_SEEDS=2000 SIM_SEED_BASE=$base cargo test --release --locked -p sse-simulations --test swarm || status=1
  # The simulation swarm's own report: a seed table and the recovery-time distribution.
  cargo run --release --locked -q -p sse-simulations -- swarm --seeds 200 --from "$base" \
    --report-html "$out/html/sim-swarm.html" >/dev/null || status=1
  SSE_FUZZ_CASES=2000000 SSE_FUZZ_SEED=$base cargo test --release --locked -p sse-server --test http -- fuzz \
    || status=1
  # Mutation testing: every mutant of the code changed since the previous night's commit
  # (any miss fails the night), and one shard of the full run in rotation (a miss the
  # committed results did not have fails the night; the shard's file is left changed in
  # mutants/ for review and commit).
  local previous
  previous=$(cat target/nightly-last-commit 2>/dev/null || git rev-parse HEAD~1)
  ci/mutants.sh diff "$previous" || { echo "FAIL mutants of the changes since $previous: target/mutants-diff.txt"; status=1; }
  cp target/mutants-diff.txt "$out/mutants-diff.txt" 2>/dev/null || true
  local shard=$(( base / 86400 % MUTANT_SHARDS ))
  ci/mutants.sh shard "$shard" "$MUTANT_SHARDS" || { echo "FAIL mutants shard $shard of $MUTANT_SHARDS"; status=1; }
  cp "mutants/shard-$shard-of-$MUTANT_SHARDS.txt" "$out/" 2>/dev/null || true
  git rev-parse HEAD >target/nightly-last-commit
  echo "real runs: $(grep -c '"passed":true' "$out/report.jsonl") passed," \
    "$(grep -c '"passed":false' "$out/report.jsonl") failed"
  return $status
}
# pipefail (set above) makes the script fail when any part of the night failed.
nightly 2>&1 | tee "$out/summary.txt"
