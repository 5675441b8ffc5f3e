#!/usr/bin/env bash
# `make bench`: builds in release mode, runs every figure
# beside what it is compared with (interleaved, in this one invocation), prints
# the table, writes target/bench/results.json and refreshes BENCHMARKS.md.
#
# A benchmark that fails is reported as missing; this script exits 0 whenever
# it could build and write the report, since benchmarks never fail the build.
#
# Knobs (environment): BENCH_REPS (repeated runs per figure, default 3),
# BENCH_COUNT (tasks in the million-task runs, default 1000000; smaller only
# for a quick try, the figures' names keep saying 1m).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
SAMPLES=$OUT/samples
REPS=${BENCH_REPS:-3}
COUNT=${BENCH_COUNT:-1000000}
PYTHON=${PYTHON:-python3}
MAKE=${MAKE:-make}
export STORYFLOW_TASKS_LIB=$ROOT/target/release/libstoryflow_tasks.so

began=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$SAMPLES"
mkdir -p "$SAMPLES"

echo "== build (release)"
"$MAKE" --no-print-directory build
baselines=$(cargo build --release --locked --bench baselines --message-format=json-render-diagnostics \
    | "$PYTHON" -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "baselines" and message.get("executable"):
        print(message["executable"])')
c_bench=$OUT/c_bench
${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -pthread -I"$ROOT/include" "$ROOT/benches/c/c_bench.c" \
    -L"$ROOT/target/release" -lstoryflow_tasks -Wl,-rpath,"$ROOT/target/release" -o "$c_bench"

# run LABEL COMMAND...: one benchmark process; its JSON goes to samples/, a failure is only noted.
run() {
    local label=$1
    shift
    local file=$SAMPLES/r$rep.$label.json
    printf '   %-22s' "$label"
    local start=$SECONDS
    if "$@" >"$file" 2>"$SAMPLES/r$rep.$label.err"; then
        printf ' %3d s\n' $((SECONDS - start))
    else
        printf ' FAILED (see %s)\n' "${file%.json}.err"
        : >"$file"
    fi
}

for rep in $(seq 1 "$REPS"); do
    echo "== run $rep of $REPS"
    run c_throughput "$c_bench" throughput "$COUNT"
    run channel_throughput "$baselines" channel_throughput "$COUNT"
    run c_submit_small "$c_bench" submit_small
    run c_status "$c_bench" status
    run serde_floor "$baselines" serde_floor
    run c_wake "$c_bench" wake
    run channel_wake "$baselines" channel_wake
    run c_long_poll "$c_bench" long_poll
    run c_burst "$c_bench" burst "$COUNT"
    run plain_burst "$baselines" plain_burst "$COUNT"
    run c_pending "$c_bench" pending "$COUNT"
    run c_writer_hot "$c_bench" writer_hot
    run plain_writer_hot "$baselines" plain_writer_hot
    run c_memory "$c_bench" memory "$COUNT"
    run registry_designs "$baselines" registry_designs "$COUNT"
done

# The original design's submit growth, then the Python and Node figures: those come from
# the bindings' own benchmarks, which repeat and fold their runs themselves.
# Whatever cannot run is reported as missing.
rep=all
echo "== the original design in pure Python, Python binding, Node engines"
run original_submit_growth "$PYTHON" benches/original_submit_growth.py
venv_python=$ROOT/.venv/bin/python
[ -x "$venv_python" ] || venv_python=$PYTHON
if [ -f benches/python_compare.py ]; then
    run python_compare "$venv_python" benches/python_compare.py
fi
if [ -f bindings/node/bench/status_bench.js ] && command -v node >/dev/null; then
    if [ ! -d bindings/node/node_modules ] && command -v npm >/dev/null; then
        (cd bindings/node && npm ci --no-audit --no-fund --loglevel=error) >"$SAMPLES/npm-ci.log" 2>&1 ||
            echo "   npm ci failed (see $SAMPLES/npm-ci.log): the Node figures will be missing"
    fi
    run node_status node bindings/node/bench/status_bench.js
fi

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
conditions=${BENCH_CONDITIONS:-}
"$PYTHON" benches/report.py --samples "$SAMPLES" --results "$OUT/results.json" --markdown "$ROOT/BENCHMARKS.md" \
    --notes "$ROOT/benches/NOTES.md" --load-start "$load_start" --load-end "$load_end" \
    --seconds "$(($(date +%s) - began))" --conditions "$conditions"
echo "== wrote $OUT/results.json and BENCHMARKS.md ($(($(date +%s) - began)) s)"
