"""The cross-language edge-case table, tests/cases/edge_cases.json, run in Python.

Each case listing "python" sets up a task in the given state, applies one call
of the public API to it, and checks what comes back: the outcome, the error
message, and the value at the case's path of the status, compared with
``json.loads`` of the expected wire text type for type (``True`` is not ``1``,
``1.0`` is not ``1``, big integers exact). Every case's answer is written to
``target/edge_cases_python.txt`` as ``case <name>: <result> <value>``, so the
answers of C, Python and Node can be read side by side.
"""

from __future__ import annotations

import decimal
import json
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from storyflow_tasks import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    DuplicateTaskIdError,
    InvalidArgumentError,
    InvalidStateError,
    TaskManager,
    TaskNotFoundError,
)

from conftest import HANG_GUARD, REPOSITORY

TABLE = json.loads((REPOSITORY / "tests" / "cases" / "edge_cases.json").read_text("utf-8"))
CASES = [case for case in TABLE["cases"] if "python" in case["languages"]]
ANSWERS_FILE = REPOSITORY / "target" / "edge_cases_python.txt"

# ----- the table's values as Python values ----------------------------------------------------------


def decode(value: Any) -> Any:
    """A table value with its tags turned into the Python values they stand for."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "$int":
            # Through Decimal: int() of a str is capped at 4300 digits, and 10**5000 is a case.
            return int(decimal.Decimal(inner))
        if tag == "$float":
            return float(inner)
        if tag == "$text":
            return inner
        if tag == "$lone_surrogate":
            return chr(int(inner, 16))
        if tag == "$repeat":
            return inner["text"] * inner["times"]
        if tag.startswith("$"):
            raise ValueError(f"the tag {tag} has no Python value; such a case must not list python")
    return {key: decode(item) for key, item in value.items()}


def same(actual: Any, expected: Any) -> bool:
    """Equal with the same types all the way down, and objects with their keys in the same order."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dict):
        return list(actual) == list(expected) and all(same(actual[key], expected[key]) for key in expected)
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    return bool(actual == expected)


def wire_text(value: Any) -> str:
    """The value as compact JSON, written as the library writes it (non-ASCII as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ----- a task in a state ---------------------------------------------------------------------------------


class HeldTask:
    """A Python task that runs until released, then returns, or raises ``RuntimeError(message)`` if given one."""

    def __init__(self, tm: TaskManager, task_id: Optional[str] = None) -> None:
        self._released = threading.Event()
        self._started = threading.Event()
        self.failure: Optional[str] = None
        self.task_id = tm.submit_task(self._run, task_id)

    def _run(self) -> None:
        self._started.set()
        if not self._released.wait(HANG_GUARD):
            raise TimeoutError("the held task was never released")
        if self.failure is not None:
            raise RuntimeError(self.failure)

    def wait_started(self) -> HeldTask:
        assert self._started.wait(HANG_GUARD), "the held task never started"
        return self

    def release(self) -> None:
        self._released.set()


def _fail_with_boom() -> None:
    raise RuntimeError("boom")


def set_up(tm: TaskManager, state: str, task_id: str) -> Tuple[Optional[HeldTask], List[HeldTask]]:
    """Puts task ``task_id`` in ``state``; the held task that is the case's task (if any), and every held task."""
    if state == "unknown":
        return None, []
    if state == "pending":
        holder = HeldTask(tm).wait_started()
        tm.submit_task(lambda: None, task_id)
        return None, [holder]
    if state == "completed":
        tm.submit_task(lambda: None, task_id)
        assert tm.wait(task_id, timeout=HANG_GUARD)["status"] == TASK_COMPLETED
        return None, []
    if state == "failed":
        tm.submit_task(_fail_with_boom, task_id)
        assert tm.wait(task_id, timeout=HANG_GUARD)["status"] == TASK_FAILED
        return None, []
    held = HeldTask(tm, task_id).wait_started()
    if state == "cancelled":
        assert tm.cancel(task_id) is False  # running: asked to stop; it returns when released
        held.release()
        assert tm.wait(task_id, timeout=HANG_GUARD)["status"] == TASK_CANCELLED
        return None, []
    assert state == "running", f"unknown task state {state!r} in the table"
    return held, [held]


# ----- one case -------------------------------------------------------------------------------------------


def outcome_of(error: BaseException) -> str:
    for kind, word in (
        (DuplicateTaskIdError, "duplicate_id"),
        (InvalidArgumentError, "invalid_argument"),
        (InvalidStateError, "invalid_state"),
        (TaskNotFoundError, "not_found"),
    ):
        if isinstance(error, kind):
            return word
    return f"raised {type(error).__name__}"


