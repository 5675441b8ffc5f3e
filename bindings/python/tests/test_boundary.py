"""Safety at the boundary: library strings freed, clean interpreter exit, fork and multiprocessing."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os

import pytest

from storyflow_tasks import TASK_COMPLETED, TASK_PROCESSING, InvalidStateError
from storyflow_tasks._native import _SIGNATURES, native

from conftest import HANG_GUARD, assert_clean_exit, run_python
from mp_helpers import run_one_task_here

# ----- library strings ---------------------------------------------------------------------------------


def test_library_allocated_strings_come_back_as_raw_pointers():
    """c_char_p would copy the text and drop the pointer, which then could never be freed."""
    allocating = ["sft_get_task_status", "sft_last_error_message", "sft_get_stats", "sft_get_config"]
    for name in allocating:
        assert _SIGNATURES[name][0] is ctypes.c_void_p, name
        assert getattr(native(), name).restype is ctypes.c_void_p, name
    out_string_functions = [n for n, (_, args, _) in _SIGNATURES.items() if ctypes.POINTER(ctypes.c_void_p) in args]
    assert set(out_string_functions) == {
        "sft_submit_runner_task_with_options",
        "sft_submit_named_with_options",
        "sft_runner_next",
        "sft_wait_task",
        "sft_wait_task_change",
        "sft_wait_events",
        "sft_list_tasks",
    }


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident size from /proc")
def test_reading_statuses_frees_every_string(tm):
    """~60 KB of status read 4000 times through each path: a leak would add hundreds of MB."""
    task_id = tm.submit_task(lambda: None)
    tm.update_task_progress(task_id, 1, 1, blob="x" * 60_000)
    tm.wait(task_id, timeout=HANG_GUARD)
    failed_calls = lambda: tm.cancel(task_id)  # noqa: E731 - an error path: sft_last_error_message

    def exercise(rounds: int) -> None:
        for _ in range(rounds):
            assert len(tm.get_task_status(task_id)["progress"]["blob"]) == 60_000
            assert tm.wait(task_id, timeout=0)["task_id"] == task_id
            assert next(tm.watch(task_id))["task_id"] == task_id
            with pytest.raises(InvalidStateError):
                failed_calls()

    exercise(200)  # warm up allocator pools
    before = _resident_bytes()
    exercise(4000)
    grown = _resident_bytes() - before
    assert grown < 40 * 2**20, f"resident size grew by {grown / 2**20:.0f} MB"


# ----- interpreter exit -----------------------------------------------------------------------------------

EXIT_REPORT = """
import atexit, sys, threading, time
ids = []
def report():
    # Registered before storyflow_tasks installs its own hook, so this runs after it.
    from storyflow_tasks import get_task_manager
    print("after exit hook:", [get_task_manager().get_task_status(t)["status"] for t in ids], flush=True)
atexit.register(report)
from storyflow_tasks import get_task_manager, current_task_id
tm = get_task_manager()
tm.exit_timeout = 0.2
"""


def test_exit_with_a_python_task_running_and_others_queued_is_clean():
    result = run_python(
        EXIT_REPORT
        + """
started = threading.Event()
def spin():
    started.set()
    while True:
        sum(range(1000))   # pure Python, holds and retakes the GIL all the time
ids.append(tm.submit_task(spin))
ids.append(tm.submit_task(lambda: print("queued task ran")))
ids.append(tm.submit_task(lambda: time.sleep(60)))
assert started.wait(30)
print("main done", flush=True)
"""
    )
    assert_clean_exit(result)
    # The spinning task ignores its cancellation: the library fails it once the exit timeout has passed.
    assert result.stdout.splitlines() == ["main done", "after exit hook: ['FAILED', 'CANCELLED', 'CANCELLED']"]


def test_exit_gives_a_cooperative_task_the_chance_to_stop():
    result = run_python(
        EXIT_REPORT
        + """
tm.exit_timeout = 30
started = threading.Event()
def cooperative():
    me = current_task_id()
    started.set()
    while not tm.is_cancel_requested(me):
        time.sleep(0.005)
    print("stopped on request", flush=True)
