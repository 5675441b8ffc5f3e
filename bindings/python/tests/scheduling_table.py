"""The cross-language scheduling table, tests/cases/scheduling.json, run by the Python package.

The table's tasks are C external tasks: PROCESSING once the worker reaches
them, holding it until the table finishes them. Here each is a Python task
function that, on every run, holds the worker until the table sends it
``finish`` (it then returns). A ``yield`` step calls ``tm.yield_task(id)``
from the table's thread, for the task, then finishes it, as the C runner
calls ``sft_yield_task`` and ``sft_finish_task``. ``test_scheduling_table.py``
runs the cases in its own process (the memory store) and, through ``main``,
in an interpreter on an SQLite file.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from storyflow_tasks import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    DuplicateTaskIdError,
    InvalidArgumentError,
    InvalidStateError,
    TaskManager,
    TaskNotFoundError,
    get_task_manager,
)

#: Only a hang reaches it: every wait ends on the change it waits for.
HANG_GUARD = 30.0

TABLE_PATH = Path(__file__).resolve().parents[3] / "tests" / "cases" / "scheduling.json"
FINISHED = (TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED)


def python_cases() -> List[Dict[str, Any]]:
    """The table's cases that list Python, in table order."""
    table = json.loads(TABLE_PATH.read_text("utf-8"))
    return [case for case in table["cases"] if "python" in case["languages"]]


def same(actual: Any, expected: Any) -> bool:
    """JSON equality: numbers by value (1 and 1.0 alike, as C's cJSON_Compare), booleans only equal booleans."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return bool(actual == expected)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(same(actual[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    return type(actual) is type(expected) and bool(actual == expected)


def mismatches(found: Optional[Dict[str, Any]], expect: Dict[str, Any]) -> List[str]:
    """The fields of ``expect`` that ``found`` does not hold, described."""
    if found is None:
        return ["there is no such task"]
    return [
        f"{key} is {found.get(key)!r}, not {value!r}" for key, value in expect.items() if key not in found or not same(found[key], value)
    ]


def outcome_of(error: BaseException) -> str:
    """An exception in the table's words: the lower-case result name."""
    for kind, word in (
        (InvalidArgumentError, "invalid_argument"),
        (InvalidStateError, "invalid_state"),
        (TaskNotFoundError, "not_found"),
        (DuplicateTaskIdError, "duplicate_id"),
    ):
        if isinstance(error, kind):
            return word
    return f"raised {type(error).__name__}: {error}"


class HeldTask:
    """A table task: each run holds the worker until the table sends ``finish``."""

    def __init__(self) -> None:
        self.commands: queue.Queue[str] = queue.Queue()

    def run(self) -> None:
        try:
            command = self.commands.get(timeout=HANG_GUARD)
        except queue.Empty:
            raise TimeoutError("the table never finished this run") from None
        assert command == "finish", command


