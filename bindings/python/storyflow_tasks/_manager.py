"""The ``TaskManager`` singleton over the shared library, and the thread that runs Python tasks.

How a Python task runs. ``submit_task`` queues an *external* task in the
library (``sft_submit_external_task``): it takes its FIFO place among every
task of the process, C and Node ones included. When the library's worker
reaches it, the task becomes ``PROCESSING`` and holds the worker. A Python
daemon thread, the runner, long-polls its own oldest task
(``sft_wait_task_change``, GIL released), sees it start, calls the function,
and reports the outcome with ``sft_finish_task``; the worker then moves on.

Why not a ctypes callback run by the library's worker thread: at interpreter
exit, a foreign thread that is inside Python is terminated with
``pthread_exit`` when it next takes the GIL, and that forced unwind through the
library's Rust frames aborts the process ("FATAL: exception not rethrown").
With the runner, the library never calls into Python at all: there is no
callback to keep alive, and a process that exits with a Python task running
or queued ends cleanly.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import ctypes
import inspect
import json
import logging
import math
import os
import threading
import types
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Deque, Dict, FrozenSet, Iterator, List, Mapping, Optional, Tuple, Union

from ._errors import InvalidArgumentError, InvalidStateError, ShutDownError, TaskNotFoundError, TaskTimeoutError
from ._events import EventHub
from ._native import (
    SFT_ERR_INVALID_ARGUMENT,
    SFT_ERR_INVALID_STATE,
    SFT_ERR_NOT_FOUND,
    SFT_ERR_TIMEOUT,
    SFT_MAX_TIMEOUT_MS,
    SFT_OK,
    SFT_WAIT_FOREVER,
    Native,
    encode_text,
    native,
)
from ._status import TASK_CANCELLED, TASK_COMPLETED, TASK_FAILED, TASK_PENDING, TASK_PROCESSING, TaskStatus

#: The states a task never leaves.
FINISHED_STATES: FrozenSet[str] = frozenset({TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED})

#: What ``submit_task`` runs: a function of no arguments, or an async one.
TaskFunction = Callable[[], Any]

_logger = logging.getLogger("storyflow_tasks")

# The main thread waits in slices so that Ctrl-C is seen between them; a slice
# ends early on the awaited change, so this bounds only the reaction to a signal.
_MAIN_THREAD_SLICE_MS = 200
# How often the runner checks that the loop of a running coroutine was not closed under it.
_COROUTINE_LOOP_CHECK_MS = 500

_current_task: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("storyflow_tasks_current", default=None)


def current_task_id() -> Optional[str]:
    """The id of the Python task whose function (or coroutine) is running in this context, else ``None``.

    Task functions take no arguments, as in the original StoryFlow ``tasks.py``
    design; this is how one finds its own id, to report progress or poll
    ``is_cancel_requested``.
    """
    return _current_task.get()


class _Entry:
    """A Python task the runner will serve: its id, its function, and the loop of a coroutine function."""

    __slots__ = ("task_id", "function", "loop")

    def __init__(self, task_id: str, function: Optional[TaskFunction], loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.task_id = task_id
        self.function = function
        self.loop = loop


class _PythonTasks:
    """The process's Python tasks: the runner's queue (submission order) and the one running."""

    def __init__(self) -> None:
        self.condition = threading.Condition(threading.Lock())
        self.queue: Deque[_Entry] = deque()
        self.running: Optional[_Entry] = None
        self.runner: Optional[threading.Thread] = None
        #: The runner waits for work: only then does a submission need to notify it.
        self.runner_idle = False
        self.exiting = False
        self.hub: Optional[EventHub] = None


_state = _PythonTasks()
_exit_hook_installed = False


# ----- describing outcomes -------------------------------------------------------------


def _describe(error: BaseException) -> str:
    """``"ExcType: message"``, the text a failed task's ``error`` carries."""
    name = type(error).__name__
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not lose the failure itself
        text = "<the exception's text could not be rendered>"
    return f"{name}: {text}" if text else name


