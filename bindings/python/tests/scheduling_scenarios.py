"""Priorities, cooperative yield and deadlines, each scenario run in an interpreter of its own.

``test_scheduling.py`` runs ``python -c "import scheduling_scenarios; scheduling_scenarios.main('<name>')"``
with ``STORYFLOW_TASKS_STORE`` set to the memory store or to an SQLite file, so
that every scenario sees a fresh manager and the same code runs on both
stores. A scenario records what happened (the order tasks ran in, statuses,
the errors raised) and prints it as one JSON line; the test asserts on it.
Nothing here waits for a duration: each wait ends on the event it waits for,
bounded only by a hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from storyflow_tasks import TaskManager, _runner, current_task_id, get_task_manager

#: Only a hang reaches it: every wait below ends on what it waits for.
HANG_GUARD = 30.0

#: How long a polling task sleeps between two checks, as a narration does between sentences.
SENTENCE_SECONDS = 0.005

tm: TaskManager = get_task_manager()


def _me() -> str:
    task_id = current_task_id()
    assert task_id is not None
    return task_id


def _until(condition: Callable[[], bool], what: str) -> None:
    """Polls ``condition`` between sentences until it holds; a hang guard, never a timed assertion."""
    give_up = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > give_up:
            raise TimeoutError(f"never happened: {what}")
        time.sleep(SENTENCE_SECONDS)


class Gate:
    """A task that holds the worker until opened, so that the tasks submitted meanwhile stay PENDING."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.task_id = tm.submit_task(self._hold)
        assert self.started.wait(HANG_GUARD), "the gate never started"

    def _hold(self) -> None:
        self.started.set()
        if not self.opened.wait(HANG_GUARD):
            raise TimeoutError("the gate was never opened")

    def open(self) -> Dict[str, Any]:
        self.opened.set()
        return dict(tm.wait(self.task_id, timeout=HANG_GUARD))


def _keys(status: Optional[Dict[str, Any]], *names: str) -> Dict[str, Any]:
    assert status is not None
    return {name: status[name] for name in names}


# ----- priorities -----------------------------------------------------------------------------------


def priority_order() -> Dict[str, Any]:
    """Tasks of several priorities queued behind a gate, function and named ones: the order they wait and run in."""
    ran: List[str] = []
    tm.register_handler("record", lambda payload: ran.append(payload))
    gate = Gate()
    submitted = [
        ("low-1", 0),
        ("high-1", 10),
        ("low-2", 0),
        ("mid", 5),
        ("high-2", 10),
        ("negative", -3),
        ("named-high", 10),
        ("named-low", 0),
    ]
    ids = {}
    for name, priority in submitted:
        if name.startswith("named"):
            ids[name] = tm.submit_named("record", name, f"{name}-task", priority=priority)
        else:
            ids[name] = tm.submit_task(lambda name=name: ran.append(name), task_id=f"{name}-task", priority=priority)
    default = tm.submit_task(lambda: ran.append("default"))  # priority 0 when none is given
    ids["default"] = default
    positions = {name: tm.get_task_status(task_id)["queue_position"] for name, task_id in ids.items()}
    schedules = {
        name: _keys(tm.get_task_status(task_id), "priority", "deadline", "yield_requested", "yields") for name, task_id in ids.items()
    }
    pending_by_priority = tm.stats()["pending_by_priority"]
    listed = [status["task_id"] for status in tm.list_tasks("PENDING")]
    gate_final = gate.open()
    for task_id in ids.values():
        tm.wait(task_id, timeout=HANG_GUARD)
    return {
        "positions": positions,
        "schedules": schedules,
        "pending_by_priority": pending_by_priority,
        "listed": listed,
        "submitted_ids": [ids[name] for name, _ in submitted] + [default],
        "ran": ran,
        "gate": _keys(gate_final, "status", "yields", "priority"),
        "after": tm.stats()["pending_by_priority"],
    }


