#!/usr/bin/env bash
# Run the two-rank gloo training test RUNS times in a row (default 20) while LOADERS busy processes (default 2,
# one per core here) keep every core loaded, and stop at the first failure. It reproduced issue 14's
# shutdown abort (1 run in 6 under load) before the fix. Usage: bash scripts/stress_distributed_test.sh [RUNS] [LOADERS]
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
LOADERS=${2:-2}
TEST=tests/export/test_distributed.py::test_two_gloo_ranks_end_with_identical_weights
PY=.venv/bin/python

loader_pids=()
stop_loaders() {
    for pid in "${loader_pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
trap stop_loaders EXIT
for _ in $(seq "$LOADERS"); do
    nice -n 10 "$PY" -c 'while True: pass' &
    loader_pids+=($!)
done

echo "$(date -u +%FT%TZ) $RUNS runs of $TEST with $LOADERS busy loaders (nice 10) on $(nproc) cores"
passed=0
for run in $(seq "$RUNS"); do
    started=$(date +%s)
    if "$PY" -m pytest "$TEST" -q -x -p no:cacheprovider >"build/stress_run.log" 2>&1; then
        passed=$((passed + 1))
        echo "run $run: passed in $(( $(date +%s) - started )) s (load $(cut -d' ' -f1 /proc/loadavg))"
    else
        echo "run $run: FAILED after $(( $(date +%s) - started )) s; the log follows"
        tail -40 build/stress_run.log
        echo "$passed of $run runs passed"
        exit 1
    fi
done
echo "$passed of $RUNS runs passed in a row"
