"""The worker command and named tasks across real processes over one SQLite file.

Workers are ``python -m storyflow_tasks worker --store sqlite:<file> --import
named_handlers`` processes; the tasks are submitted, read, waited for and
long-polled by other interpreters of the same file (the pytest process keeps
its memory store for the other tests). Processes are stopped with SIGTERM or
killed with SIGKILL, at moments the tests choose at random; the handlers
(tests/named_handlers.py) record what they did in files, so what is asserted
was measured where it happened.
"""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import HANG_GUARD, TESTS_DIR, assert_clean_exit, python_env, run_python

HANDLERS = ["where", "fail", "steps", "exclusive", "narrate", "patient"]


class Worker:
    """A worker process of the command line, started and (by the fixture) always stopped."""

    def __init__(self, store: str, *extra: str, env: Optional[Dict[str, str]] = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storyflow_tasks", "worker", "--store", store, "--import", "named_handlers", *extra],
            cwd=TESTS_DIR,  # where named_handlers is; never a checkout of the package, which would shadow it
            env=env or python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid

    def read_line(self) -> str:
        """The next line of its output; a hang fails the test instead of blocking the suite."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], HANG_GUARD)
        if not ready:
            self.process.kill()
            pytest.fail(f"the worker printed nothing; stderr: {self.process.communicate()[1]}")
        return stdout.readline()

    def started(self) -> str:
        line = self.read_line()
        assert line, f"the worker exited before serving: {self.process.communicate()}"
        return line

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def finish(self) -> subprocess.CompletedProcess:
        try:
            out, err = self.process.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            pytest.fail(f"the worker did not exit; stdout={out!r} stderr={err!r}")
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'tasks.db'}"


@pytest.fixture
def workers() -> Iterator[List[Worker]]:
    """Every worker a test starts is killed at its end if it still runs."""
    started: List[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.communicate()


def start_worker(workers: List[Worker], store: str, **env: str) -> Worker:
    worker = Worker(store, env=python_env(**env))
    workers.append(worker)
    line = worker.started()
    assert f"pid {worker.pid}" in line and store in line, line
    return worker


def client(store: str, code: str, **env: str) -> Any:
    """Runs ``code`` in another interpreter of the store (``tm`` ready); returns what it printed last, as JSON."""
    prelude = "import json, os\nfrom storyflow_tasks import get_task_manager\ntm = get_task_manager()\n"
    result = run_python(prelude + textwrap.dedent(code), env=python_env(STORYFLOW_TASKS_STORE=store, **env), timeout=HANG_GUARD * 4)
    assert_clean_exit(result)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----- the command line ------------------------------------------------------------------------------


def worker_command(*arguments: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storyflow_tasks", *arguments],
        cwd=TESTS_DIR,
        env=env or python_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def test_the_help_says_how_to_run_and_stop_a_worker():
    result = worker_command("worker", "--help")
    assert result.returncode == 0, result.stderr
    for expected in ("--store", "sqlite:", "--import", "--shutdown-timeout", "SIGTERM", "resumes it"):
        assert expected in result.stdout, expected
    assert "worker" in worker_command("--help").stdout


@pytest.mark.parametrize(
    "arguments, says",
    [
        ([], "COMMAND"),
        (["worker", "--store", "sqlite:/tmp/x.db"], "--import"),
        (["worker", "--import", "named_handlers"], "needs a shared store"),
        (["worker", "--store", "memory", "--import", "named_handlers"], "needs a shared store"),
        (["worker", "--store", "nowhere:x", "--import", "named_handlers"], "store"),
        (["worker", "--store", "sqlite:/tmp/x.db", "--import", "named_handlers", "--shutdown-timeout", "-1"], "shutdown-timeout"),
    ],
)
def test_a_wrong_command_line_is_refused_clearly(arguments, says):
    env = python_env()
    env.pop("STORYFLOW_TASKS_STORE", None)
    result = worker_command(*arguments, env=env)
    assert result.returncode == 2, result
    assert says in result.stderr, result.stderr


def test_a_module_that_cannot_be_imported_or_registers_nothing_is_named(store):
    missing = worker_command("worker", "--store", store, "--import", "no_such_module_here")
    assert missing.returncode == 1 and "could not import no_such_module_here" in missing.stderr, missing
    nothing = worker_command("worker", "--store", store, "--import", "mp_helpers")
    assert nothing.returncode == 2 and "mp_helpers registered no handler" in nothing.stderr, nothing


def test_a_store_that_cannot_be_opened_is_reported_as_the_stores(tmp_path):
    store = f"sqlite:{tmp_path / 'missing-directory' / 'tasks.db'}"
    result = worker_command("worker", "--store", store, "--import", "named_handlers")
    assert result.returncode == 1, result
    # The first handler's registration opens the store: its message says what is wrong with it.
    assert "cannot open the task store" in result.stderr and "missing-directory does not exist" in result.stderr, result.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_says_what_it_serves_and_stops_on_a_signal(workers, store, stop):
    worker = start_worker(workers, store)
    worker.signal(stop)
    result = worker.finish()
    assert_clean_exit(result)
    assert f"{stop.name}: stopping" in result.stdout and "stopped" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr


def test_the_start_line_names_every_handler(workers, store):
    worker = Worker(store)
    workers.append(worker)
    line = worker.started()
    assert all(name in line for name in HANDLERS), line
    assert line.count("\n") == 1 and f"from {store}" in line


# ----- named tasks across processes ---------------------------------------------------------------


def test_another_process_submits_waits_and_long_polls_named_tasks(workers, store):
    worker = start_worker(workers, store)
    seen = client(
        store,
        """
        ran = tm.wait(tm.submit_named("where", {"chapter": 1, "big": 10**30}), timeout=30)
        failed = tm.wait(tm.submit_named("fail", {"message": "voice 'x' not found"}), timeout=30)
        steps = tm.submit_named("steps", {"count": 5})
        watched = [(s["status"], s["revision"], len(s["completed_segments"])) for s in tm.watch(steps, timeout=30)]
        print(json.dumps({"ran": ran, "failed": failed, "watched": watched, "final": tm.wait(steps, timeout=30), "me": os.getpid()}))
        """,
    )
    ran = seen["ran"]
    assert ran["status"] == "COMPLETED" and ran["handler"] == "where" and ran["attempt"] == 1
    assert ran["progress"]["pid"] == worker.pid != seen["me"], "it ran in the worker, not in the submitting process"
    assert ran["progress"]["echo"] == {"chapter": 1, "big": 10**30}
    assert seen["failed"]["status"] == "FAILED" and seen["failed"]["error"] == "RuntimeError: voice 'x' not found"
    watched = seen["watched"]
    assert watched[-1] == ["COMPLETED", seen["final"]["revision"], 5], watched
    revisions = [revision for _, revision, _ in watched]
    assert revisions == sorted(set(revisions)), "one status per change, in order"
    assert len(seen["final"]["completed_segments"]) == 5


def test_a_named_task_submitted_before_any_worker_runs_when_one_starts(workers, store):
    task_id = client(store, 'print(json.dumps(tm.submit_named("where", {"early": True})))')
    status = client(store, f"print(json.dumps(tm.get_task_status({task_id!r})))")
    assert (status["status"], status["attempt"]) == ("PENDING", 0)
    worker = start_worker(workers, store)
    final = client(store, f"print(json.dumps(tm.wait({task_id!r}, timeout=30)))")
    assert final["status"] == "COMPLETED" and final["progress"]["pid"] == worker.pid


def test_two_workers_never_run_two_tasks_at_once(workers, store, tmp_path):
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for _ in range(2):
        start_worker(workers, store)
    finals = client(
        store,
        f"""
        ids = [tm.submit_named("exclusive", {{"dir": {str(evidence)!r}, "hold": 0.01}}) for _ in range(40)]
        print(json.dumps([tm.wait(task_id, timeout=60) for task_id in ids]))
        """,
    )
    assert [final["status"] for final in finals] == ["COMPLETED"] * 40, [final["error"] for final in finals]
    assert not (evidence / "overlaps").exists(), (evidence / "overlaps").read_text()
    ran = (evidence / "ran").read_text().split("\n")[:-1]
    assert sorted(line.split()[0] for line in ran) == sorted(final["task_id"] for final in finals), "each ran once"


def test_a_worker_task_that_polls_yields_to_a_higher_priority_one_and_resumes_at_its_checkpoint(workers, store, tmp_path):
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    start_worker(workers, store)
    seen = client(
        store,
        f"""
        import time
        patient = tm.submit_named("patient", {{"dir": {str(evidence)!r}, "sentences": 5, "pause_at": 2}})
        give_up = time.monotonic() + 60
        while not os.path.exists({str(evidence / "paused")!r}):
            assert time.monotonic() < give_up, "the patient chapter never paused"
            time.sleep(0.005)
        urgent = tm.submit_named("where", {{"preview": True}}, priority=10)
        print(json.dumps({{"patient": tm.wait(patient, timeout=60), "urgent": tm.wait(urgent, timeout=60)}}))
        """,
    )
    runs = [json.loads(line) for line in lines(evidence / "runs")]
    assert runs == [
        {"from": 0, "yields": 0, "attempt": 1, "completed": []},
        {"yielded_before": 2},
        {"from": 2, "yields": 1, "attempt": 1, "completed": ["where"]},
    ], runs
    patient, urgent = seen["patient"], seen["urgent"]
    assert (patient["status"], patient["yields"], patient["attempt"], patient["checkpoint"]) == ("COMPLETED", 1, 1, {"next": 5})
    assert [segment["segment_id"] for segment in patient["completed_segments"]] == [0, 1, 2, 3, 4]
    assert (urgent["status"], urgent["priority"], urgent["yields"]) == ("COMPLETED", 10, 0)


def lines(path: Path) -> List[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_sigkill_at_random_moments_loses_no_acknowledged_segment_and_repeats_none(workers, store, tmp_path):
    """A four-chapter narration (a task per chapter, a segment per sentence) under a loop of SIGKILLs."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    chapters, sentences, kills = 4, 25, 20
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    attempts = {"NAMED_HANDLERS_MAX_ATTEMPTS": str(kills + 2)}  # every kill may land on one chapter
    ids = client(
        store,
        f"""
        tm.configure(max_attempts={kills + 2})
        payload = {{"dir": {str(evidence)!r}, "sentences": {sentences}, "sentence_seconds": 0.01}}
        print(json.dumps([tm.submit_named("narrate", dict(payload, chapter=c)) for c in range({chapters})]))
        """,
    )
    acked = evidence / "acked"
    for _ in range(kills):
        before = len(lines(acked))
        if before >= chapters * sentences:
            break
        worker = start_worker(workers, store, **attempts)
        # Kill mid-narration: once this worker has acknowledged a segment, after a random pause.
        deadline = time.monotonic() + HANG_GUARD
        while len(lines(acked)) == before and worker.process.poll() is None:
            assert time.monotonic() < deadline, f"the worker acknowledged nothing (seed {seed})"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        worker.process.kill()
        worker.process.wait()
    start_worker(workers, store, **attempts)
    outcome = client(
        store,
        f"""
        finals = [tm.wait(task_id, timeout=120) for task_id in {ids!r}]
        print(json.dumps({{"finals": finals, "stats": tm.stats()}}))
        """,
        **attempts,
    )
    finals = outcome["finals"]
    context = f"(seed {seed}, attempts {lines(evidence / 'attempts')})"
    assert [final["status"] for final in finals] == ["COMPLETED"] * chapters, f"{[final['error'] for final in finals]} {context}"
    recorded: List[str] = []
    for chapter, final in enumerate(finals):
        segment_ids = [segment["segment_id"] for segment in final["completed_segments"]]
        assert len(segment_ids) == len(set(segment_ids)), f"a segment recorded twice in chapter {chapter} {context}"
        assert set(segment_ids) == {f"{chapter}-{n}" for n in range(sentences)}, context
        recorded += segment_ids
    assert set(lines(acked)) <= set(recorded), f"an acknowledged segment was lost {context}"
    assert outcome["stats"]["completed_total"] == chapters, f"each task finished exactly once {context}"
    assert max(final["attempt"] for final in finals) > 1, f"no kill interrupted a chapter {context}"


def test_a_function_task_of_a_killed_process_fails_saying_its_process_exited(store):
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import threading
                from storyflow_tasks import get_task_manager
                tm = get_task_manager()
                started = threading.Event()
                def hold():
                    started.set()
                    threading.Event().wait()
                running = tm.submit_task(hold)
                pending = tm.submit_task(lambda: None)
                started.wait()
                print(running, pending, flush=True)
                threading.Event().wait()
                """
            ),
        ],
        cwd=TESTS_DIR,
        env=python_env(STORYFLOW_TASKS_STORE=store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        ready, _, _ = select.select([owner.stdout], [], [], HANG_GUARD)
        assert ready, "the owner never started its task"
        running, pending = owner.stdout.readline().split()
        before = client(store, f"print(json.dumps([tm.get_task_status(t)['status'] for t in ({running!r}, {pending!r})]))")
        assert before == ["PROCESSING", "PENDING"]
        owner.kill()
        owner.wait()
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.communicate()
    finals = client(store, f"print(json.dumps([tm.wait(t, timeout=60) for t in ({running!r}, {pending!r})]))")
    assert [final["status"] for final in finals] == ["FAILED", "FAILED"], finals
    assert "process exited" in finals[0]["error"], finals[0]["error"]
    assert "exited before it ran" in finals[1]["error"], finals[1]["error"]


def test_sigterm_with_a_running_handler_stops_within_the_timeout(workers, store, tmp_path):
    """A handler that ignores cancellation: the worker exits after --shutdown-timeout and another worker resumes the task."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    worker = Worker(store, "--shutdown-timeout", "0.2")
    workers.append(worker)
    worker.started()
    task_id = client(
        store,
        f"""
        payload = {{"dir": {str(evidence)!r}, "chapter": 0, "sentences": 400, "sentence_seconds": 0.01}}
        task_id = tm.submit_named("narrate", payload)
        for status in tm.watch(task_id, timeout=30):
            if status["completed_segments"]:
                break
        print(json.dumps(task_id))
        """,
    )
    worker.signal(signal.SIGTERM)
    result = worker.finish()
    assert result.returncode == 1, result
    assert "did not end within 0.2 s" in result.stderr and "resumed" in result.stderr, result.stderr
    start_worker(workers, store)
    final = client(store, f"print(json.dumps(tm.wait({task_id!r}, timeout=120)))")
    assert final["status"] == "COMPLETED" and final["attempt"] == 2, final
    segment_ids = [segment["segment_id"] for segment in final["completed_segments"]]
    assert sorted(segment_ids) == sorted({f"0-{n}" for n in range(400)}), "resumed at the next sentence, none twice"


def test_a_named_task_interrupted_max_attempts_times_fails_saying_so(workers, store, tmp_path):
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    once = {"NAMED_HANDLERS_MAX_ATTEMPTS": "1"}
    task_id = client(
        store,
        f"""
        tm.configure(max_attempts=1)
        print(json.dumps(tm.submit_named("narrate", {{"dir": {str(evidence)!r}, "chapter": 0, "sentences": 1000}})))
        """,
    )
    worker = start_worker(workers, store, **once)
    deadline = time.monotonic() + HANG_GUARD
    while not lines(evidence / "acked"):
        assert time.monotonic() < deadline and worker.process.poll() is None, "the worker acknowledged nothing"
        time.sleep(0.005)
    worker.process.kill()
    worker.process.wait()
    start_worker(workers, store, **once)
    final = client(store, f"print(json.dumps(tm.wait({task_id!r}, timeout=60)))")
    assert final["status"] == "FAILED" and final["attempt"] == 1, final
    assert "interrupted" in final["error"], final["error"]
    assert final["completed_segments"], "what the attempt recorded is kept"
