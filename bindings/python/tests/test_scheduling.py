"""Priorities, cooperative yield and deadlines, in the memory store and in an SQLite file.

Each test runs one scenario of ``scheduling_scenarios.py`` in a fresh
interpreter, once per store (``STORYFLOW_TASKS_STORE``), and asserts on what
the scenario recorded there: the order tasks ran in, their statuses, the
errors raised. The rules themselves (the order, the range of a priority, the
texts of a missed deadline) are the library's; these tests check that the
package hands them through unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import HANG_GUARD, assert_clean_exit, python_env, run_python

DEADLINE_PASSED_PENDING = "its deadline passed before it started"
DEADLINE_PASSED_RUNNING = "its deadline passed while it was running"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory" if request.param == "memory" else f"sqlite:{tmp_path / 'tasks.db'}"


def scenario(store: str, name: str) -> Dict[str, Any]:
    """Runs the scenario in an interpreter of its own on ``store``; what it recorded."""
    result = run_python(
        f"import scheduling_scenarios\nscheduling_scenarios.main({name!r})\n",
        env=python_env(STORYFLOW_TASKS_STORE=store),
        timeout=HANG_GUARD * 2,
    )
    assert_clean_exit(result)
    recorded: Dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return recorded


def test_higher_priorities_wait_ahead_and_run_first_fifo_within_one(store: str) -> None:
    seen = scenario(store, "priority_order")
    order = ["high-1", "high-2", "named-high", "mid", "low-1", "low-2", "named-low", "default", "negative"]
    assert seen["positions"] == {name: position for position, name in enumerate(order)}
    assert seen["ran"] == order
    assert seen["pending_by_priority"] == [
        {"priority": 10, "pending": 3},
        {"priority": 5, "pending": 1},
        {"priority": 0, "pending": 4},
        {"priority": -3, "pending": 1},
    ]
    assert seen["after"] == []
    assert seen["schedules"]["mid"] == {"priority": 5, "deadline": None, "yield_requested": False, "yields": 0}
    assert seen["schedules"]["default"]["priority"] == 0
    assert seen["schedules"]["named-high"]["priority"] == 10
    # Listing keeps submission order, whatever the priorities.
    assert seen["listed"] == seen["submitted_ids"]
    # The gate never polled: the waiting high priorities did not disturb it.
    assert seen["gate"] == {"status": "COMPLETED", "yields": 0, "priority": 0}


def test_options_the_library_refuses_raise_invalid_argument_naming_the_key_and_queue_nothing(store: str) -> None:
    seen = scenario(store, "bad_options")
    assert len(seen["refused"]) == 22
    for refusal in seen["refused"]:
        (key,) = refusal["options"]
        assert refusal["raised"] == "InvalidArgumentError", refusal
        assert key in refusal["message"], refusal
    assert seen["submitted_total_changed"] == 0
    assert seen["listed_changed"] == 0
    assert seen["extremes"] == [2**31 - 1, -(2**31)]


def _assert_yielded_and_resumed(seen: Dict[str, Any]) -> None:
    assert seen["running_before_urgent"] == {"status": "PROCESSING", "yield_requested": False}
    assert seen["seen"] == [False, {"status": "PROCESSING", "yield_requested": True}]
    assert seen["log"] == [
        "chapter from 0, yields 0, attempt 1",
        "chapter yields before 3",
        "urgent",
        # Back at the head of its priority: ahead of the task of its priority submitted before the urgent one.
        "chapter from 3, yields 1, attempt 1",
        "chapter done",
        "other",
    ]
    assert seen["final"] == {
        "status": "COMPLETED",
        "yields": 1,
        "attempt": 1,
        "checkpoint": {"next": 6},
        "error": None,
        "yield_requested": False,
    }
    assert seen["segments"] == [0, 1, 2, 3, 4, 5]
    assert seen["urgent"] == {"status": "COMPLETED", "yields": 0}
    assert seen["jobs_left"] == 0


def test_a_function_task_that_polls_yields_to_an_urgent_one_and_resumes_at_its_checkpoint(store: str) -> None:
    _assert_yielded_and_resumed(scenario(store, "yield_function_task"))


def test_a_coroutine_task_yields_and_resumes(store: str) -> None:
    _assert_yielded_and_resumed(scenario(store, "yield_coroutine_task"))


def test_a_named_task_yields_and_its_handler_runs_again_with_the_same_payload(store: str) -> None:
    seen = scenario(store, "yield_named_task")
    _assert_yielded_and_resumed(seen)
    assert seen["payloads"] == [{"chapter": "one"}, {"chapter": "one"}]


def test_cancellation_wins_over_a_yield(store: str) -> None:
    seen = scenario(store, "cancel_wins_over_yield")
    assert seen["final"] == {"status": "CANCELLED", "yields": 0, "cancel_requested": True}
    assert seen["jobs_left"] == 0, "the function of a task that ended is not kept"


def test_a_yielded_task_cancelled_or_past_its_deadline_before_its_next_run_never_runs_again(store: str) -> None:
    seen = scenario(store, "yielded_then_cancelled")
    assert seen["yielded"] == {"status": "PENDING", "yields": 1, "queue_position": 0}
    assert seen["cancelled_now"] is True
    assert seen["cancelled"] == {"status": "CANCELLED", "yields": 1, "error": "cancelled before it started"}
    assert seen["late"] == {"status": "FAILED", "yields": 1, "error": DEADLINE_PASSED_PENDING}
    assert seen["runs"] == ["cancelled", "late"]
    assert seen["jobs_left"] == 0, "the runner let go of both functions"


def test_yield_calls_outside_a_task_or_on_the_wrong_task_raise(store: str) -> None:
    seen = scenario(store, "yield_errors")
    assert seen["is_yield_requested outside a task"][0] == "InvalidStateError"
    assert seen["yield_task outside a task"][0] == "InvalidStateError"
    assert seen["is_yield_requested unknown"][0] == "TaskNotFoundError"
    assert seen["yield_task unknown"][0] == "TaskNotFoundError"
    assert seen["is_yield_requested pending"] == ["returned", False]
    assert seen["yield_task pending"][0] == "InvalidStateError"
    assert seen["is_yield_requested running, higher pending"] == ["returned", True]
    assert seen["is_yield_requested finished"] == ["returned", False]
    assert seen["yield_task finished"][0] == "InvalidStateError"


def test_a_deadline_that_passes_while_pending_fails_the_task_unstarted(store: str) -> None:
    seen = scenario(store, "deadline_pending")
    for name in ("seconds", "datetime", "named", "past at submit"):
        assert seen["finals"][name] == {"status": "FAILED", "error": DEADLINE_PASSED_PENDING, "started_at": None, "attempt": 0}, name
    assert seen["deadlines"]["seconds"] == seen["soon"]
    assert seen["deadlines"]["datetime"] == pytest.approx(seen["soon"], abs=1e-5)
    assert seen["far_while_gated"]["status"] == "PENDING"
    assert seen["far"] == {"status": "COMPLETED", "error": None}
    assert seen["ran"] == ["far"]
    assert seen["jobs_left"] == 0


def test_a_deadline_that_passes_while_running_requests_cancellation(store: str) -> None:
    seen = scenario(store, "deadline_running")
    assert seen["seen"] == [False, {"status": "PROCESSING", "cancel_requested": True}] * 2
    for kind in ("function", "named"):
        assert seen[kind] == {"status": "CANCELLED", "error": DEADLINE_PASSED_RUNNING, "cancel_requested": True}, kind
