"""What a Python user expects: exception texts, kept types, clear errors for bad input, re-entrancy."""

from __future__ import annotations

import builtins
import math
import re
from pathlib import Path
from typing import Dict

import pytest

import storyflow_tasks
from storyflow_tasks import (
    TASK_COMPLETED,
    TASK_FAILED,
    DuplicateTaskIdError,
    InternalLibraryError,
    InvalidArgumentError,
    InvalidStateError,
    QueueFullError,
    ShutDownError,
    StoryflowTasksError,
    TaskNotFoundError,
    TaskTimeoutError,
    current_task_id,
)
from storyflow_tasks._errors import error_for_code
from storyflow_tasks._native import native

from conftest import HANG_GUARD, assert_clean_exit, run_python


def run_to_end(tm, function):
    return tm.wait(tm.submit_task(function), timeout=HANG_GUARD)


# ----- exceptions in the task function ---------------------------------------------------------


class VoiceNotFound(Exception):
    pass


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValueError("bad sample rate"), "ValueError: bad sample rate"),
        (VoiceNotFound("narrator-2"), "VoiceNotFound: narrator-2"),
        (KeyError("voice"), "KeyError: 'voice'"),
        (RuntimeError(), "RuntimeError"),
        (SystemExit(3), "SystemExit: 3"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
)
def test_an_exception_fails_the_task_with_its_type_and_message(tm, error, expected):
    def raises():
        raise error

    final = run_to_end(tm, raises)
    assert final["status"] == TASK_FAILED
    assert final["error"] == expected


def test_the_runner_survives_failing_tasks(tm):
    def exits():
        raise SystemExit(1)

    run_to_end(tm, exits)
    assert run_to_end(tm, lambda: None)["status"] == TASK_COMPLETED


def test_an_exception_text_is_kept_exactly(tm):
    text = 'quote " backslash \\ newline \n tab \t unicode é 漢字 🎙 and a NUL \x00 inside'

    def raises():
        raise ValueError(text)

    assert run_to_end(tm, raises)["error"] == "ValueError: " + text.replace("\x00", "\\x00")


def test_an_exception_text_over_the_message_limit_is_shortened_not_stuck(tm):
    limit = tm.get_config()["max_message_bytes"]

    def raises():
        raise ValueError("é" * limit)

    final = run_to_end(tm, raises)
    assert final["status"] == TASK_FAILED
    assert final["error"].startswith("ValueError: éé") and final["error"].endswith("[...]")
    assert len(final["error"].encode()) <= limit


def test_a_plain_function_that_returns_a_coroutine_fails_clearly(tm):
    async def later():
        return 1

    final = run_to_end(tm, lambda: later())
    assert final["status"] == TASK_FAILED
    assert final["error"].startswith("TypeError: the task function returned an awaitable")


# ----- types kept ---------------------------------------------------------------------------------


def test_a_segment_id_keeps_its_type(tm):
    task_id = tm.submit_task(lambda: None)
    tm.add_completed_segment(task_id, 7, {"audio_url": "/7.wav", "duration": 1.0})
    tm.add_completed_segment(task_id, "7", {"audio_url": "/7b.wav", "duration": 1.0})
    tm.add_completed_segment(task_id, -(2**63), {"audio_url": "/min.wav", "duration": 0})
    tm.add_error(task_id, 8, "int id")
    tm.add_error(task_id, "intro-1", "str id")
    status = tm.wait(task_id, timeout=HANG_GUARD)
    ids = [segment["segment_id"] for segment in status["completed_segments"]]
    assert ids == [7, "7", -(2**63)] and [type(i) for i in ids] == [int, str, int]
    assert [(e["segment_id"], type(e["segment_id"])) for e in status["errors"]] == [(8, int), ("intro-1", str)]


def test_progress_kwargs_keep_their_json_types(tm):
    task_id = tm.submit_task(lambda: None)
    extra = {
        "current_segment_id": 7,
        "segment_name": "intro",
        "ratio": 0.25,
        "final": False,
        "voice": None,
        "speakers": ["a", "b"],
        "meta": {"lang": "fr", "rate": 1.5, "nested": [1, {"x": "漢字"}]},
    }
    tm.update_task_progress(task_id, 1, 4, **extra)
    progress = tm.get_task_status(task_id)["progress"]
    assert progress == {"current": 1, "total": 4, "percentage": 25, **extra}
    assert type(progress["ratio"]) is float and progress["final"] is False and progress["voice"] is None
    tm.wait(task_id, timeout=HANG_GUARD)


