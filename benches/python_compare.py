#!/usr/bin/env python3
"""The Python binding beside the original design in pure Python, in one process, round after round.

Figures (each the median, min and max over the rounds):

- ``py_submit_per_s`` / ``original_py_submit_per_s``: ``submit_task`` calls per
  second, submitting a batch of no-op tasks into an empty queue; the worker
  runs them meanwhile, as in a service (its cost is part of the figure).
- ``py_status_per_s`` / ``original_py_status_per_s``: ``get_task_status`` calls per
  second on finished tasks with progress and three segments.
- ``py_poll_p99_us_busy`` / ``original_py_poll_p99_us_busy``: p99 latency of one
  ``get_task_status`` from the main (API) thread while the worker runs a
  CPU-bound task that reports progress in a tight loop: native code for the
  library (``benches/python_busy_task.c``, built here), Python for the original design.
  The API thread reads once per millisecond, blocked in between as it would be
  between requests; a read's latency runs from the moment it was due, so it
  includes taking the GIL back (a sleep's own overshoot, a few tens of
  microseconds, is in both sides' figures).

Prints the table on stderr and one JSON object on stdout (the format
``benches/report.py`` folds). Knobs: PY_BENCH_ROUNDS (default 5),
PY_BENCH_SUBMITS (tasks per submit batch, default 10000). Benchmarks report;
they never assert.
"""

import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
try:
    import storyflow_tasks
except ImportError:  # a source checkout that did not pip-install the binding
    sys.path.insert(0, str(ROOT / "bindings" / "python"))
    import storyflow_tasks

import original_tasks  # noqa: E402 - after the path set-up above

ROUNDS = int(os.environ.get("PY_BENCH_ROUNDS", "5"))
SUBMITS = int(os.environ.get("PY_BENCH_SUBMITS", "10000"))
STATUS_TASKS = 1000
STATUS_CALLS = 50_000
POLLS = 2_000
POLL_INTERVAL_NS = 1_000_000


def noop():
    pass


# ----- the two managers behind one interface ---------------------------------------------------------


class Library:
    name = "py"

    def __init__(self):
        self.tm = storyflow_tasks.get_task_manager()
        self.busy = build_busy_task(self.tm.library_path)

    def fresh(self):
        return self.tm  # process-wide and final: the registry keeps growing round after round

    def wait_all(self, tm, ids):
        for task_id in ids:
            tm.wait(task_id)

    def start_busy(self, tm):
        if self.busy is None:
            return None
        buffer = ctypes.create_string_buffer(128)
        if self.busy.busy_start(buffer, len(buffer)) != 0:
            return None
        while not self.busy.busy_running():
            time.sleep(0.001)
        return buffer.value.decode()

    def stop_busy(self, tm, task_id):
        self.busy.busy_stop()
        tm.wait(task_id)


class OriginalDesign:
    name = "original_py"

    def fresh(self):
        old = original_tasks.TaskManager._instance
        if old is not None:
            old._executor.shutdown(wait=True)
        original_tasks.TaskManager._instance = None  # a new empty registry each round
        return original_tasks.get_task_manager()

    def wait_all(self, tm, ids):
        for task_id in ids:
            while tm.get_task_status(task_id)["completed_at"] is None:
                time.sleep(0.0005)

    def start_busy(self, tm):
        self.stop = False
        started = threading.Event()
        task_id = "busy"

        def busy():
            started.set()
            step = 0
            while not self.stop:
                tm.update_task_progress(task_id, step % 1000, 1000)
                step += 1

        tm.submit_task(busy, task_id=task_id)
        started.wait()
        return task_id

    def stop_busy(self, tm, task_id):
        self.stop = True
        self.wait_all(tm, [task_id])


