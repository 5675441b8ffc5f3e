"""The extensions to the original design: wait, cancel, watch, listing, statistics, configuration and shutdown."""

from __future__ import annotations

import threading

import pytest

from storyflow_tasks import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_PENDING,
    TASK_PROCESSING,
    InvalidArgumentError,
    InvalidStateError,
    TaskNotFoundError,
    TaskTimeoutError,
    current_task_id,
)

from conftest import HANG_GUARD, assert_clean_exit, run_python

# ----- wait ---------------------------------------------------------------------------------------------


def test_wait_returns_the_final_status(tm):
    task_id = tm.submit_task(lambda: tm.update_task_progress(current_task_id(), 1, 1))
    final = tm.wait(task_id)
    assert final["status"] == TASK_COMPLETED and final["progress"]["percentage"] == 100
    assert tm.wait(task_id, timeout=0) == final  # already finished: no waiting at all


def test_wait_times_out_and_leaves_the_task_alone(tm, gate):
    held = gate().wait_started()
    with pytest.raises(TaskTimeoutError) as raised:
        tm.wait(held.task_id, timeout=0.05)
    assert isinstance(raised.value, TimeoutError) and "SFT_ERR_TIMEOUT" in str(raised.value)
    assert tm.get_task_status(held.task_id)["status"] == TASK_PROCESSING


def test_wait_for_an_unknown_task_raises_lookup_error(tm):
    with pytest.raises(TaskNotFoundError) as raised:
        tm.wait("never-submitted")
    assert isinstance(raised.value, LookupError)


def test_a_blocked_wait_releases_the_gil():
    """A thread parked in wait() must let every other thread run Python, the task runner included.

    In a child interpreter, so that a wait holding the GIL shows as a failure (a hang) instead of freezing the suite.
    """
    result = run_python(
        """
        import threading
        from storyflow_tasks import get_task_manager
        tm = get_task_manager()
        release = threading.Event()
        task_id = tm.submit_task(lambda: release.wait(30))
        results, entered = [], threading.Event()
        def wait_for_it():
            entered.set()
            results.append(tm.wait(task_id))
        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        entered.wait(30)
        print(sum(i * i for i in range(500_000)) > 0)   # Python work while the waiter is parked
        release.set()                                    # the task, on the runner thread, needs the GIL to return
        waiter.join(30)
        print(results[0]["status"])
        """
    )
    assert_clean_exit(result)
    assert result.stdout.split() == ["True", "COMPLETED"]


# ----- cancel --------------------------------------------------------------------------------------------


def test_cancelling_a_pending_task_means_it_never_runs(tm, gate):
    held = gate().wait_started()
    ran = []
    task_id = tm.submit_task(lambda: ran.append(True))
    assert tm.cancel(task_id) is True
    status = tm.get_task_status(task_id)
    assert status["status"] == TASK_CANCELLED and status["error"] and status["completed_at"] is not None
    held.open()
    after = tm.submit_task(lambda: None)
    tm.wait(after, timeout=HANG_GUARD)
    assert ran == []


def test_cancelling_a_running_task_is_a_request_it_can_poll(tm):
    started = threading.Event()
    polled = []

    def cooperative():
        me = current_task_id()
        started.set()
        while not tm.is_cancel_requested(me):
            threading.Event().wait(0.005)
        polled.append(True)

    task_id = tm.submit_task(cooperative)
    assert started.wait(HANG_GUARD)
    assert tm.cancel(task_id) is False
    assert tm.get_task_status(task_id)["cancel_requested"] is True
    final = tm.wait(task_id, timeout=HANG_GUARD)
    assert final["status"] == TASK_CANCELLED and polled == [True]
    with pytest.raises(InvalidStateError):
        tm.cancel(task_id)


def test_a_task_that_ignores_its_cancellation_still_ends_cancelled(tm, gate):
    held = gate().wait_started()
    assert tm.cancel(held.task_id) is False
    held.open()
    assert tm.wait(held.task_id, timeout=HANG_GUARD)["status"] == TASK_CANCELLED


# ----- watch ----------------------------------------------------------------------------------------------


def test_watch_sees_every_step_of_a_task_in_lockstep(tm, gate):
    held = gate().wait_started()
    step = threading.Semaphore(0)

    def three_steps():
        me = current_task_id()
        for n in range(1, 4):
            assert step.acquire(timeout=HANG_GUARD)
            tm.update_task_progress(me, n, 3)
        assert step.acquire(timeout=HANG_GUARD)  # the watcher has seen the last step

    task_id = tm.submit_task(three_steps)
    seen = []
    for status in tm.watch(task_id, timeout=HANG_GUARD):
        seen.append((status["status"], status["progress"].get("current")))
        if status["status"] == TASK_PENDING:
            held.open()
        elif status["status"] == TASK_PROCESSING:
            step.release()
    assert seen == [
        (TASK_PENDING, None),
        (TASK_PROCESSING, None),
        (TASK_PROCESSING, 1),
        (TASK_PROCESSING, 2),
        (TASK_PROCESSING, 3),
        (TASK_COMPLETED, 3),
    ]


def test_watch_revisions_only_grow_and_end_with_the_final_status(tm):
    def busy():
        me = current_task_id()
        for n in range(50):
            tm.update_task_progress(me, n, 50)

    statuses = list(tm.watch(tm.submit_task(busy)))
    revisions = [s["revision"] for s in statuses]
    assert revisions == sorted(set(revisions))
    assert statuses[-1]["status"] == TASK_COMPLETED
    assert all(s["status"] != TASK_COMPLETED for s in statuses[:-1])


