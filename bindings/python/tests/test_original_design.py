"""The original StoryFlow ``tasks.py`` design's validation list, item by item, plus its wrapper's behaviour."""

from __future__ import annotations

import threading
import uuid

import storyflow_tasks
from storyflow_tasks import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_PROCESSING,
    TaskManager,
    get_task_manager,
)

from conftest import HANG_GUARD


def test_the_state_constants_are_the_original_designs_plain_strings():
    assert (TASK_PENDING, TASK_PROCESSING, TASK_COMPLETED, TASK_FAILED) == ("PENDING", "PROCESSING", "COMPLETED", "FAILED")
    assert TASK_CANCELLED == "CANCELLED"


def test_task_manager_is_a_singleton():
    assert TaskManager() is TaskManager()


def test_get_task_manager_returns_the_singleton():
    assert get_task_manager() is TaskManager()
    assert storyflow_tasks.get_task_manager() is get_task_manager()


def test_constructing_from_many_threads_still_gives_one_instance():
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(TaskManager())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    assert len(seen) == 16 and all(each is seen[0] for each in seen)


def test_submit_task_registers_a_pending_task_and_returns_its_id(tm, gate):
    gate().wait_started()
    task_id = tm.submit_task(lambda: None)
    status = tm.get_task_status(task_id)
    assert status["task_id"] == task_id
    assert status["status"] == TASK_PENDING
    assert status["progress"] == {}
    assert status["completed_segments"] == [] and status["errors"] == []
    assert isinstance(status["created_at"], float)
    assert status["completed_at"] is None


def test_a_generated_id_is_a_uuid_and_a_given_one_is_kept(tm):
    generated = tm.submit_task(lambda: None)
    assert str(uuid.UUID(generated)) == generated
    chosen = f"chapter-{uuid.uuid4()}"
    assert tm.submit_task(lambda: None, task_id=chosen) == chosen
    tm.wait(generated, timeout=HANG_GUARD)
    assert tm.wait(chosen, timeout=HANG_GUARD)["status"] == TASK_COMPLETED


def test_get_task_status_returns_a_copy(tm):
    task_id = tm.submit_task(lambda: None)
    tm.wait(task_id, timeout=HANG_GUARD)
    first = tm.get_task_status(task_id)
    second = tm.get_task_status(task_id)
    assert first == second and first is not second
    first["status"] = "TAMPERED"
    first["completed_segments"].append({"segment_id": 1})
    assert tm.get_task_status(task_id) == second


def test_get_task_status_returns_none_for_unknown_ids(tm):
    assert tm.get_task_status("no-such-task") is None
    assert tm.get_task_status(str(uuid.uuid4())) is None


def test_update_task_progress_computes_an_integer_percentage(tm):
    task_id = tm.submit_task(lambda: None)
    for current, total, expected in [(1, 3, 33), (2, 3, 66), (2, 5, 40), (5, 5, 100), (7, 5, 100)]:
        tm.update_task_progress(task_id, current, total)
        progress = tm.get_task_status(task_id)["progress"]
        assert progress["percentage"] == expected and type(progress["percentage"]) is int
        assert (progress["current"], progress["total"]) == (current, total)
    tm.wait(task_id, timeout=HANG_GUARD)


def test_update_task_progress_survives_a_zero_total(tm):
    task_id = tm.submit_task(lambda: None)
    tm.update_task_progress(task_id, 0, 0)
    assert tm.get_task_status(task_id)["progress"] == {"current": 0, "total": 0, "percentage": 0}
    tm.update_task_progress(task_id, 3, 0)
    assert tm.get_task_status(task_id)["progress"]["percentage"] == 0
    tm.wait(task_id, timeout=HANG_GUARD)


def test_update_task_progress_keeps_additional_kwargs(tm):
    task_id = tm.submit_task(lambda: None)
    tm.update_task_progress(task_id, 1, 4, current_segment_id=7)
    assert tm.get_task_status(task_id)["progress"] == {"current": 1, "total": 4, "percentage": 25, "current_segment_id": 7}
    tm.wait(task_id, timeout=HANG_GUARD)