class Table:
    """Runs the table's steps on one manager, for the tasks of one case at a time."""

    def __init__(self, tm: TaskManager) -> None:
        self.tm = tm
        self.held: Dict[str, HeldTask] = {}

    def _status(self, task_id: str) -> Optional[Dict[str, Any]]:
        status = self.tm.get_task_status(task_id)
        return None if status is None else dict(status)

    def _until(self, task_id: str, done: Callable[[Dict[str, Any]], bool]) -> Optional[Dict[str, Any]]:
        """Follows the task's changes (a long-poll) until ``done(status)`` holds or it is final; its status then.

        Each condition waited for here lasts once it holds (a held task stays
        PROCESSING until the table finishes it), so coalesced changes lose none.
        """
        last: Optional[Dict[str, Any]] = None
        try:
            for status in self.tm.watch(task_id, timeout=HANG_GUARD):
                last = dict(status)
                if done(last):
                    break
        except TaskNotFoundError:
            return None
        return last

    def _end_run(self, task_id: str) -> Optional[str]:
        """Lets the running task return, and waits until its run's end is recorded (final, or yielded)."""
        before = self._status(task_id)
        if before is None or task_id not in self.held:
            return f"{task_id} is not a task of the table"
        self.held[task_id].commands.put("finish")
        after = self._until(task_id, lambda status: status["yields"] > before["yields"] or status["status"] in FINISHED)
        return None if after is not None else f"{task_id} left the registry"

    def step(self, step: Dict[str, Any]) -> Optional[str]:
        """Runs one step; ``None`` if it went as the table says, else what differed."""
        tm = self.tm
        expect = step.get("expect")
        if "submit" in step:
            task_id = step["submit"]
            options = dict(step.get("options") or {})
            if "deadline_in" in options:
                options["deadline"] = time.time() + options.pop("deadline_in")
            held = HeldTask()
            try:
                tm.submit_task(held.run, task_id, **options)
                outcome = "ok"
                self.held[task_id] = held
            except Exception as error:  # the outcome is compared with the table
                outcome, message = outcome_of(error), str(error)
            wanted = step.get("expect_error", "ok")
            if outcome != wanted:
                return f"submit {task_id}: {outcome}, expected {wanted}"
            if "message_contains" in step and step["message_contains"] not in message:
                return f"submit {task_id}: {message!r} lacks {step['message_contains']!r}"
            return None
        if "started" in step:
            status = self._until(step["started"], lambda status: status["status"] == "PROCESSING")
            return None if status is not None and status["status"] == "PROCESSING" else f"never started: {status}"
        if "finish" in step:
            return self._end_run(step["finish"])
        if "yield" in step:
            task_id = step["yield"]
            try:
                tm.yield_task(task_id)
            except Exception as error:  # the outcome is compared with the table
                outcome = outcome_of(error)
                return None if outcome == step.get("expect_error") else f"yield {task_id}: {outcome}"
            if "expect_error" in step:
                return f"yield {task_id}: ok, expected {step['expect_error']}"
            return self._end_run(task_id)
        if "cancel" in step:
            tm.cancel(step["cancel"])
            return None
        if "status" in step:
            problems = mismatches(self._status(step["status"]), expect)
            return "; ".join(problems) or None
        if "until" in step:
            status = self._until(step["until"], lambda status: not mismatches(status, expect))
            return "; ".join(mismatches(status, expect)) or None
        if "finished" in step:
            problems = mismatches(dict(tm.wait(step["finished"], timeout=HANG_GUARD)), expect)
            return "; ".join(problems) or None
        if "yield_requested" in step:
            requested = tm.is_yield_requested(step["yield_requested"])
            return None if requested is expect else f"is_yield_requested is {requested}, not {expect}"
        if "missing" in step:
            status = self._status(step["missing"])
            return None if status is None else f"{step['missing']} exists: {status}"
        if "stats" in step:
            return "; ".join(mismatches(tm.stats(), step["stats"])) or None
        return f"unknown step {step}"

    def run_case(self, case: Dict[str, Any]) -> Optional[str]:
        """Runs a case's steps in order; ``None`` if each went as the table says, else the first that did not."""
        self.held = {}
        try:
            for index, step in enumerate(case["steps"]):
                try:
                    problem = self.step(step)
                except Exception as error:  # reported as the step's failure
                    problem = f"raised {type(error).__name__}: {error}"
                if problem is not None:
                    return f"step {index} {json.dumps(step)}: {problem}"
            return None
        finally:
            self._release()

    def _release(self) -> None:
        """Ends every task the case left behind (only after a failed step), so the next case has the worker."""
        for task_id, held in self.held.items():
            status = self._status(task_id)
            if status is None or status["status"] in FINISHED:
                continue
            if status["status"] == "PENDING":
                self.tm.cancel(task_id)
            else:
                self.tm.cancel(task_id)
                held.commands.put("finish")
                self.tm.wait(task_id, timeout=HANG_GUARD)


def main() -> None:
    """Runs every Python case on this interpreter's store; prints ``{name: problem or null}`` as the last line."""
    table = Table(get_task_manager())
    results = {case["name"]: table.run_case(case) for case in python_cases()}
    sys.stdout.write(json.dumps(results) + "\n")
    sys.stdout.flush()