def test_strings_round_trip_exactly(tm):
    odd = 'id "quoted" \\ \n\t é 漢字 🎙 \u2028 end'
    task_id = tm.submit_task(lambda: None, task_id=f"task {odd}")
    tm.add_completed_segment(task_id, odd, {"audio_url": f"/media/{odd}.wav", "duration": 0.1})
    tm.add_error(task_id, odd, f"message {odd}")
    status = tm.wait(task_id, timeout=HANG_GUARD)
    assert status["task_id"] == f"task {odd}"
    assert status["completed_segments"][0] == {"segment_id": odd, "audio_url": f"/media/{odd}.wav", "duration": 0.1}
    assert status["errors"][0] == {"segment_id": odd, "error": f"message {odd}"}


# ----- errors for bad input -------------------------------------------------------------------------


def test_a_duplicate_id_raises_value_error_and_leaves_the_first_task_alone(tm, gate):
    gate().wait_started()
    ran = []
    task_id = tm.submit_task(lambda: ran.append("first"), task_id="chapter-dup")
    before = tm.get_task_status(task_id)
    with pytest.raises(DuplicateTaskIdError) as raised:
        tm.submit_task(lambda: ran.append("second"), task_id="chapter-dup")
    assert isinstance(raised.value, ValueError)
    assert "chapter-dup" in str(raised.value) and "SFT_ERR_DUPLICATE_ID" in str(raised.value)
    assert tm.get_task_status(task_id) == before


def test_a_non_callable_raises_type_error_and_registers_nothing(tm):
    before = tm.stats()["submitted_total"]
    for not_callable in (None, 42, "print", [lambda: None]):
        with pytest.raises(TypeError, match="callable"):
            tm.submit_task(not_callable)
    assert tm.stats()["submitted_total"] == before


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda tm, t: tm.submit_task(lambda: None, task_id=5), TypeError),
        (lambda tm, t: tm.submit_task(lambda: None, task_id=""), InvalidArgumentError),
        (lambda tm, t: tm.submit_task(lambda: None, task_id="x" * 10_000), InvalidArgumentError),
        (lambda tm, t: tm.submit_task(lambda: None, task_id="nul\x00inside"), InvalidArgumentError),
        (lambda tm, t: tm.submit_task(lambda: None, task_id="\udc80 lone surrogate"), InvalidArgumentError),
        (lambda tm, t: tm.get_task_status(None), TypeError),
        (lambda tm, t: tm.update_task_progress(t, -1, 3), InvalidArgumentError),
        (lambda tm, t: tm.update_task_progress(t, 1.5, 3), TypeError),
        (lambda tm, t: tm.update_task_progress(t, 1, 2**64), InvalidArgumentError),
        (lambda tm, t: tm.update_task_progress(t, 10**5000, 2), InvalidArgumentError),
        (lambda tm, t: tm.update_task_progress(t, 1, -(10**5000)), InvalidArgumentError),
        (lambda tm, t: tm.update_task_progress(t, 1, 3, big=10**5000), InvalidArgumentError),
        (lambda tm, t: tm.add_error(t, 10**5000, "too many digits to write"), InvalidArgumentError),
        (lambda tm, t: tm.update_task_progress(t, 1, 3, percentage=5), InvalidArgumentError),
        (lambda tm, t: tm.update_task_progress(t, 1, 3, bad=object()), TypeError),
        (lambda tm, t: tm.update_task_progress(t, 1, 3, ratio=math.nan), InvalidArgumentError),
        (lambda tm, t: tm.add_completed_segment(t, 1.5, {"audio_url": "/a", "duration": 1}), TypeError),
        (lambda tm, t: tm.add_completed_segment(t, True, {"audio_url": "/a", "duration": 1}), TypeError),
        (lambda tm, t: tm.add_completed_segment(t, 2**70, {"audio_url": "/a", "duration": 1}), InvalidArgumentError),
        (lambda tm, t: tm.add_completed_segment(t, 1, {"audio_url": "/a", "duration": -1}), InvalidArgumentError),
        (lambda tm, t: tm.add_completed_segment(t, 1, {"audio_url": "/a", "duration": math.inf}), InvalidArgumentError),
        (lambda tm, t: tm.add_completed_segment(t, 1, {"audio_url": "/a", "duration": "2s"}), TypeError),
        (lambda tm, t: tm.add_completed_segment(t, 1, {"audio_url": "/a"}), InvalidArgumentError),
        (lambda tm, t: tm.add_completed_segment(t, 1, ("/a", 1.0)), TypeError),
        (lambda tm, t: tm.add_completed_segment(t, 1, {"audio_url": "/" * 100_000, "duration": 1}), InvalidArgumentError),
        (lambda tm, t: tm.add_error(t, 1, None), TypeError),
        (lambda tm, t: tm.add_error(t, 1, "x" * 1_000_000), InvalidArgumentError),
        (lambda tm, t: tm.wait(t, timeout=-1), InvalidArgumentError),
        (lambda tm, t: tm.wait(t, timeout="soon"), TypeError),
        (lambda tm, t: tm.list_tasks("DONE"), InvalidArgumentError),
        (lambda tm, t: tm.configure(no_such_setting=1), InvalidArgumentError),
    ],
)
def test_bad_input_raises_a_clear_error_and_changes_nothing(tm, gate, call, error):
    gate().wait_started()
    task_id = tm.submit_task(lambda: None)
    before = tm.get_task_status(task_id)
    submitted = tm.stats()["submitted_total"]
    with pytest.raises(error) as raised:
        call(tm, task_id)
    assert str(raised.value)
    assert tm.get_task_status(task_id) == before
    assert tm.stats()["submitted_total"] == submitted


