#!/usr/bin/env bash
# Side-by-side figures of the Python and Node bindings for two revisions, in one run:
#
#   benches/compare_revisions.sh BASE_REV [ROUNDS]
#
# BASE_REV is checked out in a temporary worktree under target/compare/ and
# built there with its own Makefile (library, Python package in its own venv,
# npm ci); the working tree is the other side. The rounds alternate base, head,
# base, head ... so that both sides see the same machine conditions, and each
# figure is reported as the median over every round's median. Figures are
# reported, never asserted.
set -euo pipefail

cd "$(dirname "$0")/.."
HEAD_ROOT=$PWD
BASE_REV=${1:?usage: benches/compare_revisions.sh BASE_REV [ROUNDS]}
ROUNDS=${2:-3}
PYTHON=${PYTHON:-python3}
OUT=$HEAD_ROOT/target/compare
BASE_ROOT=$OUT/base
mkdir -p "$OUT/samples"
rm -f "$OUT"/samples/*.json

if [ -d "$BASE_ROOT" ]; then
    git -C "$BASE_ROOT" checkout -q --detach "$BASE_REV"
else
    git worktree add -q --detach "$BASE_ROOT" "$BASE_REV"
fi

prepare() {
    local root=$1
    echo "== build $(git -C "$root" rev-parse --short HEAD) in $root"
    make -C "$root" --no-print-directory -s build python-package >"$OUT/build-$(basename "$root").log" 2>&1
    (cd "$root/bindings/node" && npm ci --no-audit --no-fund --loglevel=error) >>"$OUT/build-$(basename "$root").log" 2>&1
}
prepare "$BASE_ROOT"
prepare "$HEAD_ROOT"

# run SIDE ROOT ROUND: the Python and Node benchmarks of one side, each its own process.
run() {
    local side=$1 root=$2 round=$3
    local lib=$root/target/release/libstoryflow_tasks.so
    STORYFLOW_TASKS_LIB=$lib PY_BENCH_ROUNDS=3 "$root/.venv/bin/python" "$HEAD_ROOT/benches/python_compare.py" \
        >"$OUT/samples/$side.python.$round.json" 2>/dev/null
    (cd "$root/bindings/node" && STORYFLOW_TASKS_LIB=$lib node bench/status_bench.js --runs 1) \
        >"$OUT/samples/$side.node.$round.json" 2>/dev/null
}
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round of $ROUNDS"
    run base "$BASE_ROOT" "$round"
    run head "$HEAD_ROOT" "$round"
done

"$PYTHON" - "$OUT/samples" "$BASE_REV" <<'EOF'
import glob, json, os, statistics, sys

samples, base_rev = sys.argv[1], sys.argv[2]
figures = {}
for path in sorted(glob.glob(os.path.join(samples, "*.json"))):
    side = os.path.basename(path).split(".")[0]
    with open(path) as handle:
        text = handle.read().strip()
    if not text:
        continue
    for name, figure in json.loads(text).items():
        if isinstance(figure, dict) and "median" in figure:
            figures.setdefault(name, {}).setdefault(side, []).append(figure["median"])
            figures[name]["unit"] = figure.get("unit", "")
print(f"{'figure':30} {'base ' + base_rev:>16} {'head':>12}  change  unit")
for name, sides in sorted(figures.items()):
    if "base" not in sides or "head" not in sides:
        continue
    base, head = statistics.median(sides["base"]), statistics.median(sides["head"])
    change = (head - base) / base * 100 if base else float("nan")
    print(f"{name:30} {base:16.1f} {head:12.1f} {change:+6.1f}%  {sides['unit']}")
EOF