ids.append(tm.submit_task(cooperative))
assert started.wait(30)
"""
    )
    assert_clean_exit(result)
    assert result.stdout.splitlines() == ["stopped on request", "after exit hook: ['CANCELLED']"]


def test_sys_exit_and_an_uncaught_exception_with_a_task_running_are_clean():
    for ending, code in (("sys.exit(3)", 3), ("raise SystemError('boom')", 1)):
        result = run_python(
            EXIT_REPORT
            + f"""
started = threading.Event()
ids.append(tm.submit_task(lambda: started.set() or time.sleep(60)))
assert started.wait(30)
{ending}
"""
        )
        assert_clean_exit(result, code)


def test_exit_with_a_coroutine_task_running_and_threads_blocked_in_waits_is_clean():
    result = run_python(
        EXIT_REPORT
        + """
import asyncio
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
async def forever():
    await asyncio.sleep(3600)
ids.append(tm.submit_task(forever, loop=loop))
ids.append(tm.submit_task(lambda: None))
threading.Thread(target=lambda: tm.wait(ids[1]), daemon=True).start()
threading.Thread(target=lambda: list(tm.watch(ids[0])), daemon=True).start()
while tm.get_task_status(ids[0])["status"] != "PROCESSING":
    time.sleep(0.01)
"""
    )
    assert_clean_exit(result)
    assert result.stdout.splitlines() == ["after exit hook: ['CANCELLED', 'CANCELLED']"]


def test_submitting_during_exit_is_refused_cleanly():
    result = run_python(
        """
import atexit
from storyflow_tasks import get_task_manager, ShutDownError
tm = get_task_manager()
def late():
    try:
        tm.submit_task(lambda: None)
    except ShutDownError as error:
        print("refused:", error)
atexit.register(late)
tm.submit_task(lambda: None)   # installs the exit hook after `late`, so the hook runs first
"""
    )
    assert_clean_exit(result)
    assert result.stdout.startswith("refused: the Python interpreter is exiting")


# ----- fork and multiprocessing --------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_fresh_working_manager(tm, gate):
    held = gate().wait_started()
    queued = tm.submit_task(lambda: None)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            report = run_one_task_here([held.task_id, queued])
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read() or "{}")
    _, wait_status = os.waitpid(pid, 0)
    assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
    assert report["status"] == TASK_COMPLETED and report["ran_here"]
    assert report["parent_tasks_visible"] == [False, False]
    assert report["listed"] == [report["task_id"]]
    # The parent is untouched: its tasks are where they were and still run, here only.
    assert tm.get_task_status(held.task_id)["status"] == TASK_PROCESSING
    assert tm.get_task_status(report["task_id"]) is None
    held.open()
    assert tm.wait(queued, timeout=HANG_GUARD)["status"] == TASK_COMPLETED


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_children_each_run_their_own_tasks(tm, gate, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    held = gate().wait_started()
    context = multiprocessing.get_context(method)
    with context.Pool(processes=2, maxtasksperchild=1) as pool:
        reports = pool.map(run_one_task_here, [[held.task_id]] * 2, chunksize=1)
    assert len({r["pid"] for r in reports} | {os.getpid()}) == 3
    for report in reports:
        assert report["status"] == TASK_COMPLETED and report["ran_here"]
        assert report["parent_tasks_visible"] == [False]
        assert report["listed"] == [report["task_id"]]
    assert tm.get_task_status(held.task_id)["status"] == TASK_PROCESSING


def test_the_child_of_a_fork_during_a_wait_does_not_inherit_a_held_lock():
    """Fork while another thread sits in the library and in the binding: the child must not hang."""
    result = run_python(
        """
import os, threading, time, json, sys
sys.path.insert(0, %r)
from mp_helpers import run_one_task_here
from storyflow_tasks import get_task_manager
tm = get_task_manager()
release = threading.Event()
held = tm.submit_task(lambda: release.wait(30))
for _ in range(4):
    threading.Thread(target=lambda: tm.wait(held), daemon=True).start()
time.sleep(0.05)
pid = os.fork()
if pid == 0:
    report = run_one_task_here([held])
    os._exit(0 if report["status"] == "COMPLETED" and report["parent_tasks_visible"] == [False] else 1)
_, status = os.waitpid(pid, 0)
release.set()
print(os.WEXITSTATUS(status), tm.wait(held)["status"])
"""
        % os.path.dirname(__file__)
    )
    assert_clean_exit(result)
    assert result.stdout.split() == ["0", "COMPLETED"]
