#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and prints, per
# target, the executions, the coverage libFuzzer reached and the corpus size.
#
#   tests/run_fuzz.sh           60 s per target (FUZZ_SECONDS overrides)
#   tests/run_fuzz.sh --short    5 s per target, for `make test`
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them, so no nightly toolchain is needed.
# cargo-fuzz itself is installed from crates.io when missing.
#
# Each target first replays its regression inputs (fuzz/regressions/<target>,
# crashes found earlier), then fuzzes from the checked-in starting corpus
# (fuzz/corpus/<target>, read-only) into a working corpus under fuzz/target/.
# A crash fails the run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
if [[ "${1:-}" == "--short" ]]; then
    seconds="${FUZZ_SECONDS:-5}"
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/target"
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

cargo fuzz build
bin_dir="target/x86_64-unknown-linux-gnu/release"
# What `cargo fuzz run` sets; the binaries are run directly to pass two corpus dirs and our flags.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

# -detect_leaks=0: the manager keeps tasks between inputs by design, which
# libFuzzer's per-input leak check would rescan at every input (100x slower);
# LeakSanitizer still checks the whole process when it exits.
# -timeout: an input that runs this long is a hang (a deadlock), reported as a crash.
fuzz_flags=(-detect_leaks=0 -timeout=30 -rss_limit_mb=4096 -print_final_stats=1)

summary=()
failed=0
for target in $(cargo fuzz list); do
    binary="$bin_dir/$target"
    [[ -x "$binary" ]] || { echo "missing fuzz binary $binary (build failed?)"; exit 1; }
    work="target/corpus/$target"
    artifacts="artifacts/$target"
    mkdir -p "$work" "$artifacts" "corpus/$target"
    log="target/fuzz-$target.log"

    if [[ -d "regressions/$target" ]]; then
        echo "== $target: replaying regressions/$target"
        "$binary" "${fuzz_flags[@]}" -runs=0 -artifact_prefix="$artifacts/" "regressions/$target" >"$log" 2>&1 \
            || { tail -40 "$log"; echo "FAILED: a regression input of $target crashes again"; failed=1; continue; }
    fi

    echo "== $target: fuzzing for ${seconds}s"
    if ! "$binary" "${fuzz_flags[@]}" -max_total_time="$seconds" -artifact_prefix="$artifacts/" \
            "$work" "corpus/$target" >"$log" 2>&1; then
        tail -60 "$log"
        echo "FAILED: $target crashed; the input is in fuzz/$artifacts/"
        failed=1
    fi
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    coverage=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
    corpus_size=$(find "$work" -type f | wc -l)
    summary+=("$(printf '%-16s %10s execs %7s/s  %-22s corpus %s' "$target" "${executions:-?}" "${per_second:-?}" "${coverage:-?}" "$corpus_size")")
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
if [[ $failed -ne 0 ]]; then
    echo "fuzzing found a crash"
    exit 1
fi
