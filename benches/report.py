#!/usr/bin/env python3
"""Folds the benchmark runs into results.json, a printed table and BENCHMARKS.md.

Each file in the samples folder holds what one benchmark process printed: a
JSON object mapping figure names to a list of samples (one per repeated run or
batch), with free-form diagnostics under "info"; or, from the Python and Node
benchmarks, figures already folded as {"median", "min", "max", "unit"}.
Figures are compared with their targets on the median. A missed target is
reported, never raised: benchmarks do not fail the build.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

# name -> (unit, what it measures, which group it is shown in)
FIGURES = {
    "c_throughput_tasks_per_s": ("tasks/s", "1,000,000 no-op tasks submitted from C, until all finished"),
    "channel_limit_tasks_per_s": ("tasks/s", "the same count of boxed no-op closures through a bare std mpsc channel to one thread"),
    "c_submit_ns_at_10": ("ns", "one sft_submit_task, 10 finished tasks retained"),
    "c_submit_ns_at_1m": ("ns", "one sft_submit_task, 1,000,000 finished tasks retained"),
    "original_submit_us_at_10": ("us", "one submit_task of the original StoryFlow tasks.py design (pure Python), 10 finished tasks retained"),
    "original_submit_us_at_100k": ("us", "the same, 100,000 finished tasks retained (its cleanup scans them all)"),
    "c_status_ns_k0": ("ns", "sft_get_task_status + sft_string_free, task with 0 segments"),
    "c_status_ns_k1000": ("ns", "the same, task with 1,000 segments"),
    "serde_status_ns_k0": ("ns", "serde_json of the same k=0 status alone (the floor)"),
    "py_submit_per_s": ("calls/s", "Python binding: submit_task calls per second"),
    "original_py_submit_per_s": ("calls/s", "the original tasks.py design: submit_task calls per second"),
    "py_status_per_s": ("calls/s", "Python binding: get_task_status calls per second"),
    "original_py_status_per_s": ("calls/s", "the original tasks.py design: get_task_status calls per second (a dict() copy)"),
    "py_poll_p99_us_busy": ("us", "Python binding: p99 get_task_status while the worker runs a tight progress loop"),
    "original_py_poll_p99_us_busy": ("us", "the original tasks.py design: the same"),
    "wake_us_p50": ("us", "submit-to-start latency on an idle worker (C)"),
    "channel_wake_us_p50": ("us", "send-to-start latency of a bare channel on an idle thread"),
    "longpoll_wake_us_p50": ("us", "from a progress report to a thread blocked in sft_wait_task_change running again (p50)"),
    "longpoll_wake_us_p99": ("us", "the same, p99"),
    "node_koffi_status_ns": ("ns", "Node getTaskStatus per call, koffi"),
    "node_ffinapi_status_ns": ("ns", "Node getTaskStatus per call, ffi-napi"),
    "bytes_per_finished_task": ("bytes", "resident memory per retained finished task, 1,000,000 of them"),
    "c_submit_max_us_burst_1m": ("us", "slowest single submit while 1,000,000 are submitted (C)"),
    "plain_submit_max_us_burst_1m": ("us", "the same, plain HashMap + one lock design"),
    "c_status_max_us_burst_1m": ("us", "slowest status read from a second thread during that burst (C)"),
    "plain_status_max_us_burst_1m": ("us", "the same, plain HashMap + one lock design"),
    "c_status_p99_us_writer_hot": ("us", "p99 status read while a task updates progress in a tight loop (C)"),
    "plain_status_p99_us_writer_hot": ("us", "the same, plain HashMap + one lock design"),
    "c_uninterrupted_submit_max_us_burst_1m": ("us", "slowest submit of that burst among windows of 64 in which its thread never left its core (C)"),
    "plain_uninterrupted_submit_max_us_burst_1m": ("us", "the same, plain design"),
    "c_pending_uninterrupted_submit_max_us_1m": ("us", "the same, worker held"),
    "ffi_status_ns_k0_beside_floor": ("ns", "sft_get_task_status + free called from Rust, batches alternating with the serde floor's in one process"),
    "c_pending_submit_max_us_1m": ("us", "slowest submit while 1,000,000 pile up pending (worker held)"),
    "c_pending_status_max_us_1m": ("us", "slowest status read meanwhile (pending tasks: their queue position too)"),
    "c_drain_status_max_us_1m": ("us", "slowest status read while the worker then drains the 1,000,000 alone"),
    "node_koffi_submit_ns": ("ns", "Node submitTask per call, koffi (worker held)"),
    "node_ffinapi_submit_ns": ("ns", "Node submitTask per call, ffi-napi (worker held)"),
}

DESIGN_NAMES = {
    "one_map_inline": "one HashMap, records inline, one lock (the plain design)",
    "one_map_boxed": "one HashMap, boxed records, one lock",
    "one_map_reserved": "one HashMap with the final capacity reserved",
    "sharded_256_siphash": "256 shards, ids re-hashed on resize (the first design)",
    "sharded_256_prehashed": "256 shards, hash stored with the id",
    "sharded_1024_prehashed": "1024 shards, hash stored with the id",
    "sharded_4096_prehashed": "4096 shards, hash stored with the id",
}

# (figure, relation, other figure or None, factor): figure <=/>= factor * other (or factor alone).
TARGETS = [
    ("c_throughput_tasks_per_s", ">=", "channel_limit_tasks_per_s", 0.25),
    ("c_submit_ns_at_1m", "<=", "c_submit_ns_at_10", 1.5),
    ("c_status_ns_k0", "<=", "serde_status_ns_k0", 2.5),
    ("py_submit_per_s", ">=", "original_py_submit_per_s", 3.0),
    ("py_poll_p99_us_busy", "<=", "original_py_poll_p99_us_busy", 1 / 50),
    ("wake_us_p50", "<=", "channel_wake_us_p50", 1.3),
    ("bytes_per_finished_task", "<=", None, 512),
    ("c_submit_max_us_burst_1m", "<=", None, 5000),
    ("c_status_max_us_burst_1m", "<=", None, 5000),
    ("c_status_p99_us_writer_hot", "<=", None, 50),
]

# Rows of the "Stores" table: (what, figure suffix, unit, target text, SQLite limit or None).
# Each figure is `stores_memory_<suffix>` beside `stores_sqlite_<suffix>` (benches/stores.rs).
MEMORY_TARGET = "memory: within 10% of the memory store before the stores existed"
STORE_ROWS = [
    ("submit, one thread, p50", "submit_us_p50", "us", "SQLite <= 100 us; " + MEMORY_TARGET, 100),
    ("submit, one thread, p99", "submit_us_p99", "us", "", None),
    ("submit, 8 threads at once, p50", "submit_8_threads_us_p50", "us", "", None),
    ("submit, 8 threads at once, p99", "submit_8_threads_us_p99", "us", "", None),
    ("progress update, the worker's cost, p50", "progress_us_p50", "us", "<= 2 us, never a disk wait", 2),
    ("progress update, the worker's cost, p99", "progress_us_p99", "us", "", None),
    ("segment append, the worker's cost, p50", "segment_us_p50", "us", "SQLite <= 200 us", 200),
    ("segment append, the worker's cost, p99", "segment_us_p99", "us", "", None),
    ("status read, same process, p50", "status_us_p50", "us", "", None),
    ("status read, same process, p99", "status_us_p99", "us", "", None),
    ("status read, another process, p50", "status_other_process_us_p50", "us", "", None),
    ("status read, another process, p99", "status_other_process_us_p99", "us", "", None),
    ("long-poll wake across processes, p50", "wake_other_process_us_p50", "us", "SQLite <= 2,000 us", 2000),
    ("long-poll wake across processes, p99", "wake_other_process_us_p99", "us", "", None),
    ("no-op tasks per second", "tasks_per_s", "tasks/s", "", None),
    ("bytes per retained finished task (memory: resident; SQLite: on disk)", "bytes_per_retained_task", "bytes", "", None),
    ("reopen with 100,000 retained finished tasks", "reopen_100k_ms", "ms", "SQLite <= 1,000 ms", 1000),
]

# Rows of the main table: each figure beside what it is compared with.
TABLE_ROWS = [
    "c_throughput_tasks_per_s", "channel_limit_tasks_per_s",
    "c_submit_ns_at_10", "c_submit_ns_at_1m", "original_submit_us_at_10", "original_submit_us_at_100k",
    "c_status_ns_k0", "serde_status_ns_k0", "ffi_status_ns_k0_beside_floor", "c_status_ns_k1000",
    "py_submit_per_s", "original_py_submit_per_s", "py_status_per_s", "original_py_status_per_s",
    "py_poll_p99_us_busy", "original_py_poll_p99_us_busy",
    "wake_us_p50", "channel_wake_us_p50", "longpoll_wake_us_p50", "longpoll_wake_us_p99",
    "node_koffi_status_ns", "node_ffinapi_status_ns",
    "bytes_per_finished_task",
    "c_submit_max_us_burst_1m", "plain_submit_max_us_burst_1m",
    "c_uninterrupted_submit_max_us_burst_1m", "plain_uninterrupted_submit_max_us_burst_1m",
    "c_status_max_us_burst_1m", "plain_status_max_us_burst_1m",
    "c_pending_submit_max_us_1m", "c_pending_uninterrupted_submit_max_us_1m",
    "c_pending_status_max_us_1m", "c_drain_status_max_us_1m",
    "c_status_p99_us_writer_hot", "plain_status_p99_us_writer_hot",
]


def unit_of(name):
    if name in FIGURES:
        return FIGURES[name][0]
    if name.endswith("_tasks_per_s"):
        return "tasks/s"
    if name.endswith("_per_s"):
        return "calls/s"
    if "_ns" in name:
        return "ns"
    if "_us" in name:
        return "us"
    return "bytes" if "bytes" in name else ""


def load_runs(samples_dir):
    """Reads every run's output: samples per figure, pre-folded figures, info, failures."""
    samples, folded, info, failures = {}, {}, {}, []
    for path in sorted(Path(samples_dir).glob("*.json")):
        text = path.read_text().strip()
        if not text:
            failures.append(path.stem)
            continue
        try:
            run = json.loads(text)
        except json.JSONDecodeError:
            try:  # a run that printed more than its JSON: the JSON is its last line
                run = json.loads(text.splitlines()[-1])
            except json.JSONDecodeError:
                failures.append(path.stem)
                continue
        for name, value in run.items():
            if name == "info":
                info.setdefault(path.stem.split(".", 1)[-1], []).append(value)
            elif isinstance(value, dict) and "median" in value:
                folded[name] = value
            elif isinstance(value, list):
                samples.setdefault(name, []).extend(float(v) for v in value)
            elif isinstance(value, (int, float)):
                samples.setdefault(name, []).append(float(value))
    return samples, folded, info, failures


