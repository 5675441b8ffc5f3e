"""Named handlers in the API process or in a worker process of their own, under a polling load (SQLite store).

    python bindings/python/bench/named_worker_load.py [--sentences 100] [--tasks 2000] [--repeat 3]

For each placement of the handlers ("api": registered in the process that
serves the polls, "worker": `python -m storyflow_tasks worker` beside it), a
fresh API process on a fresh SQLite file runs 8 threads that poll a task's
status without pause (what a status endpoint under `ab` costs), and measures (the memory store, with the handlers in the API process, is the
reference):

- tasks/s of 8 submitter threads: `--tasks` named no-op tasks submitted, from
  the first submit until the last one is final;
- the narration: one named task of `--sentences` sentences (a 5 ms synthesis
  each, which releases the GIL, then a segment and a progress update), from
  submit to its final status.

The same two figures without pollers come first, for reference. It prints a
table and one JSON line; figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent

# Runs in the API process: sys.argv = [.., store, placement, pollers, tasks, sentences].
API_PROCESS = textwrap.dedent(
    """
    import json, sys, threading, time
    store, placement, pollers, tasks, sentences = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    from storyflow_tasks import get_task_manager
    tm = get_task_manager()
    if store != "memory":
        tm.configure(store=store)
    if placement == "api":
        import bench_handlers  # registers noop and narrate here
    else:
        tm.wait(tm.submit_named("noop"), timeout=60)  # the worker is serving

    target = tm.submit_named("noop")
    tm.wait(target, timeout=60)
    stop = threading.Event()
    reads = [0] * pollers

    def poll(index):
        while not stop.is_set():
            tm.get_task_status(target)
            reads[index] += 1

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(pollers)]
    for thread in threads:
        thread.start()

    per_thread = tasks // 8
    ids = [[] for _ in range(8)]
    def submit(index):
        ids[index] = [tm.submit_named("noop") for _ in range(per_thread)]
    began = time.perf_counter()
    submitters = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join()
    submitted = time.perf_counter()
    for chunk in ids:
        for task_id in chunk:
            tm.wait(task_id, timeout=600)
    finished = time.perf_counter()

    began_narration = time.perf_counter()
    chapter = tm.submit_named("narrate", {"sentences": sentences, "tts_seconds": 0.005})
    final = tm.wait(chapter, timeout=600)
    narration = time.perf_counter() - began_narration
    assert final["status"] == "COMPLETED", final
    stop.set()
    poll_seconds = time.perf_counter() - began
    print(json.dumps({
        "tasks_per_s": per_thread * 8 / (finished - began),
        "submits_per_s": per_thread * 8 / (submitted - began),
        "narration_s": narration,
        "status_reads_per_s": sum(reads) / poll_seconds,
    }))
    """
)


def environment() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    env.pop("STORYFLOW_TASKS_STORE", None)
    return env


def one_run(kind: str, placement: str, pollers: int, tasks: int, sentences: int) -> Dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as directory:
        store = "memory" if kind == "memory" else f"sqlite:{directory}/tasks.db"
        worker = None
        if placement == "worker":
            worker = subprocess.Popen(
                [sys.executable, "-m", "storyflow_tasks", "worker", "--store", store, "--import", "bench_handlers"],
                cwd=HERE,
                env=environment(),
                stdout=subprocess.PIPE,
                text=True,
            )
            assert worker.stdout is not None and "serving" in worker.stdout.readline()
        try:
            result = subprocess.run(
                [sys.executable, "-c", API_PROCESS, store, placement, str(pollers), str(tasks), str(sentences)],
                cwd=HERE,
                env=environment(),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise SystemExit(f"the API process failed:\n{result.stderr}")
            figures: Dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
            return figures
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", nargs="+", default=["memory", "sqlite"], choices=["memory", "sqlite"])
    arguments = parser.parse_args()
    rows: List[Dict[str, Any]] = []
    # The memory store cannot have a worker process: it is the in-process reference.
    placements = [
        (kind, placement) for kind in arguments.stores for placement in ("api", "worker") if (kind, placement) != ("memory", "worker")
    ]
    for pollers in (0, 8):
        for kind, placement in placements:
            runs = [one_run(kind, placement, pollers, arguments.tasks, arguments.sentences) for _ in range(arguments.repeat)]
            row: Dict[str, Any] = {"store": kind, "placement": placement, "pollers": pollers}
            for key in runs[0]:
                row[key] = statistics.median(run[key] for run in runs)
            rows.append(row)
    print(
        f"{'store':<8}{'handlers in':<12}{'pollers':>8}{'tasks/s (8 submitters)':>24}"
        f"{'submits/s':>12}{'narration s':>13}{'status reads/s':>16}"
    )
    for row in rows:
        print(
            f"{row['store']:<8}{row['placement']:<12}{row['pollers']:>8}{row['tasks_per_s']:>24.0f}{row['submits_per_s']:>12.0f}"
            f"{row['narration_s']:>13.3f}{row['status_reads_per_s']:>16.0f}"
        )
    print(json.dumps({"sentences": arguments.sentences, "tasks": arguments.tasks, "medians": rows}))


if __name__ == "__main__":
    main()
