#!/usr/bin/env python3
"""One submit_task of the original design in pure Python, with 10 and with 100,000 finished tasks retained.

The original design (``benches/original_tasks.py``) scans its whole registry on every
submission, so one submit grows with the number of tasks it keeps; this is the
original design's side of ``c_submit_ns_at_10`` / ``c_submit_ns_at_1m``. Both registries
live in this one process, side by side, and the rounds alternate between them; after each
round the tasks it submitted are taken out again, so the count stays put.
The retained tasks are put in place as the original design's own finished tasks look
(finished a moment ago, so its one-hour cleanup keeps them): submitting
100,000 through the original design itself would take its quadratic scan hours.

Prints one JSON object: {"original_submit_us_at_10": [...], "original_submit_us_at_100k": [...]},
one sample (microseconds per submit, the mean over a batch) per round.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import original_tasks  # noqa: E402 - after the path set-up above

ROUNDS = 15
# Submits per sample: enough to swamp the clock's cost, few enough that the registry barely grows.
BATCH = {10: 50, 100_000: 20}
NAMES = {10: "original_submit_us_at_10", 100_000: "original_submit_us_at_100k"}


def noop():
    pass


def manager_with_finished(count):
    """An original-design manager of its own (not the singleton), holding `count` finished tasks."""
    manager = object.__new__(original_tasks.TaskManager)
    manager._init()
    now = time.time()
    for index in range(count):
        manager._tasks[f"retained-{index}"] = {
            "status": original_tasks.TASK_COMPLETED,
            "progress": {},
            "completed_segments": [],
            "errors": [],
            "created_at": now,
            "completed_at": now,
        }
    return manager


def per_submit_us(manager, batch):
    """Mean microseconds of `batch` submits; then the registry is put back as it was."""
    started = time.perf_counter()
    ids = [manager.submit_task(noop) for _ in range(batch)]
    elapsed = time.perf_counter() - started
    manager._executor.submit(noop).result()  # the batch ran; the next one starts from an idle worker
    with manager._tasks_lock:
        for task_id in ids:
            del manager._tasks[task_id]
    return elapsed / batch * 1e6


def main():
    managers = {count: manager_with_finished(count) for count in BATCH}
    samples = {name: [] for name in NAMES.values()}
    for _ in range(ROUNDS):
        for count, manager in managers.items():
            samples[NAMES[count]].append(per_submit_us(manager, BATCH[count]))
    for manager in managers.values():
        manager._executor.shutdown(wait=True)
    print(json.dumps(samples))


if __name__ == "__main__":
    main()