def fold(samples, folded):
    results = {}
    for name, values in samples.items():
        results[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "unit": unit_of(name),
            "runs": len(values),
        }
    for name, value in folded.items():
        results.setdefault(name, {**value, "unit": value.get("unit") or unit_of(name)})
    return results


def judge(results):
    verdicts = []
    for figure, relation, other, factor in TARGETS:
        have = results.get(figure)
        base = results.get(other) if other else {"median": 1.0}
        if have is None or base is None:
            missing = [n for n in (figure, other) if n and n not in results]
            verdicts.append((figure, relation, other, factor, None, None, "missing: " + ", ".join(missing)))
            continue
        limit = factor * base["median"]
        met = have["median"] >= limit if relation == ">=" else have["median"] <= limit
        verdicts.append((figure, relation, other, factor, have["median"], limit, "met" if met else "MISSED"))
    return verdicts


def number(value):
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def target_text(figure, relation, other, factor):
    if other is None:
        return f"{figure} {relation} {number(factor)}"
    return f"{figure} {relation} {factor:g} x {other}"


def markdown_tables(results, verdicts):
    lines = ["| figure | median | min | max | unit | what |", "|---|---:|---:|---:|---|---|"]
    others = sorted(n for n in results if n not in TABLE_ROWS and not n.startswith(("design_", "stores_")))
    for name in TABLE_ROWS + others:
        what = FIGURES.get(name, ("", ""))[1]
        result = results.get(name)
        if result is None:
            lines.append(f"| `{name}` | missing | | | {unit_of(name)} | {what} |")
        else:
            lines.append(
                f"| `{name}` | {number(result['median'])} | {number(result['min'])} | {number(result['max'])} "
                f"| {result['unit']} | {what} |"
            )
    target_lines = ["| target | value (median) | limit | verdict |", "|---|---:|---:|---|"]
    for figure, relation, other, factor, value, limit, verdict in verdicts:
        target_lines.append(
            f"| `{target_text(figure, relation, other, factor)}` | {number(value)} | {number(limit)} | {verdict} |"
        )
    return "\n".join(lines), "\n".join(target_lines)