def test_a_full_queue_raises_its_own_exception():
    result = run_python(
        """
        import threading
        from storyflow_tasks import get_task_manager, QueueFullError, StoryflowTasksError
        tm = get_task_manager()
        tm.configure(max_pending_tasks=2)
        release = threading.Event()
        started = threading.Event()
        def hold():
            started.set()
            release.wait(30)
        tm.submit_task(hold)
        assert started.wait(30)
        tm.submit_task(lambda: None)
        tm.submit_task(lambda: None)
        try:
            tm.submit_task(lambda: None, task_id="third")
        except QueueFullError as error:
            assert isinstance(error, StoryflowTasksError) and not isinstance(error, ValueError)
            print("full:", error)
        assert tm.get_task_status("third") is None
        release.set()
        """
    )
    assert_clean_exit(result)
    assert "full:" in result.stdout and "SFT_ERR_QUEUE_FULL" in result.stdout


def test_every_result_code_maps_to_its_own_exception_class():
    lib = native()
    expected = {
        1: (TaskNotFoundError, LookupError),
        2: (InvalidArgumentError, ValueError),
        3: (DuplicateTaskIdError, ValueError),
        4: (QueueFullError, RuntimeError),
        5: (ShutDownError, RuntimeError),
        6: (InvalidStateError, RuntimeError),
        7: (TaskTimeoutError, TimeoutError),
        8: (InternalLibraryError, RuntimeError),
    }
    for code, (cls, builtin) in expected.items():
        error = error_for_code(code, "message")
        assert type(error) is cls and isinstance(error, builtin) and isinstance(error, StoryflowTasksError)
        assert error.code == code and error.code_name == lib.result_name(code)
    unknown = error_for_code(99, "message")
    assert type(unknown) is StoryflowTasksError and unknown.code == 99


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_error_table() -> Dict[str, str]:
    """The README's "Errors" table: exception class name -> the built-in base it names."""
    section = README.read_text("utf-8").split("## Errors", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", section, re.MULTILINE))


def test_each_exception_class_derives_from_the_builtin_its_documentation_names():
    documented = readme_error_table()
    exported = {
        name
        for name in storyflow_tasks.__all__
        if isinstance(getattr(storyflow_tasks, name), type)
        and issubclass(getattr(storyflow_tasks, name), StoryflowTasksError)
        and name != "StoryflowTasksError"
    }
    assert set(documented) == exported, "the README lists every exception class, and only those"
    for name, builtin_name in documented.items():
        cls = getattr(storyflow_tasks, name)
        builtin = getattr(builtins, builtin_name)
        assert StoryflowTasksError in cls.__mro__, name
        # The one built-in among its bases is the documented one (the rest of the MRO is what that implies).
        builtin_bases = [base for base in cls.__bases__ if base.__module__ == "builtins"]
        assert builtin_bases == [builtin], f"{name} derives from {builtin_bases}, the README says {builtin_name}"
        assert cls.__mro__.index(builtin) > cls.__mro__.index(StoryflowTasksError)


@pytest.mark.parametrize(
    "call",
    [
        lambda tm: tm.submit_task(lambda: None, task_id="nul\x00inside"),
        lambda tm: tm.get_task_status("nul\x00inside"),
        lambda tm: tm.update_task_progress("nul\x00inside", 1, 2),
        lambda tm: tm.add_completed_segment("nul\x00inside", 1, {"audio_url": "/a.wav", "duration": 1.0}),
        lambda tm: tm.add_error("nul\x00inside", 1, "message"),
        lambda tm: tm.cancel("nul\x00inside"),
        lambda tm: tm.is_cancel_requested("nul\x00inside"),
        lambda tm: tm.wait("nul\x00inside", timeout=0),
        lambda tm: tm.watch("nul\x00inside"),
    ],
    ids=[
        "submit_task",
        "get_task_status",
        "update_task_progress",
        "add_completed_segment",
        "add_error",
        "cancel",
        "is_cancel_requested",
        "wait",
        "watch",
    ],
)
def test_a_task_id_holding_nul_is_refused_naming_task_id(tm, call):
    """Task ids are C strings in every function: a NUL would cut the id short, so it is refused, never truncated."""
    with pytest.raises(InvalidArgumentError, match="task_id"):
        call(tm)


def test_library_errors_carry_the_librarys_message(tm):
    with pytest.raises(TaskNotFoundError, match=r"cancel\('nope'\): .*nope.* \(SFT_ERR_NOT_FOUND\)"):
        tm.cancel("nope")
    done = run_to_end(tm, lambda: None)["task_id"]
    with pytest.raises(InvalidStateError, match=r"COMPLETED.*SFT_ERR_INVALID_STATE"):
        tm.cancel(done)
    with pytest.raises(TaskNotFoundError):
        tm.wait("nope", timeout=0)
    with pytest.raises(TaskNotFoundError):
        tm.is_cancel_requested("nope")


# ----- re-entrancy and the task's own id -----------------------------------------------------------


def test_current_task_id_is_the_running_tasks_id_and_none_outside(tm):
    seen = []
    task_id = tm.submit_task(lambda: seen.append(current_task_id()))
    tm.wait(task_id, timeout=HANG_GUARD)
    assert seen == [task_id]
    assert current_task_id() is None


def test_a_task_may_use_every_call_from_inside(tm):
    outcome = {}

    def parent():
        me = current_task_id()
        tm.update_task_progress(me, 1, 2, phase="inside")
        outcome["child"] = tm.submit_task(lambda: None)
        outcome["status"] = tm.get_task_status(me)["status"]
        outcome["listed"] = any(s["task_id"] == me for s in tm.list_tasks("PROCESSING"))
        outcome["stats"] = tm.stats()["counts"]["PROCESSING"]
        outcome["requested"] = tm.is_cancel_requested(me)
        try:
            tm.wait(outcome["child"])
        except InvalidStateError as error:
            outcome["wait_child"] = str(error)
        try:
            tm.wait(me)
        except InvalidStateError as error:
            outcome["wait_self"] = str(error)

    assert run_to_end(tm, parent)["status"] == TASK_COMPLETED
    assert outcome["status"] == "PROCESSING" and outcome["listed"] and outcome["stats"] == 1
    assert outcome["requested"] is False
    assert "deadlock" in outcome["wait_child"] and "deadlock" in outcome["wait_self"]
    assert tm.wait(outcome["child"], timeout=HANG_GUARD)["status"] == TASK_COMPLETED


def test_package_version_matches_the_library(tm):
    assert tm.library_version == native().version()
    if storyflow_tasks.__version__ != "unknown":
        assert storyflow_tasks.__version__ == tm.library_version