def _sanitised(message: str) -> bytes:
    # Exception text is arbitrary: keep it whole rather than refuse it, but never cut it at a NUL.
    return message.replace("\x00", "\\x00").encode("utf-8", "backslashreplace")


def _shortened(message: bytes, limit: int) -> bytes:
    marker = b" [...]"
    if limit <= len(marker):
        return message[:limit].decode("utf-8", "ignore").encode()
    return message[: limit - len(marker)].decode("utf-8", "ignore").encode() + marker


def _finish(lib: Native, task_id: str, code: int, message: Optional[str]) -> None:
    """Reports a Python task's outcome; never raises (it runs on the runner and in loop callbacks)."""
    task = task_id.encode()
    text = None if message is None else _sanitised(message)
    result = lib.sft_finish_task(task, code, text)
    if result == SFT_ERR_INVALID_ARGUMENT and text is not None:
        # Over max_message_bytes: keep the start of it; a task must never stay PROCESSING.
        limit = int(lib.take_json(lib.sft_get_config())["max_message_bytes"])
        result = lib.sft_finish_task(task, code, _shortened(text, limit))
        if result == SFT_ERR_INVALID_ARGUMENT:
            result = lib.sft_finish_task(task, code, None)
    if result in (SFT_ERR_NOT_FOUND, SFT_ERR_INVALID_STATE):
        return  # already finished elsewhere (the exit hook, or a shutdown path): nothing to report
    if result != SFT_OK:
        _logger.error("storyflow_tasks: could not finish task %r: %s", task_id, lib.last_error_message())


# ----- the runner -----------------------------------------------------------------------


def _serve(state: _PythonTasks, lib: Native) -> None:
    """The runner thread: serves the Python tasks one by one, in submission order."""
    while True:
        with state.condition:
            while not state.queue:
                state.runner_idle = True
                state.condition.wait()
            state.runner_idle = False
            entry = state.queue[0]
        try:
            _serve_one(state, lib, entry)
        except BaseException:  # the runner must outlive any one task
            _logger.exception("storyflow_tasks: the runner failed on task %r", entry.task_id)
            _finish(lib, entry.task_id, 1, "InternalError: the Python task runner failed; see the log")
        with state.condition:
            state.queue.popleft()
            state.running = None


def _await_start(lib: Native, task_id: str) -> Optional[TaskStatus]:
    """Blocks (GIL released) until the task leaves PENDING; its status if it is now running, else None."""
    task = task_id.encode()
    status: Optional[TaskStatus] = lib.take_json(lib.sft_get_task_status(task))
    while status is not None and status["status"] == TASK_PENDING:
        code, text = lib.call_with_out_string(lib.sft_wait_task_change, task, status["revision"], SFT_WAIT_FOREVER)
        if code == SFT_ERR_NOT_FOUND:
            return None
        lib.check(code, f"waiting for task {task_id!r} to start")
        status = json.loads(text) if text else None
    if status is None or status["status"] != TASK_PROCESSING:
        return None  # cancelled before it ran, or already removed
    return status


def _serve_one(state: _PythonTasks, lib: Native, entry: _Entry) -> None:
    status = _await_start(lib, entry.task_id)
    if status is None:
        return
    with state.condition:
        exiting = state.exiting
        if not exiting:
            state.running = entry
    if exiting or status.get("cancel_requested"):
        _finish(lib, entry.task_id, 1, "cancelled before the Python function started")
        return
    if entry.loop is None:
        _run_function(lib, entry)
    else:
        _run_coroutine(lib, entry, status["revision"])