def stores_table(results):
    """Each store figure with the memory store's beside the SQLite store's, and the target."""
    if not any(name.startswith("stores_") for name in results):
        return "(benches/stores.rs did not run)"
    spread = lambda r: f"{number(r['median'])} ({number(r['min'])}-{number(r['max'])})" if r else "-"  # noqa: E731
    lines = [
        "| figure | memory | SQLite | unit | target | SQLite verdict |",
        "|---|---:|---:|---|---|---|",
    ]
    for what, suffix, unit, target, limit in STORE_ROWS:
        memory, sqlite = results.get(f"stores_memory_{suffix}"), results.get(f"stores_sqlite_{suffix}")
        verdict = "" if limit is None or sqlite is None else ("met" if sqlite["median"] <= limit else "MISSED")
        lines.append(f"| {what} | {spread(memory)} | {spread(sqlite)} | {unit} | {target} | {verdict} |")
    return "\n".join(lines)


def design_table(results, info):
    names = [
        key[len("design_"):-len("_insert_max_us")]
        for key in results
        if key.endswith("_insert_max_us") and not key.endswith("_uninterrupted_insert_max_us")
    ]
    if not names:
        return "(registry_designs did not run)"
    spread = lambda r: f"{number(r['median'])} / {number(r['min'])} / {number(r['max'])}" if r else "-"  # noqa: E731
    lines = [
        "| registry candidate | slowest insert, us | slowest uninterrupted insert, us | uninterrupted inserts over 100 us, per run | random lookup at 1,000,000, ns |",
        "|---|---:|---:|---:|---:|",
    ]
    runs = info.get("registry_designs", [])
    for name in names:
        over = [str(run.get(f"{name}_uninterrupted_inserts_over_100us", "?")) for run in runs]
        lines.append(
            f"| {DESIGN_NAMES.get(name, name)} | {spread(results.get(f'design_{name}_insert_max_us'))} "
            f"| {spread(results.get(f'design_{name}_uninterrupted_insert_max_us'))} | {', '.join(over)} "
            f"| {spread(results.get(f'design_{name}_get_ns'))} |"
        )
    return "\n".join(lines)


