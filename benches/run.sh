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
# for a quick try, the figures' names keep saying 1m), BENCH_ONLY=stores (only the
# memory-against-SQLite figures of benches/stores.rs: they are folded into
# target/bench/results.json, and BENCHMARKS.md is left as it is), BENCH_ONLY=redis (only
# the Redis store's figures of benches/redis.rs, against a redis-server it starts; their
# medians are printed beside the targets), BENCH_ONLY=scheduling (only the preview-wait and
# yield-check figures of benches/scheduling.rs, printed and written to
# target/bench/scheduling.json; BENCHMARKS.md is left as it is), BENCH_QUICK=1
# (benches/stores.rs and benches/redis.rs with small counts, benches/scheduling.rs with a
# short queue; see their headers, and for benches/stores.rs BENCH_STORES_CALLS and
# BENCH_STORES_TASKS).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
SAMPLES=$OUT/samples
REPS=${BENCH_REPS:-3}
COUNT=${BENCH_COUNT:-1000000}
PYTHON=${PYTHON:-python3}
MAKE=${MAKE:-make}
ONLY=${BENCH_ONLY:-}
case "$ONLY" in "" | stores | redis | scheduling) ;; *) echo "BENCH_ONLY: only 'stores', 'redis' and 'scheduling' are known" >&2; exit 2 ;; esac
export STORYFLOW_TASKS_LIB=$ROOT/target/release/libstoryflow_tasks.so

began=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$SAMPLES"
mkdir -p "$SAMPLES"

echo "== build (release)"
[ -n "$ONLY" ] || "$MAKE" --no-print-directory build
# bench_executable NAME: builds the `[[bench]]` target NAME and prints its executable's path.
bench_executable() {
    cargo build --release --locked --bench "$1" --message-format=json-render-diagnostics \
        | "$PYTHON" -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == sys.argv[1] and message.get("executable"):
        print(message["executable"])' "$1"
}
case "$ONLY" in redis | scheduling) ;; *) stores=$(bench_executable stores) ;; esac
case "$ONLY" in stores | scheduling) ;; *) redis_bench=$(bench_executable redis) ;; esac
if [ -z "$ONLY" ]; then
    baselines=$(bench_executable baselines)
    c_bench=$OUT/c_bench
    ${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -pthread -I"$ROOT/include" "$ROOT/benches/c/c_bench.c" \
        -L"$ROOT/target/release" -lstoryflow_tasks -Wl,-rpath,"$ROOT/target/release" -o "$c_bench"
fi

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

scheduling=$(bench_executable scheduling)
# The scheduling figures run once: the FIFO wait alone is a minute, and the benchmark
# repeats the other samples itself. SQLite's file goes under target/ (a real disk).
run_scheduling() {
    rm -rf "$OUT/scheduling-sqlite"
    run scheduling "$scheduling" "$OUT/scheduling-sqlite"
    cat "$SAMPLES/r$rep.scheduling.err"
}
if [ "$ONLY" = scheduling ]; then
    rep=all
    echo "== the preview's wait behind a queued book (benches/scheduling.rs)"
    run_scheduling
    cp "$SAMPLES/r$rep.scheduling.json" "$OUT/scheduling.json"
    echo "== wrote $OUT/scheduling.json ($(($(date +%s) - began)) s); BENCHMARKS.md left as it is"
    exit 0
fi

# The stores alternate within each run, so that both see the same machine load. The
# SQLite files go to a fresh directory under target/ (a real disk; /tmp may be a tmpfs),
# which the benchmark removes when it ends.
run_stores() {
    run stores_memory "$stores" memory
    rm -rf "$OUT/stores-sqlite"
    run stores_sqlite "$stores" sqlite "$OUT/stores-sqlite"
}

# The Redis store: worker processes (each a machine of its own) against a redis-server
# that the benchmark starts on a free port of 127.0.0.1 and stops.
run_redis() {
    run redis "$redis_bench" run
}

if [ "$ONLY" = redis ]; then
    for rep in $(seq 1 "$REPS"); do
        echo "== run $rep of $REPS (Redis only)"
        run_redis
    done
    "$redis_bench" summary "$SAMPLES"
    echo "== samples in $SAMPLES ($(($(date +%s) - began)) s); BENCHMARKS.md left as it is"
    exit 0
fi

if [ "$ONLY" = stores ]; then
    for rep in $(seq 1 "$REPS"); do
        echo "== run $rep of $REPS (stores only)"
        run_stores
    done
    "$PYTHON" benches/report.py --samples "$SAMPLES" --results "$OUT/results.json" --stores-only
    echo "== wrote $OUT/results.json ($(($(date +%s) - began)) s); BENCHMARKS.md left as it is"
    exit 0
fi

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
    run_stores
    run_redis
done
"$redis_bench" summary "$SAMPLES" || true

# The original design's submit growth, then the Python and Node figures: those come from
# the bindings' own benchmarks, which repeat and fold their runs themselves.
# Whatever cannot run is reported as missing.
rep=all
echo "== the preview's wait behind a queued book (benches/scheduling.rs)"
run_scheduling
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