def _run_function(lib: Native, entry: _Entry) -> None:
    function, entry.function = entry.function, None  # the task holds no reference once it ran
    assert function is not None
    token = _current_task.set(entry.task_id)
    try:
        result = function()
    except BaseException as error:  # SystemExit and the like fail the task, not the runner
        _logger.error("storyflow_tasks: task %r failed", entry.task_id, exc_info=True)
        _finish(lib, entry.task_id, 1, _describe(error))
        return
    finally:
        _current_task.reset(token)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose: no "never awaited" warning
        _finish(lib, entry.task_id, 1, "TypeError: the task function returned an awaitable; submit the async function itself")
        return
    _finish(lib, entry.task_id, 0, None)


def _run_coroutine(lib: Native, entry: _Entry, revision: int) -> None:
    """Runs a coroutine task on its loop (deferred completion) and holds the runner until it finishes.

    The outcome is reported by the asyncio task's done callback, so the task
    stays PROCESSING (and keeps the worker) until the coroutine has really
    ended, its handling of a cancellation included.
    """
    loop = entry.loop
    function, entry.function = entry.function, None
    assert loop is not None and function is not None
    started: List[asyncio.Task[Any]] = []
    # call_soon_threadsafe copies this context into the asyncio task: current_task_id() works inside it.
    token = _current_task.set(entry.task_id)
    coroutine: Any = None
    try:
        awaitable = function()
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"the async task function returned {type(awaitable).__name__}, not an awaitable")
        coroutine = awaitable if inspect.iscoroutine(awaitable) else _awaiting(awaitable)

        def start() -> None:
            task = loop.create_task(coroutine)
            started.append(task)
            task.add_done_callback(lambda done: _finish_from_task(lib, entry.task_id, done))

        loop.call_soon_threadsafe(start)
    except BaseException as error:
        if inspect.iscoroutine(coroutine):
            coroutine.close()
        _finish(lib, entry.task_id, 1, _describe(error))
        return
    finally:
        _current_task.reset(token)

    task_id = entry.task_id.encode()
    cancelling = False
    while True:
        code, text = lib.call_with_out_string(lib.sft_wait_task_change, task_id, revision, _COROUTINE_LOOP_CHECK_MS)
        if code == SFT_OK and text:
            status = json.loads(text)
            if status["status"] in FINISHED_STATES:
                return
            revision = status["revision"]
            if status.get("cancel_requested") and not cancelling and not loop.is_closed():
                cancelling = True
                loop.call_soon_threadsafe(lambda: [task.cancel() for task in started])
        elif code == SFT_ERR_TIMEOUT:
            if loop.is_closed():
                if not started:
                    coroutine.close()  # the loop closed before it ever ran the coroutine
                _finish(lib, entry.task_id, 1, "RuntimeError: the event loop was closed before the coroutine finished")
                return
        else:
            return  # the task is gone from the registry: nothing left to wait for


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _finish_from_task(lib: Native, task_id: str, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        _finish(lib, task_id, 1, "CancelledError: the coroutine was cancelled")
        return
    error = task.exception()
    if error is not None:
        _logger.error("storyflow_tasks: task %r failed", task_id, exc_info=error)
        _finish(lib, task_id, 1, _describe(error))
    else:
        _finish(lib, task_id, 0, None)


# ----- process exit and fork -------------------------------------------------------------


def _on_interpreter_exit() -> None:
    """Before finalisation: no Python task may be left holding the library's worker.

    Queued Python tasks are cancelled (they never run); the running one is
    asked to cancel and given ``TaskManager.exit_timeout`` seconds, then failed,
    so that C tasks queued behind it can still run in a host that outlives the
    interpreter.
    """
    state = _state
    with state.condition:
        state.exiting = True
        queued = [entry.task_id for entry in state.queue]
        running = state.running
    if not queued:
        return
    lib = native()
    for task_id in queued:
        lib.sft_cancel_task(task_id.encode())
    if running is None:
        return
    timeout_ms = _timeout_ms(TaskManager._exit_timeout)
    code = lib.sft_wait_task(running.task_id.encode(), timeout_ms, None)
    if code == SFT_ERR_TIMEOUT:
        _finish(lib, running.task_id, 1, "the Python interpreter exited while the task was running")


def _install_exit_hook() -> None:
    global _exit_hook_installed
    if not _exit_hook_installed:
        atexit.register(_on_interpreter_exit)
        _exit_hook_installed = True


def _reset_after_fork() -> None:
    # The child has none of the parent's threads: a fresh manager in the library
    # (its own fork handler) and fresh Python state here, with unheld locks.
    global _state
    _state = _PythonTasks()
    TaskManager._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# ----- argument conversion ----------------------------------------------------------------


def _timeout_ms(timeout: Optional[float]) -> int:
    """Seconds (``None``: no limit) as the library's milliseconds, rounded up so a wait never ends early."""
    if timeout is None:
        return SFT_WAIT_FOREVER
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout < 0:
        raise InvalidArgumentError(f"timeout must be finite and >= 0, not {timeout!r}")
    milliseconds = math.ceil(timeout * 1000)
    if milliseconds > SFT_MAX_TIMEOUT_MS:
        raise InvalidArgumentError(f"timeout must be at most {SFT_MAX_TIMEOUT_MS // 1000} seconds, not {timeout!r}")
    return milliseconds


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value < 2**64:
        # A huge int is not even printable (Python caps int-to-str at 4300 digits): describe it instead.
        shown = str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
        raise InvalidArgumentError(f"{what} must be in 0..2**64-1, not {shown}")
    return value


def _segment_id_json(segment_id: object) -> bytes:
    """A segment id as a JSON literal, so that it comes back with its type: 7 stays 7, "7" stays "7"."""
    if isinstance(segment_id, bool) or not isinstance(segment_id, (int, str)):
        raise TypeError(f"segment_id must be an int or a str, not {type(segment_id).__name__}")
    if isinstance(segment_id, str):
        encode_text(segment_id, "segment_id")  # refuses NUL and unencodable text with a clear error
    try:
        return json.dumps(segment_id).encode()
    except ValueError as error:  # an int past Python's int-to-str digit limit
        raise InvalidArgumentError(f"segment_id cannot be written as JSON: {error}") from None


def _is_async_function(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` makes a coroutine; plain functions take a fast path (submit is hot)."""
    if type(function) is types.FunctionType and not hasattr(function, "_is_coroutine_marker") and not hasattr(function, "_is_coroutine"):
        return bool(function.__code__.co_flags & inspect.CO_COROUTINE)
    if inspect.iscoroutinefunction(function) or asyncio.iscoroutinefunction(function):
        return True
    # An instance whose class defines `async def __call__`.
    call = getattr(type(function), "__call__", None)  # noqa: B004 - the method itself: is it async?
    return call is not None and inspect.iscoroutinefunction(call)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ----- the manager --------------------------------------------------------------------------


class TaskManager:
    """The process-wide task manager: one worker, one registry, shared with C and Node code in the process.

    ``TaskManager()`` always returns the same instance (a singleton, as in the original design);
    creating it loads the shared library, raising ``LibraryLoadError`` with
    every place it looked if that fails.
    """

    _instance: Optional[TaskManager] = None
    _lock = threading.Lock()
    _exit_timeout: float = 2.0

    def __new__(cls) -> TaskManager:
        instance = cls._instance
        if instance is None:
            with cls._lock:
                instance = cls._instance
                if instance is None:
                    instance = super().__new__(cls)
                    instance._init()
                    cls._instance = instance
        return instance

    def _init(self) -> None:
        self._native = native()

    def __repr__(self) -> str:
        return f"<storyflow_tasks.TaskManager library={self._native.path!r}>"

    # ----- configuration of the binding -----------------------------------------------

    @property
    def exit_timeout(self) -> float:
        """Seconds a running Python task gets to return at interpreter exit before it is failed (default 2)."""
        return TaskManager._exit_timeout

    @exit_timeout.setter
    def exit_timeout(self, seconds: float) -> None:
        _timeout_ms(seconds)  # validates
        TaskManager._exit_timeout = float(seconds)

    @property
    def library_path(self) -> str:
        """The shared library file this process loaded."""
        return self._native.path

    @property
    def library_version(self) -> str:
        """The loaded library's version, e.g. ``"0.1.0"``."""
        return self._native.version()

    # ----- the original design's surface ------------------------------------------------------------

    def submit_task(
        self,
        task_fn: TaskFunction,
        task_id: Optional[str] = None,
        *,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> str:
        """Queues ``task_fn`` and returns the task id (a new UUIDv4 when ``task_id`` is ``None``).

        ``task_fn()`` takes no arguments and runs after every task submitted
        before it, in this process, from any language. An exception it raises
        makes the task ``FAILED`` with ``"ExcType: message"`` as ``error``.

        An ``async def`` function runs as a coroutine on ``loop``, or on the
        loop running in the caller when ``loop`` is ``None``; it holds the
        worker until it completes, like any task.

        Raises ``TypeError`` (not callable, bad types), ``DuplicateTaskIdError``
        (a ``ValueError``), ``QueueFullError``, ``ShutDownError``,
        ``InvalidArgumentError``.
        """
        if not callable(task_fn):
            raise TypeError(f"task_fn must be callable, not {type(task_fn).__name__}")
        encoded_id = None if task_id is None else encode_text(task_id, "task_id")
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
        if _is_async_function(task_fn):
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    raise RuntimeError(
                        "submit_task() got an async function but no event loop runs here: call it from a coroutine, or pass loop="
                    ) from None
        elif loop is not None:
            raise TypeError("loop= is only for async task functions; this one is a plain function")
        lib = self._native
        state = _state
        with state.condition:
            if state.exiting:
                raise ShutDownError("the Python interpreter is exiting: no new tasks")
            if task_id is not None:
                code = lib.sft_submit_external_task(encoded_id, None)
                new_id = task_id
            else:
                code, generated = lib.call_with_out_string(lib.sft_submit_external_task, None)
                new_id = generated or ""
            if code != SFT_OK:
                lib.raise_for(code, "submit_task")
            state.queue.append(_Entry(new_id, task_fn, loop))
            if state.runner is None:
                _install_exit_hook()
                state.runner = threading.Thread(target=_serve, args=(state, lib), name="storyflow-tasks-runner", daemon=True)
                state.runner.start()
            elif state.runner_idle:
                state.condition.notify()
        return new_id

    def get_task_status(self, task_id: str) -> Optional[TaskStatus]:
        """A fresh dict of the task's status (the wire format), or ``None`` for an unknown id."""
        lib = self._native
        # The common case skips the general checks' overhead.
        fast = type(task_id) is str and task_id.isascii() and "\x00" not in task_id
        task = task_id.encode() if fast else encode_text(task_id, "task_id")
        pointer = lib.sft_get_task_status(task)
        if not pointer:
            return None
        try:
            status: TaskStatus = json.loads(ctypes.string_at(pointer))
        finally:
            lib.sft_string_free(pointer)
        return status

    def update_task_progress(self, task_id: str, current: int, total: int, **kwargs: Any) -> bool:
        """Replaces the task's progress; ``percentage`` is ``current*100//total`` clamped to 0..100 (0 when ``total`` is 0).

        Keyword arguments (e.g. ``current_segment_id=7``) sit beside
        ``current``, ``total`` and ``percentage`` with their JSON types. As in
        the original design, an unknown task id is ignored: the result is ``False`` then,
        ``True`` when recorded.
        """
        task = encode_text(task_id, "task_id")
        current = _count(current, "current")
        total = _count(total, "total")
        extra = None
        if kwargs:
            try:
                extra = json.dumps(kwargs, allow_nan=False).encode()
            except TypeError as error:
                raise TypeError(f"progress values must be JSON-serialisable: {error}") from None
            except ValueError as error:
                raise InvalidArgumentError(f"progress values must be valid JSON: {error}") from None
        lib = self._native
        return self._mutation_outcome(lib.sft_update_task_progress(task, current, total, extra), "update_task_progress")

    def add_completed_segment(self, task_id: str, segment_id: Union[int, str], result: Mapping[str, Any]) -> bool:
        """Records a finished segment from ``result["audio_url"]`` and ``result["duration"]`` (seconds).

        ``segment_id`` keeps its type (``int`` or ``str``). An unknown task id is
        ignored, as in the original design: ``False`` then, ``True`` when recorded.
        """
        task = encode_text(task_id, "task_id")
        segment = _segment_id_json(segment_id)
        if not isinstance(result, Mapping):
            raise TypeError(f"result must be a mapping with 'audio_url' and 'duration', not {type(result).__name__}")
        missing = [key for key in ("audio_url", "duration") if key not in result]
        if missing:
            raise InvalidArgumentError(f"result lacks {', '.join(repr(key) for key in missing)}")
        audio_url = encode_text(result["audio_url"], "result['audio_url']")
        duration = result["duration"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise TypeError(f"result['duration'] must be a number of seconds, not {type(duration).__name__}")
        lib = self._native
        code = lib.sft_add_completed_segment_json(task, segment, audio_url, float(duration))
        return self._mutation_outcome(code, "add_completed_segment")

    def add_error(self, task_id: str, segment_id: Union[int, str], error_message: str) -> bool:
        """Records a segment that failed. ``segment_id`` keeps its type; an unknown task id is ignored (``False``)."""
        task = encode_text(task_id, "task_id")
        segment = _segment_id_json(segment_id)
        message = encode_text(error_message, "error_message")
        lib = self._native
        return self._mutation_outcome(lib.sft_add_error_json(task, segment, message), "add_error")

    def _mutation_outcome(self, code: int, action: str) -> bool:
        if code == SFT_ERR_NOT_FOUND:
            return False  # the original design's "silently ignore unknown task ids"
        self._native.check(code, action)
        return True

    # ----- cancellation ------------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Cancels a task: a pending one at once (it never runs), a running one by request.

        Returns ``True`` if the task is ``CANCELLED`` when the call returns,
        ``False`` if it is running and was asked to stop (it polls
        ``is_cancel_requested``; a coroutine task is cancelled through asyncio).
        Raises ``TaskNotFoundError``, or ``InvalidStateError`` if it already finished.
        """
        task = encode_text(task_id, "task_id")
        lib = self._native
        lib.check(lib.sft_cancel_task(task), f"cancel({task_id!r})")
        status = lib.take_json(lib.sft_get_task_status(task))
        return status is not None and status["status"] == TASK_CANCELLED

    def is_cancel_requested(self, task_id: str) -> bool:
        """Whether cancellation of the task was requested; cheap enough to poll between segments."""
        requested = ctypes.c_bool(False)
        lib = self._native
        code = lib.sft_is_cancel_requested(encode_text(task_id, "task_id"), ctypes.byref(requested))
        lib.check(code, f"is_cancel_requested({task_id!r})")
        return bool(requested.value)

    # ----- waiting ---------------------------------------------------------------------------------

    def wait(self, task_id: str, timeout: Optional[float] = None) -> TaskStatus:
        """Blocks (GIL released) until the task is finished; returns its final status.

        Raises ``TaskTimeoutError`` after ``timeout`` seconds, ``TaskNotFoundError``,
        and ``InvalidStateError`` when called from inside a task for a task that
        needs the worker (it would wait forever).
        """
        self._refuse_deadlock(task_id, until_finished=True)
        return self._long_poll(self._native.sft_wait_task, task_id, (), timeout, f"wait({task_id!r})")

    def watch(self, task_id: str, timeout: Optional[float] = None) -> Iterator[TaskStatus]:
        """Iterates over the task's statuses: the current one, then one per change, ending with the final one.

        Each change is awaited by long-polling (``sft_wait_task_change``), not
        by sleeping; bursts of changes may be coalesced into one status.
        ``timeout`` bounds the wait for each next change (``TaskTimeoutError``).
        """
        first = self.get_task_status(task_id)
        if first is None:
            raise TaskNotFoundError(f"watch({task_id!r}): no task with this id")
        _timeout_ms(timeout)  # validated now, not at the first change
        return self._watching(task_id, first, timeout)

    def _watching(self, task_id: str, status: TaskStatus, timeout: Optional[float]) -> Iterator[TaskStatus]:
        lib = self._native
        yield status
        while status["status"] not in FINISHED_STATES:
            self._refuse_deadlock(task_id, until_finished=False)
            status = self._long_poll(lib.sft_wait_task_change, task_id, (status["revision"],), timeout, f"watch({task_id!r})")
            yield status

    def _long_poll(self, function: Any, task_id: str, args: Tuple[Any, ...], timeout: Optional[float], action: str) -> TaskStatus:
        """Calls a waiting function of the library, in slices on the main thread so that signals get through."""
        lib = self._native
        task = encode_text(task_id, "task_id")
        remaining = _timeout_ms(timeout)
        while True:
            step = remaining
            if _on_main_thread() and (remaining == SFT_WAIT_FOREVER or remaining > _MAIN_THREAD_SLICE_MS):
                step = _MAIN_THREAD_SLICE_MS
            code, text = lib.call_with_out_string(function, task, *args, step)
            if code == SFT_OK and text is not None:
                status: TaskStatus = json.loads(text)
                return status
            if code == SFT_ERR_TIMEOUT and step != remaining:
                if remaining != SFT_WAIT_FOREVER:
                    remaining -= step
                continue
            lib.raise_for(code, action)

    def _refuse_deadlock(self, task_id: str, until_finished: bool) -> None:
        """Inside a Python task, waiting for a task that needs the worker would never end: refuse it."""
        if _current_task.get() is None:
            return
        status = self.get_task_status(task_id)
        if status is None:
            return  # the wait itself reports the unknown id
        state = status["status"]
        if state == TASK_PENDING or (until_finished and state == TASK_PROCESSING):
            raise InvalidStateError(
                f"waiting inside a task for task {task_id!r} ({state}) would deadlock: it needs the worker "
                f"this task is holding (SFT_ERR_INVALID_STATE)"
            )

    # ----- asyncio ------------------------------------------------------------------------------

    def _hub(self) -> EventHub:
        state = _state
        with state.condition:
            if state.hub is None:
                state.hub = EventHub(self._native)
            return state.hub

    async def wait_async(self, task_id: str, timeout: Optional[float] = None) -> TaskStatus:
        """Awaits the task's end without blocking the event loop; returns its final status.

        Woken by the library's change feed (one shared thread), never by
        polling on the loop. Errors as ``wait``.
        """
        loop = asyncio.get_running_loop()
        _timeout_ms(timeout)
        deadline = None if timeout is None else loop.time() + timeout
        hub = self._hub()
        subscription = hub.subscribe(task_id, loop)
        try:
            while True:
                subscription.changed.clear()  # before reading, so no change after the read is missed
                status = self.get_task_status(task_id)
                if status is None:
                    raise TaskNotFoundError(f"wait_async({task_id!r}): no task with this id (SFT_ERR_NOT_FOUND)")
                if status["status"] in FINISHED_STATES:
                    return status
                self._refuse_deadlock(task_id, until_finished=True)
                await self._changed(subscription.changed, deadline, loop, f"wait_async({task_id!r})")
        finally:
            hub.unsubscribe(subscription)

    def watch_async(self, task_id: str, timeout: Optional[float] = None) -> AsyncIterator[TaskStatus]:
        """``async for status in tm.watch_async(task_id)``: the current status, one per change, then the final one.

        ``timeout`` bounds the wait for each next change (``TaskTimeoutError``).
        """
        if self.get_task_status(task_id) is None:
            raise TaskNotFoundError(f"watch_async({task_id!r}): no task with this id (SFT_ERR_NOT_FOUND)")
        _timeout_ms(timeout)
        return self._watching_async(task_id, timeout)

    async def _watching_async(self, task_id: str, timeout: Optional[float]) -> AsyncIterator[TaskStatus]:
        loop = asyncio.get_running_loop()
        hub = self._hub()
        subscription = hub.subscribe(task_id, loop)
        try:
            revision = -1
            while True:
                subscription.changed.clear()
                status = self.get_task_status(task_id)
                if status is None:
                    return  # removed from the registry: nothing more will happen to it
                if status["revision"] != revision:
                    revision = status["revision"]
                    yield status
                if status["status"] in FINISHED_STATES:
                    return
                self._refuse_deadlock(task_id, until_finished=False)
                deadline = None if timeout is None else loop.time() + timeout
                await self._changed(subscription.changed, deadline, loop, f"watch_async({task_id!r})")
        finally:
            hub.unsubscribe(subscription)

    @staticmethod
    async def _changed(changed: asyncio.Event, deadline: Optional[float], loop: asyncio.AbstractEventLoop, action: str) -> None:
        if deadline is None:
            await changed.wait()
            return
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise TaskTimeoutError(f"{action}: the task did not change in time (SFT_ERR_TIMEOUT)") from None

    # ----- registry, statistics, configuration, shutdown ---------------------------------------------

    def list_tasks(self, status: Optional[str] = None) -> List[TaskStatus]:
        """Statuses of every task in the registry (or those in state ``status``), in submission order."""
        lib = self._native
        wanted = None if status is None else encode_text(status, "status")
        code, text = lib.call_with_out_string(lib.sft_list_tasks, wanted)
        lib.check(code, "list_tasks")
        statuses: List[TaskStatus] = json.loads(text) if text else []
        return statuses

    def stats(self) -> Dict[str, Any]:
        """Counts by state, queue depth, totals submitted/completed/failed/cancelled and run times."""
        lib = self._native
        stats: Dict[str, Any] = lib.take_json(lib.sft_get_stats())
        return stats

    def configure(self, **settings: Any) -> None:
        """Sets the library's configuration (``cleanup_threshold_secs``, ``max_pending_tasks``, …).

        Only before the first submission in the process; afterwards a change
        raises ``InvalidStateError``. Unknown keys and bad values raise
        ``InvalidArgumentError``.
        """
        try:
            text = json.dumps(settings, allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise InvalidArgumentError(f"configure: settings must be JSON values: {error}") from None
        lib = self._native
        lib.check(lib.sft_configure(text), "configure")

    def get_config(self) -> Dict[str, Any]:
        """The configuration in force, every key included."""
        lib = self._native
        config: Dict[str, Any] = lib.take_json(lib.sft_get_config())
        return config

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Shuts the process's manager down for good: later submissions raise ``ShutDownError``.

        Pending tasks are cancelled; the running one is asked to cancel and
        awaited up to ``timeout`` seconds (``TaskTimeoutError`` if it did not
        finish). From inside a task it does everything but wait. Reads and
        waits keep working.
        """
        milliseconds = _timeout_ms(timeout)
        lib = self._native
        inside_a_task = _current_task.get() is not None
        code = lib.sft_shutdown(0 if inside_a_task else milliseconds)
        if code == SFT_ERR_TIMEOUT and inside_a_task:
            return
        lib.check(code, "shutdown")


def get_task_manager() -> TaskManager:
    """The process-wide ``TaskManager`` (the original design's convenience accessor)."""
    return TaskManager()