def diagnostics_text(info):
    """What each run noted beside its figures: where the slowest calls were, CPU per task, rates."""
    fmt = lambda calls: ", ".join(f"{us:,.0f} us @ {at:,}" for us, at in sorted(calls, reverse=True))  # noqa: E731
    lines = []
    for label, key in [("library (C)", "c_burst"), ("plain design", "plain_burst"), ("library, worker held", "c_pending")]:
        for number_, run in enumerate(info.get(key, []), 1):
            seconds = run.get("submit_seconds", run.get("seconds", 0))
            text = (
                f"- burst, {label}, run {number_} ({seconds:.1f} s, {run.get('reads', 0):,} reads): "
                f"slowest submits {fmt(run.get('slowest_submits_us_at_index', []))}; "
                f"slowest uninterrupted {fmt(run.get('slowest_uninterrupted_submits_us_at_index', []))}; "
                f"slowest reads {fmt(run.get('slowest_reads_us_at_size', []))}"
            )
            if "slowest_drain_reads_us_at_size" in run:
                text += (
                    f"; then drained alone in {run.get('drain_seconds', 0):.2f} s "
                    f"({run.get('drain_cpu_ns_per_task', 0):,.0f} ns CPU per task, submitting took "
                    f"{run.get('submit_cpu_ns_per_task', 0):,.0f}), slowest reads meanwhile "
                    f"{fmt(run['slowest_drain_reads_us_at_size'])}"
                )
            lines.append(text)
    for label, key in [("library (C)", "c_throughput"), ("bare channel", "channel_throughput")]:
        for run in info.get(key, []):
            lines.append(
                f"- throughput, {label}: {run.get('count', 0):,} tasks in {run.get('seconds', 0):.2f} s, "
                f"{run.get('cpu_ns_per_task', 0):,.0f} ns of CPU per task (both threads)"
            )
    for label, key, call in [("library (C)", "c_wake", "submit_call_us_p50"), ("bare channel", "channel_wake", "send_call_us_p50")]:
        for run in info.get(key, []):
            calls = ", ".join(f"{us:.1f}" for us in run.get(call, []))
            text = f"- wake, {label}: the submitting call itself took (p50 per chunk, us) {calls}"
            if "submit_after_idle_no_wake_us_p50" in run:
                text += (
                    "; a submit after the same 1 ms idle with the worker held (nothing to wake) took "
                    f"{run['submit_after_idle_no_wake_us_p50'][0]:.1f} us (p50)"
                )
            lines.append(text)
    for label, key in [("library (C)", "c_writer_hot"), ("plain design", "plain_writer_hot")]:
        for run in info.get(key, []):
            lines.append(
                f"- writer hot, {label}: {run.get('reads_per_s', 0):,.0f} reads/s beside "
                f"{run.get('updates_per_s', 0):,.0f} progress updates/s"
            )
    for run in info.get("c_status", []):
        lines.append(f"- status JSON sizes: k=0 {run.get('k0_json_bytes')} bytes, k=1000 {run.get('k1000_json_bytes')} bytes")
    for run in info.get("c_memory", []):
        lines.append(f"- memory: RSS {run.get('rss_before', 0) / 2**20:.1f} MiB before, {run.get('rss_after', 0) / 2**20:.1f} MiB after")
    return "\n".join(lines) or "(nothing ran)"