def bad_options() -> Dict[str, Any]:
    """Every refused option: the exception type, its message; and nothing queued by any of them."""
    tm.register_handler("never", lambda payload: None)
    before_total = tm.stats()["submitted_total"]
    before_listed = len(tm.list_tasks())
    naive = datetime.datetime.now() + datetime.timedelta(hours=1)
    cases: List[Dict[str, Any]] = [
        {"priority": 1.5},
        {"priority": "high"},
        {"priority": 2**31},
        {"priority": -(2**31) - 1},
        {"priority": True},
        {"priority": None},
        {"deadline": -1},
        {"deadline": "soon"},
        {"deadline": float("nan")},
        {"deadline": float("inf")},
        {"deadline": naive},
    ]
    refused = []
    for options in cases:
        for call in ("submit_task", "submit_named"):
            shown = {key: repr(value) for key, value in options.items()}
            try:
                if call == "submit_task":
                    tm.submit_task(lambda: None, **options)
                else:
                    tm.submit_named("never", None, **options)
                refused.append({"call": call, "options": shown, "raised": None})
            except Exception as error:  # the type is what is checked
                refused.append({"call": call, "options": shown, "raised": type(error).__name__, "message": str(error)})
    return {
        "refused": refused,
        "submitted_total_changed": tm.stats()["submitted_total"] - before_total,
        "listed_changed": len(tm.list_tasks()) - before_listed,
        # The extremes of the range are accepted.
        "extremes": [
            tm.get_task_status(tm.submit_task(lambda: None, priority=2**31 - 1))["priority"],
            tm.get_task_status(tm.submit_task(lambda: None, priority=-(2**31)))["priority"],
        ],
    }


# ----- cooperative yield ----------------------------------------------------------------------------


class Chapter:
    """A chapter of sentences that polls ``is_yield_requested`` between them and yields when asked.

    On its first run it stops polling nowhere: after ``pause_at`` sentences it
    says so (``paused``) and polls until asked to yield, so that the test can
    submit the urgent task at that moment.
    """

    def __init__(self, sentences: int, pause_at: int, log: List[str]) -> None:
        self.sentences = sentences
        self.pause_at = pause_at
        self.log = log
        self.paused = threading.Event()
        self.seen_while_waiting: List[Any] = []

    def run(self) -> None:
        me = _me()
        status = tm.get_task_status(me)
        assert status is not None
        start = (status["checkpoint"] or {"next": 0})["next"]
        self.log.append(f"chapter from {start}, yields {status['yields']}, attempt {status['attempt']}")
        for sentence in range(start, self.sentences):
            if sentence == self.pause_at and status["yields"] == 0:
                self.seen_while_waiting.append(tm.is_yield_requested())
                self.paused.set()
                _until(tm.is_yield_requested, "a yield request")
            if tm.is_yield_requested():
                self.seen_while_waiting.append(_keys(tm.get_task_status(me), "status", "yield_requested"))
                self.log.append(f"chapter yields before {sentence}")
                tm.yield_task()
                return
            tm.add_completed_segment(me, sentence, {"audio_url": f"/audio/{sentence}.wav", "duration": 0.2})
            tm.set_checkpoint(me, {"next": sentence + 1})
        self.log.append("chapter done")

    async def run_async(self) -> None:
        await asyncio.sleep(0)
        self.run()


def _yield_and_resume(submit_chapter: Callable[[Chapter], str]) -> Dict[str, Any]:
    log: List[str] = []
    chapter = Chapter(6, 3, log)
    chapter_id = submit_chapter(chapter)
    assert chapter.paused.wait(HANG_GUARD), "the chapter never reached its pause"
    running = _keys(tm.get_task_status(chapter_id), "status", "yield_requested")
    # Submitted before the urgent task, at the chapter's priority: the yielded chapter goes ahead of it.
    other = tm.submit_task(lambda: log.append("other"), priority=0)
    urgent = tm.submit_task(lambda: log.append("urgent"), priority=10)
    final = tm.wait(chapter_id, timeout=HANG_GUARD)
    tm.wait(other, timeout=HANG_GUARD)
    urgent_final = tm.wait(urgent, timeout=HANG_GUARD)
    return {
        "log": log,
        "running_before_urgent": running,
        "seen": chapter.seen_while_waiting,
        "final": _keys(final, "status", "yields", "attempt", "checkpoint", "error", "yield_requested"),
        "segments": [segment["segment_id"] for segment in final["completed_segments"]],
        "urgent": _keys(urgent_final, "status", "yields"),
        "jobs_left": _jobs_left(),
    }


