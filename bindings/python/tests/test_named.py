"""Named handlers in the memory store: ``register_handler``/``@tm.handler``, ``submit_named``, ``set_checkpoint``.

Every test registers handlers under names of its own: a name is registered at
most once per process, and every test shares the process's manager.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, List, Optional, Tuple

import pytest

from storyflow_tasks import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PENDING,
    DuplicateTaskIdError,
    InvalidArgumentError,
    InvalidStateError,
    current_task_id,
)

from conftest import HANG_GUARD


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def test_a_handler_gets_the_decoded_payload_and_finds_its_id(tm):
    name = fresh("echo")
    seen: List[Tuple[Any, Optional[str]]] = []
    tm.register_handler(name, lambda payload: seen.append((payload, current_task_id())))
    payload = {"text": "Es war einmal…\x00", "big": 10**30, "items": [1, "a", None, 2.5, True]}
    task_id = tm.submit_named(name, payload)
    final = tm.wait(task_id, timeout=HANG_GUARD)
    assert final["status"] == TASK_COMPLETED, final
    assert seen == [(payload, task_id)]
    assert (final["handler"], final["attempt"], final["checkpoint"]) == (name, 1, None)


def test_the_payload_defaults_to_none_and_the_task_id_can_be_given(tm):
    name = fresh("none")
    seen: List[Any] = []
    tm.register_handler(name, seen.append)
    task_id = tm.submit_named(name, task_id=f"{name}-chapter-1")
    assert task_id == f"{name}-chapter-1"
    assert tm.wait(task_id, timeout=HANG_GUARD)["status"] == TASK_COMPLETED
    assert seen == [None]
    with pytest.raises(DuplicateTaskIdError):
        tm.submit_named(name, task_id=task_id)


def test_the_decorator_registers_and_returns_the_function(tm):
    name = fresh("decorated")

    @tm.handler(name)
    def narrate(payload: Any) -> None:
        tm.update_task_progress(current_task_id(), 1, 1, got=payload)

    assert callable(narrate) and narrate.__name__ == "narrate"
    final = tm.wait(tm.submit_named(name, [1, 2]), timeout=HANG_GUARD)
    assert final["progress"]["got"] == [1, 2]


def test_a_raising_handler_fails_the_task_with_its_exception_once(tm):
    name = fresh("broken")
    calls: List[int] = []

    def broken(payload: Any) -> None:
        calls.append(1)
        raise ValueError(f"voice {payload['voice']!r} not found")

    tm.register_handler(name, broken)
    final = tm.wait(tm.submit_named(name, {"voice": "narrator-2"}), timeout=HANG_GUARD)
    assert final["status"] == TASK_FAILED
    assert final["error"] == "ValueError: voice 'narrator-2' not found"
    assert final["attempt"] == 1 and calls == [1], "a failure is final: never retried"


def test_a_checkpoint_is_recorded_shown_and_final_once_the_task_is(tm):
    name = fresh("checkpoint")
    inside: List[Any] = []

    def chapter(payload: Any) -> None:
        me = current_task_id()
        assert me is not None
        for sentence in range(payload["sentences"]):
            assert tm.set_checkpoint(me, {"next": sentence + 1, "voice": "ä\x00"}) is True
        status = tm.get_task_status(me)
        assert status is not None
        inside.append(status["checkpoint"])

    tm.register_handler(name, chapter)
    task_id = tm.submit_named(name, {"sentences": 3})
    final = tm.wait(task_id, timeout=HANG_GUARD)
    assert final["status"] == TASK_COMPLETED, final
    assert inside == [{"next": 3, "voice": "ä\x00"}]
    assert final["checkpoint"] == {"next": 3, "voice": "ä\x00"}
    revision = final["revision"]
    assert tm.set_checkpoint(task_id, {"next": 99}) is False, "final is final"
    after = tm.get_task_status(task_id)
    assert after is not None and after["checkpoint"] == {"next": 3, "voice": "ä\x00"} and after["revision"] == revision
    assert tm.set_checkpoint(f"{name}-never-submitted", 1) is False


def test_a_task_whose_handler_nobody_registered_waits_without_holding_up_the_queue(tm):
    name = fresh("later")
    waiting = tm.submit_named(name, {"n": 1})
    behind = tm.submit_task(lambda: None)
    assert tm.wait(behind, timeout=HANG_GUARD)["status"] == TASK_COMPLETED
    status = tm.get_task_status(waiting)
    assert status is not None
    assert (status["status"], status["handler"], status["attempt"]) == (TASK_PENDING, name, 0)

    seen: List[Any] = []
    tm.register_handler(name, seen.append)  # never dropped: it runs once a handler exists
    assert tm.wait(waiting, timeout=HANG_GUARD)["status"] == TASK_COMPLETED
    assert seen == [{"n": 1}]


def test_registering_a_name_twice_is_refused_and_the_first_keeps_serving(tm):
    name = fresh("twice")
    first: List[Any] = []
    tm.register_handler(name, first.append)
    with pytest.raises(DuplicateTaskIdError) as refused:  # a ValueError
        tm.register_handler(name, lambda payload: None)
    assert name in str(refused.value)
    assert isinstance(refused.value, ValueError)
    tm.wait(tm.submit_named(name, "still the first"), timeout=HANG_GUARD)
    assert first == ["still the first"]


def test_a_payload_json_cannot_write_is_refused_and_queues_nothing(tm):
    name = fresh("payload")
    submitted = tm.stats()["submitted_total"]
    with pytest.raises(TypeError, match="payload must be JSON-serialisable"):
        tm.submit_named(name, {"when": object()})
    with pytest.raises(InvalidArgumentError, match="payload_json is not valid JSON"):
        tm.submit_named(name, float("nan"))  # json.dumps writes NaN; the library refuses it, in every language
    circular: List[Any] = []
    circular.append(circular)
    with pytest.raises(InvalidArgumentError, match="payload cannot be written as JSON"):
        tm.submit_named(name, circular)
    assert tm.stats()["submitted_total"] == submitted


def test_bad_names_and_functions_are_refused_before_the_library(tm):
    with pytest.raises(TypeError, match="name must be a str"):
        tm.register_handler(b"narrate", lambda payload: None)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        tm.submit_named("narr\x00ate")
    with pytest.raises(TypeError, match="fn must be callable"):
        tm.register_handler(fresh("not-callable"), "narrate")
    with pytest.raises(TypeError, match="checkpoint must be JSON-serialisable"):
        tm.set_checkpoint("any", {1, 2})


def test_function_tasks_show_the_three_keys_too(tm, gate):
    gate().wait_started()
    pending = tm.submit_task(lambda: None)
    status = tm.get_task_status(pending)
    assert status is not None
    assert (status["handler"], status["attempt"], status["checkpoint"]) == (None, 0, None)


def test_a_handler_that_honours_cancellation_ends_cancelled(tm):
    name = fresh("cancellable")
    started = threading.Event()

    def long_chapter(payload: Any) -> None:
        me = current_task_id()
        assert me is not None
        started.set()
        while not tm.is_cancel_requested(me):
            threading.Event().wait(0.005)

    tm.register_handler(name, long_chapter)
    task_id = tm.submit_named(name)
    assert started.wait(HANG_GUARD)
    assert tm.cancel(task_id) is False  # running: asked to stop
    assert tm.wait(task_id, timeout=HANG_GUARD)["status"] == TASK_CANCELLED


def test_waiting_inside_a_handler_for_a_pending_task_is_refused(tm):
    name = fresh("waits")
    outcome: List[BaseException] = []

    def waits(payload: Any) -> None:
        behind = tm.submit_task(lambda: None)
        try:
            tm.wait(behind, timeout=HANG_GUARD)
        except InvalidStateError as error:
            outcome.append(error)

    tm.register_handler(name, waits)
    assert tm.wait(tm.submit_named(name), timeout=HANG_GUARD)["status"] == TASK_COMPLETED
    assert len(outcome) == 1 and "deadlock" in str(outcome[0])


def test_an_async_handler_runs_on_the_loop_it_was_registered_on():
    name = fresh("async")
    from storyflow_tasks import get_task_manager

    tm = get_task_manager()
    seen: List[Tuple[Any, Optional[str], bool]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def synthesize(payload: Any) -> None:
            await asyncio.sleep(0)
            seen.append((payload, current_task_id(), asyncio.get_running_loop() is loop))

        tm.register_handler(name, synthesize)  # the running loop
        final = await tm.wait_async(tm.submit_named(name, {"sentence": "Hallo"}), timeout=HANG_GUARD)
        assert final["status"] == TASK_COMPLETED, final
        seen.append(("final", final["task_id"], True))

    asyncio.run(main())
    assert seen[0][0] == {"sentence": "Hallo"} and seen[0][2] is True
    assert seen[0][1] == seen[1][1], "current_task_id() inside the coroutine is the task's id"


def test_an_async_handler_needs_a_loop():
    from storyflow_tasks import get_task_manager

    async def synthesize(payload: Any) -> None:
        pass

    with pytest.raises(RuntimeError, match="no event loop runs here"):
        get_task_manager().register_handler(fresh("no-loop"), synthesize)