def test_completed_segments_and_errors_are_appended_in_order(tm):
    task_id = tm.submit_task(lambda: None)
    tm.add_completed_segment(task_id, 1, {"audio_url": "/media/audio/1.wav", "duration": 2.5})
    tm.add_completed_segment(task_id, 2, {"audio_url": "/media/audio/2.wav", "duration": 1})
    tm.add_error(task_id, 3, "voice not found")
    status = tm.wait(task_id, timeout=HANG_GUARD)
    assert status["completed_segments"] == [
        {"segment_id": 1, "audio_url": "/media/audio/1.wav", "duration": 2.5},
        {"segment_id": 2, "audio_url": "/media/audio/2.wav", "duration": 1.0},
    ]
    assert status["errors"] == [{"segment_id": 3, "error": "voice not found"}]


def test_the_three_mutations_silently_ignore_unknown_task_ids(tm):
    before = tm.stats()["submitted_total"]
    assert tm.update_task_progress("no-such-task", 1, 2, current_segment_id=1) is False
    assert tm.add_completed_segment("no-such-task", 1, {"audio_url": "/a.wav", "duration": 1.0}) is False
    assert tm.add_error("no-such-task", 1, "nope") is False
    assert tm.get_task_status("no-such-task") is None
    assert tm.stats()["submitted_total"] == before


def test_concurrent_mutations_are_all_kept(tm, gate):
    """The original design's "all state mutations are guarded by _tasks_lock": nothing is lost under contention."""
    gate().wait_started()
    task_id = tm.submit_task(lambda: None)
    threads_count, per_thread = 8, 150
    reads_ok = []

    def mutate(worker: int) -> None:
        for n in range(per_thread):
            tm.add_completed_segment(task_id, worker * 1000 + n, {"audio_url": f"/w{worker}/{n}.wav", "duration": 0.5})
            tm.add_error(task_id, f"{worker}-{n}", "e")
            tm.update_task_progress(task_id, n, per_thread, worker=worker)
            reads_ok.append(tm.get_task_status(task_id)["task_id"] == task_id)

    threads = [threading.Thread(target=mutate, args=(w,)) for w in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    status = tm.get_task_status(task_id)
    assert len(status["completed_segments"]) == threads_count * per_thread
    assert len(status["errors"]) == threads_count * per_thread
    assert sorted(s["segment_id"] for s in status["completed_segments"]) == sorted(
        w * 1000 + n for w in range(threads_count) for n in range(per_thread)
    )
    assert all(reads_ok) and len(reads_ok) == threads_count * per_thread


def test_the_wrapper_moves_through_processing_to_completed(tm):
    seen_inside = []
    task_id = tm.submit_task(lambda: seen_inside.append(tm.get_task_status(storyflow_tasks.current_task_id())))
    final = tm.wait(task_id, timeout=HANG_GUARD)
    assert seen_inside[0]["status"] == TASK_PROCESSING
    assert isinstance(seen_inside[0]["started_at"], float) and seen_inside[0]["completed_at"] is None
    assert final["status"] == TASK_COMPLETED and final["error"] is None
    assert final["created_at"] <= final["started_at"] <= final["completed_at"]


def test_an_exception_marks_the_task_failed_and_sets_completed_at(tm):
    def fails():
        raise RuntimeError("model not loaded")

    final = tm.wait(tm.submit_task(fails), timeout=HANG_GUARD)
    assert final["status"] == TASK_FAILED
    assert final["error"] == "RuntimeError: model not loaded"
    assert isinstance(final["completed_at"], float)


def test_tasks_run_one_at_a_time_in_submission_order(tm, gate):
    held = gate().wait_started()
    log = []
    running = []

    def task(n: int):
        def run():
            running.append(n)
            log.append((n, len(running)))
            running.remove(n)

        return run

    ids = [tm.submit_task(task(n)) for n in range(25)]
    assert [tm.get_task_status(each)["queue_position"] for each in ids] == list(range(25))
    assert log == []  # the gate holds the one worker
    held.open()
    for each in ids:
        assert tm.wait(each, timeout=HANG_GUARD)["status"] == TASK_COMPLETED
    assert log == [(n, 1) for n in range(25)]