def _jobs_left() -> int:
    """How many Python functions the runner still keeps for tasks that have not run, once it let go of those that ended.

    A task the library ends while it waits is let go of when the library hands
    it back, or when the runner next looks for such tasks: waited for here.
    """
    runner = _runner._state.runner
    if runner is None:
        return 0
    with contextlib.suppress(TimeoutError):  # the count says what was left
        _until(lambda: not runner._jobs, "the runner letting go of the functions of ended tasks")
    return len(runner._jobs)


def yield_function_task() -> Dict[str, Any]:
    """A function task yields to an urgent one and runs again from its checkpoint."""
    return _yield_and_resume(lambda chapter: tm.submit_task(chapter.run, priority=0))


def yield_coroutine_task() -> Dict[str, Any]:
    """A coroutine task, finished on its loop's thread, yields and runs again."""
    result: Dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        result = _yield_and_resume(lambda chapter: tm.submit_task(chapter.run_async, priority=0, loop=loop))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(HANG_GUARD)
    return result


def yield_named_task() -> Dict[str, Any]:
    """A named task yields to an urgent one, and its handler runs again with the same payload and its checkpoint."""
    chapters: Dict[str, Chapter] = {}
    payloads: List[Any] = []

    def narrate(payload: Any) -> None:
        payloads.append(payload)
        chapters[payload["chapter"]].run()

    tm.register_handler("narrate", narrate)

    def submit(chapter: Chapter) -> str:
        chapters["one"] = chapter
        return tm.submit_named("narrate", {"chapter": "one"}, priority=0)

    result = _yield_and_resume(submit)
    result["payloads"] = payloads
    return result


def cancel_wins_over_yield() -> Dict[str, Any]:
    """A task asked to cancel that yields anyway ends CANCELLED, and the runner lets go of its function."""

    def cancelled_then_yields() -> None:
        me = _me()
        tm.cancel(me)
        tm.yield_task(me)

    task_id = tm.submit_task(cancelled_then_yields)
    final = tm.wait(task_id, timeout=HANG_GUARD)
    return {"final": _keys(final, "status", "yields", "cancel_requested"), "jobs_left": _jobs_left()}


def yielded_then_cancelled() -> Dict[str, Any]:
    """A task that yielded and waits again is cancelled, or misses its deadline, before its next run: it never runs again."""
    runs: List[str] = []
    urgent_started = threading.Event()
    urgent_release = threading.Event()

    def urgent() -> None:
        urgent_started.set()
        assert urgent_release.wait(HANG_GUARD), "the urgent task was never released"

    def polite(name: str) -> Callable[[], None]:
        def run() -> None:
            runs.append(name)
            _until(tm.is_yield_requested, "a yield request")
            tm.yield_task()

        return run

    cancelled = tm.submit_task(polite("cancelled"), priority=0)
    _until(lambda: runs == ["cancelled"], "the first task's start")
    first_urgent = tm.submit_task(urgent, priority=10)
    assert urgent_started.wait(HANG_GUARD), "the urgent task never started"
    yielded = _keys(tm.get_task_status(cancelled), "status", "yields", "queue_position")
    cancelled_now = tm.cancel(cancelled)
    urgent_release.set()
    tm.wait(first_urgent, timeout=HANG_GUARD)

    urgent_started.clear()
    urgent_release.clear()
    late = tm.submit_task(polite("late"), priority=0, deadline=time.time() + 1.0)
    _until(lambda: runs == ["cancelled", "late"], "the second task's start")
    second_urgent = tm.submit_task(urgent, priority=10)
    assert urgent_started.wait(HANG_GUARD), "the urgent task never started"
    late_final = tm.wait(late, timeout=HANG_GUARD)  # its deadline passes while it waits behind the urgent task
    urgent_release.set()
    tm.wait(second_urgent, timeout=HANG_GUARD)
    return {
        "yielded": yielded,
        "cancelled_now": cancelled_now,
        "cancelled": _keys(tm.get_task_status(cancelled), "status", "yields", "error"),
        "late": _keys(late_final, "status", "yields", "error"),
        "runs": runs,
        "jobs_left": _jobs_left(),
    }