def apply(tm: TaskManager, case: Dict[str, Any], held: Optional[HeldTask]) -> str:
    """Applies the case's op; its outcome in the table's words (an exception is caught by the caller)."""
    op, task_id, args = case["op"], case["task_id"], decode(case["args"])
    if op == "submit":
        tm.submit_task(lambda: None, args["task_id"])
        return "ok"
    if op == "get_status":
        return "not_found" if tm.get_task_status(task_id) is None else "ok"
    if op == "update_progress":
        extra = args["extra"] or {}
        recorded = tm.update_task_progress(task_id, args["current"], args["total"], **extra)
    elif op == "add_completed_segment":
        recorded = tm.add_completed_segment(task_id, args["segment_id"], {"audio_url": args["audio_url"], "duration": args["duration"]})
    elif op == "add_error":
        recorded = tm.add_error(task_id, args["segment_id"], args["message"])
    elif op == "fail":
        assert held is not None, "a fail case acts on a running task"
        held.failure = args["message"]
        held.release()
        tm.wait(task_id, timeout=HANG_GUARD)
        return "ok"
    else:
        raise AssertionError(f"unknown op {op!r} in the table")
    return "ok" if recorded else "false"


def value_at(status: Optional[Dict[str, Any]], path: List[Any]) -> Tuple[bool, Any]:
    value: Any = status
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return False, None
    return status is not None, value


def status_of(tm: TaskManager, task_id: str) -> Optional[Dict[str, Any]]:
    """The task's status; ``None`` too for an id the package refuses to pass on (one holding NUL)."""
    try:
        status = tm.get_task_status(task_id)
    except InvalidArgumentError:
        return None
    return None if status is None else dict(status)


def check(case: Dict[str, Any], tm: TaskManager) -> Tuple[str, str, List[str]]:
    """Runs one case: its outcome, its value as text, and what differs from the table."""
    expect, task_id = case["expect"], case["task_id"]
    held, holders = set_up(tm, case["task"], task_id)
    problems: List[str] = []
    try:
        before = status_of(tm, task_id)
        message = ""
        try:
            result = apply(tm, case, held)
        except Exception as error:  # the outcome is compared with the table
            result, message = outcome_of(error), str(error)
        after = status_of(tm, task_id)
    finally:
        for each in holders:
            each.release()
    for each in holders:
        tm.wait(each.task_id, timeout=HANG_GUARD)
    if after is not None and after["status"] not in (TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED):
        tm.wait(task_id, timeout=HANG_GUARD)  # a pending case task runs once its holder is done

    if result != expect["result"]:
        problems.append(f"outcome {result} ({message}), expected {expect['result']}")
    if "message_contains" in expect and expect["message_contains"] not in message:
        problems.append(f"message {message!r} lacks {expect['message_contains']!r}")
    if expect.get("unchanged") and before != after:
        problems.append(f"the status changed:\n  {before}\n  {after}")
    shown = "-"
    if "path" in expect:
        found, value = value_at(after, expect["path"])
        text = wire_text(value) if found else ""
        shown = text if len(text) <= 120 else "…" + text[-60:]
        wire = expect.get("wire_python", expect.get("wire"))
        if not found:
            problems.append(f"nothing at {expect['path']}")
        elif wire is not None and not same(value, json.loads(wire)):
            problems.append(f"at {expect['path']}: {text}, expected {wire}")
        ends_with = expect.get("wire_ends_with_python", expect.get("wire_ends_with"))
        if ends_with is not None and not text.endswith(ends_with):
            problems.append(f"at {expect['path']}: …{text[-80:]} does not end with {ends_with}")
        if "wire_max_bytes" in expect and len(text.encode("utf-8")) > expect["wire_max_bytes"]:
            problems.append(f"at {expect['path']}: {len(text.encode('utf-8'))} bytes, over {expect['wire_max_bytes']}")
    return result, shown, problems


# ----- the cases, and their answers in one file -----------------------------------------------------------

_answers: Dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def answers_file() -> Iterator[None]:
    """Writes every case's answer, in table order, once the module's cases have run."""
    yield
    ANSWERS_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [_answers[case["name"]] for case in CASES if case["name"] in _answers]
    ANSWERS_FILE.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_the_table_has_python_cases() -> None:
    assert len(CASES) > 40
    assert len({case["name"] for case in CASES}) == len(CASES), "case names are unique"


@pytest.mark.parametrize("case", [pytest.param(case, id=case["name"]) for case in CASES])
def test_edge_case(tm: TaskManager, case: Dict[str, Any]) -> None:
    result, shown, problems = check(case, tm)
    _answers[case["name"]] = f"case {case['name']}: {result} {shown}" + ("  <- MISMATCH" if problems else "")
    assert not problems, "\n".join(problems)
