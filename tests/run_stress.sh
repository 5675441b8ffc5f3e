#!/usr/bin/env bash
# Stress and soak (tests/stress.rs): 8 threads submitting, polling, cancelling
# and long-polling through the C ABI with a mix of instant, slow, failing,
# panicking, deferred and external tasks; then every task accounted for, every
# user data freed once, the heap back at its baseline, and a watchdog that
# aborts on a deadlock. Prints the totals (tasks, operations, peak and final memory).
#
#   tests/run_stress.sh           60 s (STORYFLOW_STRESS_SECS overrides)
#   tests/run_stress.sh --short    3 s, for `make test`
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${STORYFLOW_STRESS_SECS:-60}"
if [[ "${1:-}" == "--short" ]]; then
    seconds="${STORYFLOW_STRESS_SECS:-3}"
fi

# A second, outer watchdog in case the process itself wedges before its own fires.
limit=$(( ${seconds%.*} + 300 ))
# Release build: the point is load, and a debug build does a tenth of the work.
STORYFLOW_STRESS_SECS="$seconds" timeout --signal=KILL "$limit" \
    cargo test --release --locked --quiet --test stress -- --nocapture