def test_watch_times_out_per_change_and_rejects_unknown_ids(tm, gate):
    held = gate().wait_started()
    watcher = tm.watch(held.task_id, timeout=0.05)
    assert next(watcher)["status"] == TASK_PROCESSING
    with pytest.raises(TaskTimeoutError):
        next(watcher)
    with pytest.raises(TaskNotFoundError):
        tm.watch("never-submitted")


# ----- list, stats, config --------------------------------------------------------------------------------


def test_list_tasks_in_submission_order_and_by_state(tm, gate):
    held = gate().wait_started()
    pending = [tm.submit_task(lambda: None) for _ in range(3)]
    listed = [s["task_id"] for s in tm.list_tasks(TASK_PENDING)]
    assert listed[-3:] == pending
    assert held.task_id in [s["task_id"] for s in tm.list_tasks(TASK_PROCESSING)]
    everything = [s["task_id"] for s in tm.list_tasks()]
    assert everything.index(held.task_id) < everything.index(pending[0]) < everything.index(pending[2])


def test_stats_count_what_happened(tm, gate):
    held = gate().wait_started()
    # Counted once the gate runs: every task of earlier tests, ahead of it in the queue, is done.
    before = tm.stats()
    cancelled = tm.submit_task(lambda: None)
    tm.cancel(cancelled)

    def fails():
        raise ValueError("x")

    failed = tm.submit_task(fails)
    assert tm.stats()["queue_depth"] == 1
    held.open()
    tm.wait(failed, timeout=HANG_GUARD)
    after = tm.stats()
    assert after["submitted_total"] - before["submitted_total"] == 2
    assert after["completed_total"] - before["completed_total"] == 1  # the gate
    assert after["failed_total"] - before["failed_total"] == 1
    assert after["cancelled_total"] - before["cancelled_total"] == 1
    assert set(after["counts"]) == {"PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"}


def test_configuration_is_fixed_after_the_first_submission(tm):
    tm.submit_task(lambda: None)
    config = tm.get_config()
    assert {"cleanup_threshold_secs", "max_pending_tasks", "max_message_bytes"} <= set(config)
    tm.configure(max_pending_tasks=config["max_pending_tasks"])  # no change: allowed
    with pytest.raises(InvalidStateError):
        tm.configure(max_pending_tasks=config["max_pending_tasks"] + 1)
    assert tm.get_config() == config
    with pytest.raises(InvalidArgumentError):
        tm.configure(max_pending_tasks="many")


def test_configure_before_the_first_submission_takes_effect():
    result = run_python(
        """
        from storyflow_tasks import get_task_manager
        tm = get_task_manager()
        tm.configure(max_retained_finished=2, cleanup_threshold_secs=600)
        ids = [tm.submit_task(lambda: None) for _ in range(4)]
        for task_id in ids:
            tm.wait(task_id) if tm.get_task_status(task_id) else None
        print(tm.get_config()["max_retained_finished"], tm.get_config()["cleanup_threshold_secs"])
        print([tm.get_task_status(i) is not None for i in ids])
        """
    )
    assert_clean_exit(result)
    assert result.stdout.splitlines() == ["2 600.0", "[False, False, True, True]"]


# ----- shutdown --------------------------------------------------------------------------------------------


def test_shutdown_cancels_pending_waits_for_the_running_and_refuses_new_tasks():
    result = run_python(
        """
        import threading
        from storyflow_tasks import get_task_manager, current_task_id, ShutDownError
        tm = get_task_manager()
        started = threading.Event()
        def cooperative():
            started.set()
            while not tm.is_cancel_requested(current_task_id()):
                threading.Event().wait(0.005)
        running = tm.submit_task(cooperative)
        queued = tm.submit_task(lambda: print("never"))
        assert started.wait(30)
        tm.shutdown(timeout=30)
        print(tm.get_task_status(running)["status"], tm.get_task_status(queued)["status"])
        try:
            tm.submit_task(lambda: None)
        except ShutDownError as error:
            print("refused:", "SFT_ERR_SHUT_DOWN" in str(error))
        print(tm.wait(running)["status"], len(tm.list_tasks()))
        tm.shutdown()  # again: harmless
        """
    )
    assert_clean_exit(result)
    assert result.stdout.splitlines() == ["CANCELLED CANCELLED", "refused: True", "CANCELLED 2"]


def test_shutdown_times_out_on_a_task_that_will_not_stop():
    result = run_python(
        """
        import threading
        from storyflow_tasks import get_task_manager, TaskTimeoutError
        tm = get_task_manager()
        release, started = threading.Event(), threading.Event()
        def stubborn():
            started.set()
            release.wait(30)
        task_id = tm.submit_task(stubborn)
        assert started.wait(30)
        try:
            tm.shutdown(timeout=0.05)
        except TaskTimeoutError:
            print("timed out")
        release.set()
        print(tm.wait(task_id)["status"])
        """
    )
    assert_clean_exit(result)
    assert result.stdout.splitlines() == ["timed out", "CANCELLED"]


def test_shutdown_from_inside_a_task_does_not_wait_for_itself():
    result = run_python(
        """
        from storyflow_tasks import get_task_manager
        tm = get_task_manager()
        task_id = tm.submit_task(lambda: tm.shutdown())
        print(tm.wait(task_id)["status"])
        """
    )
    assert_clean_exit(result)
    assert result.stdout.strip() == "CANCELLED"
