"""The ``TaskManager`` singleton over the shared library.

Every call converts its arguments and calls the library, which owns every
rule; Python tasks are run by the runner (``_runner.py``).
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import inspect
import json
import math
import os
import threading
import types
from typing import Any, AsyncIterator, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Tuple, TypeVar, Union

from ._errors import InvalidArgumentError, InvalidStateError, StoryflowTasksError, TaskNotFoundError, TaskTimeoutError
from ._events import EventHub
from ._native import (
    SFT_ERR_INVALID_STATE,
    SFT_ERR_NOT_FOUND,
    SFT_ERR_TIMEOUT,
    SFT_MAX_TIMEOUT_MS,
    SFT_OK,
    SFT_WAIT_FOREVER,
    encode_text,
    native,
)
from ._runner import HandlerFunction, TaskFunction, current_task_id, event_hub, on_runner_thread, runner, yield_task
from ._status import TASK_CANCELLED, TASK_COMPLETED, TASK_FAILED, TASK_PENDING, TASK_PROCESSING, TaskStatus

__all__ = ["Deadline", "FINISHED_STATES", "HandlerFunction", "TaskFunction", "TaskManager", "current_task_id", "get_task_manager"]

_Handler = TypeVar("_Handler", bound=HandlerFunction)

#: A task's deadline as a submit takes it: Unix epoch seconds (like the status times), or an aware ``datetime``.
Deadline = Union[float, datetime.datetime]

#: The states a task never leaves.
FINISHED_STATES: FrozenSet[str] = frozenset({TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED})

# The main thread waits in slices so that Ctrl-C is seen between them; a slice
# ends early on the awaited change, so this bounds only the reaction to a signal.
_MAIN_THREAD_SLICE_MS = 200

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


def _wire_json(value: Any, what: str) -> bytes:
    """A wire object as JSON text for the library: every string escaped to ASCII, so NUL and every character arrive.

    A lone surrogate goes as its escape, which the library refuses naming it;
    NaN and infinities go as Python writes them, which the library refuses as
    not JSON numbers: the library gives every language the same answer.
    """
    try:
        return json.dumps(value).encode("ascii")
    except TypeError as error:
        raise TypeError(f"{what} must be JSON-serialisable: {error}") from None
    except ValueError as error:  # an int past Python's int-to-str digit limit, or a circular reference
        raise InvalidArgumentError(f"{what} cannot be written as JSON: {error}") from None


def _option_json(value: Any, key: str, wanted: str, call: str) -> str:
    """One submit option as JSON text; the library judges the value and names the key it refuses.

    Only what JSON cannot carry is refused here (NaN and the infinities, which
    ``json.dumps`` would write as no JSON number), naming the key as the
    library names it for every other bad value.
    """
    try:
        return json.dumps(value, allow_nan=False)
    except TypeError:
        raise TypeError(f"{call}: {key} must be {wanted}, not {type(value).__name__}") from None
    except ValueError:
        shown = repr(value) if isinstance(value, float) else "a value"
        raise InvalidArgumentError(f"{call}: {key} is {shown}, which JSON cannot carry") from None


def _epoch_seconds(deadline: object, call: str) -> object:
    """An aware ``datetime`` as Unix epoch seconds; any other value as given, for the library to judge."""
    if not isinstance(deadline, datetime.datetime):
        return deadline
    if deadline.utcoffset() is None:
        # A naive datetime names no instant: guessing the local zone would move the deadline by hours.
        raise InvalidArgumentError(f"{call}: deadline is a naive datetime; give one with a tzinfo, or Unix epoch seconds")
    return deadline.timestamp()


def _schedule_json(priority: object, deadline: object, call: str) -> Optional[bytes]:
    """The submit options for the library's ``*_with_options`` functions, or ``None`` for the defaults.

    The library parses and checks them (an integer priority in i32 range, a
    finite deadline >= 0 or null) and refuses a bad one naming its key.
    """
    if deadline is None and type(priority) is int and priority == 0:
        return None  # the defaults: no JSON to write or parse on the common path
    parts = [f'"priority":{_option_json(priority, "priority", "an int", call)}']
    if deadline is not None:
        seconds = _epoch_seconds(deadline, call)
        parts.append(f'"deadline":{_option_json(seconds, "deadline", "Unix epoch seconds or an aware datetime", call)}')
    return ("{" + ",".join(parts) + "}").encode("ascii")


def _is_async_function(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` makes a coroutine; plain functions take a fast path (submit is hot)."""
    if type(function) is types.FunctionType and not hasattr(function, "_is_coroutine_marker") and not hasattr(function, "_is_coroutine"):
        return bool(function.__code__.co_flags & inspect.CO_COROUTINE)
    if inspect.iscoroutinefunction(function) or asyncio.iscoroutinefunction(function):
        return True
    # An instance whose class defines `async def __call__`.
    call = getattr(type(function), "__call__", None)  # noqa: B004 - the method itself: is it async?
    return call is not None and inspect.iscoroutinefunction(call)