def yield_errors() -> Dict[str, Any]:
    """The errors of is_yield_requested and yield_task, outside a task and for tasks in the wrong state."""
    outcomes: Dict[str, Any] = {}

    def attempt(name: str, call: Callable[[], Any]) -> None:
        try:
            outcomes[name] = ["returned", call()]
        except Exception as error:  # the type is what is checked
            outcomes[name] = [type(error).__name__, str(error)]

    attempt("is_yield_requested outside a task", tm.is_yield_requested)
    attempt("yield_task outside a task", tm.yield_task)
    attempt("is_yield_requested unknown", lambda: tm.is_yield_requested("no-such-task"))
    attempt("yield_task unknown", lambda: tm.yield_task("no-such-task"))
    gate = Gate()
    pending = tm.submit_task(lambda: None, priority=5)
    attempt("is_yield_requested pending", lambda: tm.is_yield_requested(pending))
    attempt("yield_task pending", lambda: tm.yield_task(pending))
    attempt("is_yield_requested running, higher pending", lambda: tm.is_yield_requested(gate.task_id))
    gate.open()
    tm.wait(pending, timeout=HANG_GUARD)
    attempt("is_yield_requested finished", lambda: tm.is_yield_requested(pending))
    attempt("yield_task finished", lambda: tm.yield_task(pending))
    return outcomes


# ----- deadlines ------------------------------------------------------------------------------------


def deadline_pending() -> Dict[str, Any]:
    """Deadlines that pass while the tasks wait behind a busy worker: FAILED, never started, the wait returns."""
    ran: List[str] = []
    tm.register_handler("late", lambda payload: ran.append("named"))
    gate = Gate()
    soon = time.time() + 0.3
    as_datetime = datetime.datetime.fromtimestamp(soon, tz=datetime.timezone(datetime.timedelta(hours=2)))
    ids = {
        "seconds": tm.submit_task(lambda: ran.append("seconds"), deadline=soon),
        "datetime": tm.submit_task(lambda: ran.append("datetime"), deadline=as_datetime),
        "named": tm.submit_named("late", None, deadline=soon, priority=3),
        "past at submit": tm.submit_task(lambda: ran.append("past"), deadline=time.time() - 60),
        "far": tm.submit_task(lambda: ran.append("far"), deadline=time.time() + 3600),
    }
    deadlines = {name: tm.get_task_status(task_id)["deadline"] for name, task_id in ids.items()}
    # Each wait ends while the gate still holds the worker: the deadline, not the worker, ends them.
    finals = {name: tm.wait(task_id, timeout=HANG_GUARD) for name, task_id in ids.items() if name != "far"}
    still_pending = _keys(tm.get_task_status(ids["far"]), "status", "deadline")
    gate.open()
    far = tm.wait(ids["far"], timeout=HANG_GUARD)
    return {
        "soon": soon,
        "deadlines": deadlines,
        "finals": {name: _keys(status, "status", "error", "started_at", "attempt") for name, status in finals.items()},
        "far_while_gated": still_pending,
        "far": _keys(far, "status", "error"),
        "ran": ran,
        "jobs_left": _jobs_left(),
    }


def deadline_running() -> Dict[str, Any]:
    """A deadline that passes while the task runs: cancellation is requested, and it ends CANCELLED."""
    seen: List[Any] = []

    def until_cancelled() -> None:
        me = _me()
        seen.append(tm.is_cancel_requested(me))
        _until(lambda: tm.is_cancel_requested(me), "the deadline's cancel request")
        seen.append(_keys(tm.get_task_status(me), "status", "cancel_requested"))

    tm.register_handler("long", lambda payload: until_cancelled())
    function_task = tm.submit_task(until_cancelled, deadline=time.time() + 0.3)
    function_final = tm.wait(function_task, timeout=HANG_GUARD)
    named_task = tm.submit_named("long", None, deadline=time.time() + 0.3)
    named_final = tm.wait(named_task, timeout=HANG_GUARD)
    return {
        "seen": seen,
        "function": _keys(function_final, "status", "error", "cancel_requested"),
        "named": _keys(named_final, "status", "error", "cancel_requested"),
    }


SCENARIOS: Dict[str, Callable[[], Dict[str, Any]]] = {
    function.__name__: function
    for function in (
        priority_order,
        bad_options,
        yield_function_task,
        yield_coroutine_task,
        yield_named_task,
        cancel_wins_over_yield,
        yielded_then_cancelled,
        yield_errors,
        deadline_pending,
        deadline_running,
    )
}


def main(name: str) -> None:
    """Runs one scenario and prints what it recorded as the last line of stdout."""
    result = SCENARIOS[name]()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
