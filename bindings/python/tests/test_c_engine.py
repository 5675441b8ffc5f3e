"""A C engine and Python in one process share one manager: one registry, one queue, one worker."""

from __future__ import annotations

import ctypes
import json
import shutil
from pathlib import Path

import pytest

from storyflow_tasks import TASK_COMPLETED, TASK_PENDING, current_task_id
from storyflow_tasks._native import SONAME, native

from conftest import HANG_GUARD, assert_clean_exit, build_c_engine, python_env, run_python


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """engine.c compiled against the very library file this process loaded, then loaded."""
    from storyflow_tasks import library_path

    output = build_c_engine(Path(library_path()), tmp_path_factory.mktemp("engine") / "libengine.so")
    library = ctypes.CDLL(str(output))
    library.engine_render.argtypes = [ctypes.c_char_p, ctypes.c_int]
    library.engine_render.restype = ctypes.c_int
    library.engine_submit_own.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    library.engine_submit_own.restype = ctypes.c_int
    library.engine_read_status.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    library.engine_read_status.restype = ctypes.c_int
    return library


def c_status(engine, task_id: str):
    buffer = ctypes.create_string_buffer(1 << 16)
    if engine.engine_read_status(task_id.encode(), buffer, len(buffer)) != 0:
        return None
    return json.loads(buffer.value)


def test_c_reports_progress_for_a_task_python_submitted(tm, engine):
    results = []

    def narrate():
        results.append(engine.engine_render(current_task_id().encode(), 3))

    task_id = tm.submit_task(narrate)
    final = tm.wait(task_id, timeout=HANG_GUARD)
    assert results == [0]
    assert final["status"] == TASK_COMPLETED
    assert final["progress"] == {"current": 3, "total": 3, "percentage": 100, "engine": "c", "current_segment_id": 3}
    assert final["completed_segments"] == [{"segment_id": n, "audio_url": f"/media/c/{n}.wav", "duration": 0.5 * n} for n in (1, 2, 3)]
    assert c_status(engine, task_id) == tm.get_task_status(task_id)


def test_a_c_task_queues_behind_python_tasks_and_python_waits_for_it(tm, gate, engine):
    held = gate().wait_started()
    buffer = ctypes.create_string_buffer(128)
    assert engine.engine_submit_own(buffer, len(buffer)) == 0
    c_task = buffer.value.decode()
    assert tm.get_task_status(c_task)["status"] == TASK_PENDING
    assert c_task in [s["task_id"] for s in tm.list_tasks(TASK_PENDING)]
    python_after = tm.submit_task(lambda: None)
    assert tm.get_task_status(python_after)["queue_position"] == 1
    held.open()
    final = tm.wait(c_task, timeout=HANG_GUARD)
    assert final["status"] == TASK_COMPLETED and final["progress"]["engine"] == "c"
    assert [s["segment_id"] for s in final["completed_segments"]] == [1, 2]
    assert tm.wait(python_after, timeout=HANG_GUARD)["started_at"] >= final["completed_at"]


def test_c_sees_unknown_ids_as_python_does(tm, engine):
    assert c_status(engine, "never-submitted") is None
    assert engine.engine_render(b"never-submitted", 1) == 1  # SFT_ERR_NOT_FOUND


def test_when_a_c_engine_loaded_its_copy_first_python_uses_that_copy(tmp_path):
    """Another file of the library, loaded first by an engine: Python must join it, not load a second manager."""
    other_copy = tmp_path / "lib" / "libstoryflow_tasks.so"
    other_copy.parent.mkdir()
    shutil.copyfile(native().path, other_copy)
    (other_copy.parent / SONAME).symlink_to(other_copy.name)
    engine = build_c_engine(other_copy, tmp_path / "libengine.so")
    result = run_python(
        """
        import ctypes
        engine = ctypes.CDLL(%r)                      # loads %s, before Python touches the library
        buffer = ctypes.create_string_buffer(128)
        assert engine.engine_submit_own(buffer, len(buffer)) == 0
        c_task = buffer.value.decode()
        from storyflow_tasks import get_task_manager, library_path
        tm = get_task_manager()
        print(library_path())
        print(tm.wait(c_task, timeout=30)["status"], [s["task_id"] for s in tm.list_tasks()] == [c_task])
        """
        % (str(engine), other_copy),
        env=python_env(STORYFLOW_TASKS_LIB=native().path),
    )
    assert_clean_exit(result)
    assert result.stdout.splitlines() == [str(other_copy), "COMPLETED True"]