def build_busy_task(library_path):
    """Compiles the native busy task against the loaded library; None (figure missing) if it cannot."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    output = Path(tempfile.mkdtemp(prefix="sft-pybench-")) / "python_busy_task.so"
    try:
        subprocess.run(
            [compiler, "-O2", "-shared", "-fPIC", f"-I{ROOT / 'include'}", str(ROOT / "benches" / "python_busy_task.c"),
             library_path, f"-Wl,-rpath,{Path(library_path).parent}", "-o", str(output)],
            check=True, capture_output=True, timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as error:
        print(f"cannot build the native busy task: {error}", file=sys.stderr)
        return None
    busy = ctypes.CDLL(str(output))
    busy.busy_start.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    busy.busy_start.restype = ctypes.c_int
    busy.busy_running.restype = ctypes.c_bool
    busy.busy_stop.restype = None
    return busy


# ----- the measurements -------------------------------------------------------------------------------------


def submit_rate(side, tm):
    submit = tm.submit_task
    started = time.perf_counter()
    ids = [submit(noop) for _ in range(SUBMITS)]
    elapsed = time.perf_counter() - started
    side.wait_all(tm, ids)
    return SUBMITS / elapsed


def status_rate(side, tm):
    def with_segments():
        pass

    ids = [tm.submit_task(with_segments) for _ in range(STATUS_TASKS)]
    for task_id in ids:
        tm.update_task_progress(task_id, 3, 3, current_segment_id=3)
        for segment in (1, 2, 3):
            tm.add_completed_segment(task_id, segment, {"audio_url": f"/media/audio/{segment}.wav", "duration": 2.5})
    side.wait_all(tm, ids)
    get = tm.get_task_status
    count = len(ids)
    started = time.perf_counter()
    for n in range(STATUS_CALLS):
        get(ids[n % count])
    return STATUS_CALLS / (time.perf_counter() - started)


def poll_p99_busy(side, tm):
    """p99 of one status read by an API thread that was blocked just before (as between requests).

    Each read is due when a 1 ms sleep ends; its latency runs from that moment
    until the status is in hand, so it includes getting the GIL back, which is
    where a worker running Python code makes an API thread wait.
    """
    task_id = side.start_busy(tm)
    if task_id is None:
        return None
    get = tm.get_task_status
    clock = time.perf_counter_ns
    latencies = []
    try:
        for _ in range(POLLS):
            due = clock() + POLL_INTERVAL_NS
            time.sleep(POLL_INTERVAL_NS / 1e9)
            get(task_id)
            latencies.append(clock() - due)
    finally:
        side.stop_busy(tm, task_id)
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))] / 1000


def fold(values, unit):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "unit": unit, "runs": len(values)}


def main():
    sides = [Library(), OriginalDesign()]
    samples = {}
    for round_number in range(ROUNDS):
        # Alternate which side goes first, so neither always runs on a warmer machine.
        for side in sides if round_number % 2 == 0 else reversed(sides):
            tm = side.fresh()
            for figure, measure, unit in (
                ("submit_per_s", submit_rate, "calls/s"),
                ("status_per_s", status_rate, "calls/s"),
                ("poll_p99_us_busy", poll_p99_busy, "us"),
            ):
                value = measure(side, tm)
                if value is not None:
                    samples.setdefault(f"{side.name}_{figure}", ([], unit))[0].append(value)
    results = {name: fold(values, unit) for name, (values, unit) in samples.items()}
    results["info"] = {
        "python": platform.python_version(),
        "library": storyflow_tasks.library_path(),
        "rounds": ROUNDS,
        "submits_per_round": SUBMITS,
        "status_calls_per_round": STATUS_CALLS,
        "polls_per_round": POLLS,
        "switch_interval_s": sys.getswitchinterval(),
        "load_average": os.getloadavg(),
    }
    print(f"{'figure':28} {'median':>12} {'min':>12} {'max':>12}  unit", file=sys.stderr)
    for name in sorted(results):
        if name != "info":
            r = results[name]
            print(f"{name:28} {r['median']:12.1f} {r['min']:12.1f} {r['max']:12.1f}  {r['unit']}", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