def command_output(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_text(load_start, load_end):
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = next(
        (int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")),
        0,
    )
    return "\n".join([
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores"
        + (" (virtual machine)" if "hypervisor" in Path("/proc/cpuinfo").read_text() else ""),
        f"- memory: {memory_kib / 1024 / 1024:.1f} GiB",
        f"- kernel: {platform.release()}; libc: {' '.join(platform.libc_ver())}",
        f"- {command_output(['rustc', '--version'])}; {command_output(['cc', '--version']).splitlines()[0] if command_output(['cc', '--version']) else 'cc ?'}",
        f"- load average (1, 5, 15 min) at start: {load_start}; at end: {load_end}",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--markdown")
    parser.add_argument("--notes")
    parser.add_argument("--stores-only", action="store_true", help="print the Stores table; write no markdown")
    parser.add_argument("--load-start", default="?")
    parser.add_argument("--load-end", default="?")
    parser.add_argument("--seconds", default="?")
    parser.add_argument("--conditions", default="")
    args = parser.parse_args()

    samples, folded, info, failures = load_runs(args.samples)
    results = fold(samples, folded)
    verdicts = judge(results)
    Path(args.results).write_text(
        json.dumps({name: {k: v for k, v in r.items() if k != "runs"} for name, r in sorted(results.items())}, indent=2)
        + "\n"
    )
    Path(args.results).with_name("diagnostics.json").write_text(json.dumps(info, indent=2) + "\n")

    if args.stores_only:
        print(stores_table(results))
        if failures:
            print("\nruns that printed nothing usable: " + ", ".join(failures), file=sys.stderr)
        return
    if not args.markdown or not args.notes:
        parser.error("--markdown and --notes are required unless --stores-only")

    figures_table, targets_table = markdown_tables(results, verdicts)
    print(figures_table)
    print()
    print(targets_table)
    if failures:
        print("\nruns that printed nothing usable: " + ", ".join(failures), file=sys.stderr)

    notes = Path(args.notes).read_text() if Path(args.notes).exists() else ""
    document = f"""# Benchmarks

Written by `make bench` (`benches/run.sh`, folded by `benches/report.py`); the
analysis at the end is `benches/NOTES.md`. Do not edit this file by hand: rerun
`make bench`.

## How to reproduce

```sh
make bench                       # release build, every figure, this file and target/bench/results.json
BENCH_REPS=5 make bench          # more repeated runs per figure (default 3)
BENCH_ONLY=stores benches/run.sh # only the Stores figures, into target/bench/results.json (BENCH_QUICK=1: small counts)
```

`target/bench/results.json` maps each figure to `{{"median", "min", "max", "unit"}}`;
`target/bench/diagnostics.json` keeps every run's diagnostics (where the slowest
calls happened, reads/s, RSS); `target/bench/samples/` the raw output of each run.
Every comparison runs in the same invocation, its runs interleaved with the
figure it is compared with, so both see the same machine load. The whole run
took {args.seconds} s.

## Machine and load

{machine_text(args.load_start, args.load_end)}
{args.conditions}

## Figures

Median, min and max over the repeated runs (for per-call figures: over batches
of thousands of calls, several batches per run).

{figures_table}

## Targets

{targets_table}

## Stores

The memory store beside the SQLite store (`sqlite:<temporary directory under
target/>`), both through the same `TaskManager` API (`benches/stores.rs`), one
process per store, alternating within each run. Median (min-max) over the runs
of each run's p50 or p99. Submits are timed with the worker held (by a running
task), so that only the submitting call is measured; progress updates and
segment appends inside a running task, on the worker thread; the status read
is of a finished task with no segments; the wake is from just before a segment
append to the return of `wait_for_change` in a child process on the same file.
The memory store's bytes are resident memory, the SQLite store's the
checkpointed file, less an empty store's.

{stores_table(results)}

## Registry candidates: slowest single insert while growing to 1,000,000 ids, one thread

Each candidate is a small replica in `benches/baselines/registry_designs.rs`;
"1024 shards, hash stored with the id" is the shape of `src/registry.rs`.
Median / min / max over the runs. The inserts are also grouped in windows of
64: "uninterrupted" counts only windows in which the thread never left its
core (no context switch), which leaves the data structure's own worst case,
page faults included. A stall long enough to span a 4 ms scheduler tick is
always interrupted, so for the one-map designs, whose stalls last 0.3 to 1.5 s,
only the first column counts.

{design_table(results, info)}

## Diagnostics of the runs

Slowest calls: submits at their index in the burst, reads at the number of
tasks submitted by then. CPU time per task, unlike wall time, is barely moved
by other load on the machine.

{diagnostics_text(info)}
{"" if not failures else chr(10) + "Runs that printed nothing usable (their figures are missing): " + ", ".join(failures) + chr(10)}
{notes}"""
    Path(args.markdown).write_text(document.rstrip() + "\n")


if __name__ == "__main__":
    main()
