#!/usr/bin/env bash
# Flakiness: runs a suite RUNS times in a row on an unchanged tree and records every run,
# so that a failure without a cause shows up before CI meets it.
#   ci/flaky.sh suite RUNS   the whole test command (ci/test.sh), RUNS times
#   ci/flaky.sh chaos RUNS   the real tiers' tests (sse-chaos: chaos, cluster, browser, …),
#                            RUNS times beside a process that keeps one core busy, as on a
#                            loaded CI machine; with FLAKY_BESIDE="<what>" set, that busy
#                            process is one you started yourself (a mutation run, say), and
#                            the series' header names it instead of starting the loop
# Each run appends a line to flaky/<suite>.txt (run, pass/fail, seconds, the failing tests);
# a failing run's whole output is kept in target/flaky/<suite>-<run>.log. Every failure is
# to be investigated at its cause, never retried away. Exit status: 1 when any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:?usage: ci/flaky.sh suite|chaos RUNS}
runs=${2:?usage: ci/flaky.sh suite|chaos RUNS}
case $suite in
  suite) command=(ci/test.sh) ;;
  chaos) command=(cargo test -p sse-chaos --locked) ;;
  *) echo "unknown suite '$suite': suite or chaos" >&2; exit 2 ;;
esac
mkdir -p flaky target/flaky
out=flaky/$suite.txt
if [[ ! -s $out ]]; then
  printf '# ci/flaky.sh %s: run, outcome, seconds, failing tests\n' "$suite" >"$out"
fi
beside=
if [[ $suite == chaos ]]; then
  beside=", beside ${FLAKY_BESIDE:-a busy loop on one core}"
  # The real tiers start the sse-server binary; `cargo test -p sse-chaos` does not build it.
  cargo build -p sse-server --locked --quiet
fi
printf '# commit %s, %s runs from %s%s\n' "$(git rev-parse --short HEAD)" "$runs" "$(date -u +%FT%TZ)" "$beside" >>"$out"
hog=
if [[ $suite == chaos && -z ${FLAKY_BESIDE:-} ]]; then
  # One core kept busy for the whole series; stopped however the script ends.
  bash -c 'while :; do :; done' &
  hog=$!
  trap 'kill $hog 2>/dev/null || true' EXIT
fi
failed=0
for ((run = 1; run <= runs; run++)); do
  log=target/flaky/$suite-$run.log
  start=$(date +%s)
  if "${command[@]}" >"$log" 2>&1; then
    outcome=pass
    rm -f "$log"
  else
    outcome=fail
    failed=1
  fi
  secs=$(($(date +%s) - start))
  tests=$(grep -E '^test .* FAILED$' "$log" 2>/dev/null | awk '{print $2}' | paste -sd, - || true)
  printf '%d\t%s\t%d\t%s\n' "$run" "$outcome" "$secs" "${tests:--}" | tee -a "$out"
done
exit $failed
