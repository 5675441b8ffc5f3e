"""asyncio: awaiting and watching tasks without blocking the loop, and coroutine functions as tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from storyflow_tasks import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_PROCESSING,
    InvalidStateError,
    TaskNotFoundError,
    TaskTimeoutError,
    current_task_id,
)

from conftest import HANG_GUARD


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, HANG_GUARD))


# ----- awaiting -----------------------------------------------------------------------------------------


def test_wait_async_never_blocks_the_event_loop(tm):
    """The task can only finish once a coroutine on this same loop has run: a blocking await would hang."""
    release = threading.Event()
    task_id = tm.submit_task(lambda: release.wait(HANG_GUARD) or (_ for _ in ()).throw(TimeoutError("never released")))

    async def main():
        async def release_soon():
            for _ in range(3):
                await asyncio.sleep(0)
            release.set()

        waiting = asyncio.ensure_future(tm.wait_async(task_id))
        await asyncio.sleep(0)
        assert not waiting.done()
        await release_soon()
        return await waiting

    assert run(main())["status"] == TASK_COMPLETED


def test_wait_async_times_out_and_reports_unknown_ids(tm, gate):
    held = gate().wait_started()

    async def main():
        with pytest.raises(TaskTimeoutError) as raised:
            await tm.wait_async(held.task_id, timeout=0.05)
        assert isinstance(raised.value, TimeoutError)
        with pytest.raises(TaskNotFoundError):
            await tm.wait_async("never-submitted")

    run(main())
    assert tm.get_task_status(held.task_id)["status"] == TASK_PROCESSING


def test_many_coroutines_await_many_tasks_on_one_loop(tm, gate):
    held = gate().wait_started()
    ids = [tm.submit_task(lambda: None) for _ in range(200)]

    async def main():
        waits = [asyncio.ensure_future(tm.wait_async(task_id)) for task_id in ids]
        await asyncio.sleep(0)
        held.open()
        return await asyncio.gather(*waits)

    finals = run(main())
    assert [f["task_id"] for f in finals] == ids and {f["status"] for f in finals} == {TASK_COMPLETED}


def test_waiting_from_several_loops_in_several_threads(tm, gate):
    held = gate().wait_started()
    task_id = tm.submit_task(lambda: None)
    results = []
    threads = [threading.Thread(target=lambda: results.append(run(tm.wait_async(task_id)))) for _ in range(4)]
    for thread in threads:
        thread.start()
    held.open()
    for thread in threads:
        thread.join(HANG_GUARD)
    assert [r["status"] for r in results] == [TASK_COMPLETED] * 4


def test_watch_async_follows_a_task_in_lockstep(tm, gate):
    held = gate().wait_started()
    step = threading.Semaphore(0)

    def two_steps():
        me = current_task_id()
        for n in (1, 2):
            assert step.acquire(timeout=HANG_GUARD)
            tm.update_task_progress(me, n, 2)
        assert step.acquire(timeout=HANG_GUARD)

    task_id = tm.submit_task(two_steps)

    async def main():
        seen = []
        async for status in tm.watch_async(task_id, timeout=HANG_GUARD):
            seen.append((status["status"], status["progress"].get("current")))
            if status["status"] == TASK_PENDING:
                held.open()
            elif status["status"] == TASK_PROCESSING:
                step.release()
        return seen

    assert run(main()) == [
        (TASK_PENDING, None),
        (TASK_PROCESSING, None),
        (TASK_PROCESSING, 1),
        (TASK_PROCESSING, 2),
        (TASK_COMPLETED, 2),
    ]


def test_watch_async_rejects_unknown_ids_at_once(tm):
    with pytest.raises(TaskNotFoundError):
        tm.watch_async("never-submitted")


# ----- coroutine functions as tasks -----------------------------------------------------------------------


def test_a_coroutine_task_runs_on_the_running_loop_in_fifo_order(tm):
    order = []

    async def main():
        loop_thread = threading.current_thread()

        async def narrate():
            order.append(("coroutine", threading.current_thread() is loop_thread, current_task_id()))
            await asyncio.sleep(0.01)
            tm.update_task_progress(current_task_id(), 1, 1, engine="async")

        first = tm.submit_task(lambda: order.append(("plain", None, None)))
        second = tm.submit_task(narrate)
        third = tm.submit_task(lambda: order.append(("plain", None, None)))
        finals = [await tm.wait_async(each) for each in (first, second, third)]
        return second, finals

    second, finals = run(main())
    assert [f["status"] for f in finals] == [TASK_COMPLETED] * 3
    assert order == [("plain", None, None), ("coroutine", True, second), ("plain", None, None)]
    assert finals[1]["progress"]["engine"] == "async"


def test_a_coroutine_holds_the_worker_until_it_completes(tm):
    async def main():
        release = asyncio.Event()

        async def slow():
            await release.wait()

        slow_id = tm.submit_task(slow)
        after = tm.submit_task(lambda: None)
        async for status in tm.watch_async(slow_id):
            if status["status"] == TASK_PROCESSING:
                break
        assert tm.get_task_status(after)["status"] == TASK_PENDING
        release.set()
        return await tm.wait_async(after)

    assert run(main())["status"] == TASK_COMPLETED


def test_a_failing_coroutine_fails_its_task(tm):
    async def main():
        async def broken():
            await asyncio.sleep(0)
            raise LookupError("no such voice")

        return await tm.wait_async(tm.submit_task(broken))

    final = run(main())
    assert final["status"] == TASK_FAILED and final["error"] == "LookupError: no such voice"


def test_cancel_cancels_a_running_coroutine_through_asyncio(tm):
    async def main():
        running, cancelled_inside = asyncio.Event(), asyncio.Event()

        async def forever():
            running.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled_inside.set()
                await asyncio.sleep(0.01)  # clean-up still holds the worker
                raise

        task_id = tm.submit_task(forever)
        await running.wait()
        assert tm.cancel(task_id) is False
        final = await tm.wait_async(task_id)
        return final, cancelled_inside.is_set()

    final, saw_cancellation = run(main())
    assert final["status"] == TASK_CANCELLED and saw_cancellation


def test_a_coroutine_task_on_a_loop_named_by_the_caller(tm):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        ran_on = []

        async def job():
            ran_on.append(threading.current_thread())

        final = tm.wait(tm.submit_task(job, loop=loop), timeout=HANG_GUARD)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(HANG_GUARD)
        loop.close()
    assert final["status"] == TASK_COMPLETED and ran_on == [thread]


def test_an_async_function_without_a_loop_is_refused(tm):
    async def job():
        pass

    before = tm.stats()["submitted_total"]
    with pytest.raises(RuntimeError, match="no event loop"):
        tm.submit_task(job)
    with pytest.raises(TypeError, match="only for async"):
        tm.submit_task(lambda: None, loop=asyncio.new_event_loop())
    with pytest.raises(TypeError, match="event loop"):
        tm.submit_task(job, loop="the main loop")
    assert tm.stats()["submitted_total"] == before


def test_a_coroutine_whose_loop_closed_before_it_started_fails_clearly(tm, gate):
    held = gate().wait_started()
    loop = asyncio.new_event_loop()

    async def job():
        pass

    task_id = tm.submit_task(job, loop=loop)
    loop.close()
    held.open()
    final = tm.wait(task_id, timeout=HANG_GUARD)
    assert final["status"] == TASK_FAILED and "RuntimeError" in final["error"] and "closed" in final["error"]


def test_awaiting_a_pending_task_from_inside_a_coroutine_task_is_refused(tm):
    async def main():
        outcome = {}

        async def parent():
            child = tm.submit_task(lambda: None)
            try:
                await tm.wait_async(child)
            except InvalidStateError as error:
                outcome["error"] = str(error)
            outcome["child"] = child

        await tm.wait_async(tm.submit_task(parent))
        await tm.wait_async(outcome["child"])
        return outcome

    assert "deadlock" in run(main())["error"]


def test_async_watchers_keep_up_with_a_flood_of_events(tm):
    """More events than the feed reader takes in one batch: watchers still see the end, in order."""

    def flood():
        me = current_task_id()
        for n in range(20_000):
            tm.update_task_progress(me, n, 20_000)

    async def main():
        task_id = tm.submit_task(flood)
        revisions = [status["revision"] async for status in tm.watch_async(task_id)]
        final = await tm.wait_async(task_id)
        return revisions, final

    revisions, final = run(main())
    assert final["status"] == TASK_COMPLETED and final["progress"]["current"] == 19_999
    assert revisions == sorted(set(revisions)) and revisions[-1] == final["revision"]