def _coroutine_loop(
    function: Callable[..., Any], loop: Optional[asyncio.AbstractEventLoop], call: str
) -> Optional[asyncio.AbstractEventLoop]:
    """The loop a function runs on: ``loop`` or the caller's running loop for an async one, ``None`` for a plain one."""
    if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
    if _is_async_function(function):
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    f"{call} got an async function but no event loop runs here: call it from a coroutine, or pass loop="
                ) from None
        return loop
    if loop is not None:
        raise TypeError("loop= is only for async functions; this one is a plain function")
    return None


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

    @staticmethod
    def _exit_timeout_ms() -> int:
        return _timeout_ms(TaskManager._exit_timeout)

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
        priority: int = 0,
        deadline: Optional[Deadline] = None,
    ) -> str:
        """Queues ``task_fn`` and returns the task id (a new UUIDv4 when ``task_id`` is ``None``).

        ``task_fn()`` takes no arguments and runs after every task of a higher
        ``priority`` and every task of its own submitted before it, in this
        process, from any language. An exception it raises makes the task
        ``FAILED`` with ``"ExcType: message"`` as ``error``.

        ``priority``: any 32-bit integer, higher first (default 0).
        ``deadline``: Unix epoch seconds or an aware ``datetime``; a task still
        pending then never starts (``FAILED``), a running one is asked to
        cancel (``CANCELLED``).

        An ``async def`` function runs as a coroutine on ``loop``, or on the
        loop running in the caller when ``loop`` is ``None``; it holds the
        worker until it completes, like any task.

        Raises ``TypeError`` (not callable, bad types), ``DuplicateTaskIdError``
        (a ``ValueError``), ``QueueFullError``, ``ShutDownError``,
        ``InvalidArgumentError`` (a priority or deadline the library refuses,
        named in the message; nothing is queued).
        """
        if not callable(task_fn):
            raise TypeError(f"task_fn must be callable, not {type(task_fn).__name__}")
        encoded_id = None if task_id is None else encode_text(task_id, "task_id")
        options = _schedule_json(priority, deadline, "submit_task")
        loop = _coroutine_loop(task_fn, loop, "submit_task()")
        return runner(self._native, self._exit_timeout_ms).submit(encoded_id, task_fn, loop, options)

    # ----- named handlers ---------------------------------------------------------------------

    def register_handler(self, name: str, fn: HandlerFunction, *, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """Makes this process run the named tasks of ``name``: ``fn(payload)`` with the decoded JSON payload.

        Registering makes the process a worker for the store's shared queue:
        in a shared store (``sqlite:``), a task submitted by any process may
        run here. ``fn`` runs on the package's runner thread and finds its
        task's id with ``current_task_id()``; returning makes the task
        ``COMPLETED``, raising makes it ``FAILED`` with ``"ExcType: message"``
        (never retried). An ``async def`` handler runs on ``loop``, or on the
        loop running in the caller. A name registered twice in one process
        raises ``DuplicateTaskIdError``.
        """
        encode_text(name, "name")
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        loop = _coroutine_loop(fn, loop, "register_handler()")
        runner(self._native, self._exit_timeout_ms).add_handler(name, fn, loop)

    def handler(self, name: str, *, loop: Optional[asyncio.AbstractEventLoop] = None) -> Callable[[_Handler], _Handler]:
        """``@tm.handler("narrate")``: ``register_handler`` as a decorator, which returns the function unchanged."""
        encode_text(name, "name")

        def register(fn: _Handler) -> _Handler:
            self.register_handler(name, fn, loop=loop)
            return fn

        return register

    def submit_named(
        self,
        name: str,
        payload: Any = None,
        task_id: Optional[str] = None,
        *,
        priority: int = 0,
        deadline: Optional[Deadline] = None,
    ) -> str:
        """Queues a task for the handler ``name`` with ``payload`` (any JSON-able value); returns its id.

        Any process that registered ``name`` may run it; until one has, it
        waits (``PENDING``) without holding up the tasks behind it.
        ``priority`` and ``deadline`` as for ``submit_task``. Errors as
        ``submit_task``, and ``TypeError`` for a payload ``json.dumps`` cannot
        write.
        """
        lib = self._native
        encoded_name = encode_text(name, "name")
        encoded_id = None if task_id is None else encode_text(task_id, "task_id")
        payload_json = _wire_json(payload, "payload")
        options = _schedule_json(priority, deadline, "submit_named")
        code, new_id = lib.call_with_out_string(lib.sft_submit_named_with_options, encoded_name, payload_json, encoded_id, options)
        if code != SFT_OK or new_id is None:
            lib.raise_for(code, f"submit_named({name!r})")
        return new_id

    def set_checkpoint(self, task_id: str, value: Any) -> bool:
        """Records the running task's checkpoint (any JSON-able value), handed back if an interruption restarts it.

        In a durable store it is committed before the call returns. The status
        shows it as ``"checkpoint"``. Like the other mutations, an unknown or
        finished task is ignored: ``False`` then, ``True`` when recorded.
        """
        task = encode_text(task_id, "task_id")
        checkpoint_json = _wire_json(value, "the checkpoint")
        lib = self._native
        return self._mutation_outcome(lib.sft_set_checkpoint(task, checkpoint_json), "set_checkpoint")

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
        ``current``, ``total`` and ``percentage`` with their JSON types, every
        integer exactly. As in the original design, an unknown task id is
        ignored, and so is a finished task: the result is ``False`` then,
        ``True`` when recorded.
        """
        task = encode_text(task_id, "task_id")
        current = _count(current, "current")
        total = _count(total, "total")
        extra = _wire_json(kwargs, "progress values") if kwargs else None
        lib = self._native
        return self._mutation_outcome(lib.sft_update_task_progress(task, current, total, extra), "update_task_progress")

    def add_completed_segment(self, task_id: str, segment_id: Union[int, str], result: Mapping[str, Any]) -> bool:
        """Records a finished segment from ``result["audio_url"]`` and ``result["duration"]`` (seconds).

        ``segment_id`` keeps its type (``int`` or ``str``; the library refuses any other,
        a float or a bool, with ``InvalidArgumentError``, as in every language). An unknown or
        finished task is ignored, as in the original design: ``False`` then,
        ``True`` when recorded.
        """
        task = encode_text(task_id, "task_id")
        if not isinstance(result, Mapping):
            raise TypeError(f"result must be a mapping with 'audio_url' and 'duration', not {type(result).__name__}")
        missing = [key for key in ("audio_url", "duration") if key not in result]
        if missing:
            raise InvalidArgumentError(f"result lacks {', '.join(repr(key) for key in missing)}")
        audio_url, duration = result["audio_url"], result["duration"]
        if not isinstance(audio_url, str):
            raise TypeError(f"result['audio_url'] must be a str, not {type(audio_url).__name__}")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise TypeError(f"result['duration'] must be a number of seconds, not {type(duration).__name__}")
        segment_json = _wire_json({"segment_id": segment_id, "audio_url": audio_url, "duration": float(duration)}, "the segment")
        lib = self._native
        return self._mutation_outcome(lib.sft_add_completed_segment_from_json(task, segment_json), "add_completed_segment")

    def add_error(self, task_id: str, segment_id: Union[int, str], error_message: str) -> bool:
        """Records a segment that failed. ``segment_id`` keeps its type; an unknown or finished task is ignored (``False``)."""
        task = encode_text(task_id, "task_id")
        if not isinstance(error_message, str):
            raise TypeError(f"error_message must be a str, not {type(error_message).__name__}")
        error_json = _wire_json({"segment_id": segment_id, "error": error_message}, "the error")
        lib = self._native
        return self._mutation_outcome(lib.sft_add_error_from_json(task, error_json), "add_error")

    def _mutation_outcome(self, code: int, action: str) -> bool:
        if code in (SFT_ERR_NOT_FOUND, SFT_ERR_INVALID_STATE):
            return False  # the original design's "silently ignore": an unknown id, or a task already final
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

    # ----- cooperative yield -----------------------------------------------------------------

    @staticmethod
    def _task_or_current(task_id: Optional[str], call: str) -> str:
        """``task_id``, or the running task's own id when it is ``None``."""
        if task_id is not None:
            return task_id
        current = current_task_id()
        if current is None:
            raise InvalidStateError(f"{call}() without a task id works only inside a task: give the task id")
        return current

    def is_yield_requested(self, task_id: Optional[str] = None) -> bool:
        """Whether the running task should yield: a task of a higher priority waits that a worker can run now.

        ``None``: the current task (``current_task_id()``). Cheap enough to
        poll between sentences, like ``is_cancel_requested``; always ``False``
        for a task that is not ``PROCESSING``. Raises ``TaskNotFoundError``.
        """
        task_id = self._task_or_current(task_id, "is_yield_requested")
        requested = ctypes.c_bool(False)
        lib = self._native
        code = lib.sft_is_yield_requested(encode_text(task_id, "task_id"), ctypes.byref(requested))
        lib.check(code, f"is_yield_requested({task_id!r})")
        return bool(requested.value)

    def yield_task(self, task_id: Optional[str] = None) -> None:
        """Makes the running task's end a yield: once its function returns, it goes back to ``PENDING``.

        ``None``: the current task. Call it, then return (whatever the function
        returns or raises, the run counts as a yield): the task waits at the
        head of its priority, ahead of every other task of that priority, with
        its segments, errors, progress and checkpoint kept and ``yields`` one
        more, and runs again (the same function, or its handler with the same
        payload) once the tasks of higher priority have run. It resumes from
        what its status holds, e.g. its ``checkpoint``. A task may yield
        without being asked. A yield is not an interruption: ``attempt`` stays,
        and cancellation wins over it. Raises ``TaskNotFoundError``, or
        ``InvalidStateError`` when the task is not ``PROCESSING``.
        """
        task_id = self._task_or_current(task_id, "yield_task")
        lib = self._native
        lib.check(yield_task(lib, task_id, encode_text(task_id, "task_id")), f"yield_task({task_id!r})")

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
        """Inside a coroutine task, waiting for a task that needs the worker would never end: refuse it.

        On the runner's thread the library itself refuses such a wait (it knows
        that thread is inside its task). A coroutine task runs on its event
        loop's thread, which the library cannot tell apart from any other, so
        the same two cases are refused here for it: a pending task, and (for
        waits until the end) a running one.
        """
        if current_task_id() is None or on_runner_thread():
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
        return event_hub(self._native)

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
        """Counts by state, queue depth, totals submitted/completed/failed/cancelled, run times, and pending tasks per priority.

        ``pending_by_priority`` is ``[{"priority": 10, "pending": 1}, ...]``,
        highest first, only priorities with pending tasks.
        """
        lib = self._native
        stats: Optional[Dict[str, Any]] = lib.take_json(lib.sft_get_stats())
        if stats is None:  # NULL: the store could not be read (e.g. opened); the library says why
            raise StoryflowTasksError(f"stats: {lib.last_error_message() or 'the library returned no statistics'}")
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
        inside_a_task = current_task_id() is not None
        code = lib.sft_shutdown(0 if inside_a_task else milliseconds)
        if code == SFT_ERR_TIMEOUT and inside_a_task:
            return
        lib.check(code, "shutdown")


def get_task_manager() -> TaskManager:
    """The process-wide ``TaskManager`` (the original design's convenience accessor)."""
    return TaskManager()


def _reset_lock_after_fork() -> None:
    # Another thread may have held the lock at fork(); the child has no such thread.
    TaskManager._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)
