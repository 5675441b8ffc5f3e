"""The runner: the one Python thread that runs this process's Python tasks when the library's worker hands them over.

The library drives the tasks: the runner registers once (``sft_runner_register``),
``submit_task`` queues each task for it (``sft_submit_runner_task``) and keeps
the function here by task id, and the runner's thread blocks in
``sft_runner_next`` (GIL released) until the worker reaches one of them, runs
it, and reports the outcome with ``sft_runner_finish``. A task that yielded
(``yield_task``, then returned) goes back to the library's queue: its function
stays here, and the library hands the same task id over again later. When it starts, when a
wait would deadlock, how an over-long failure message is shortened: the
library decides all of it. The library never calls into Python, so a process
may exit with Python tasks running or queued: there is no callback to keep
alive, and no foreign thread is unwound through the library's frames.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import ctypes
import inspect
import json
import logging
import os
import threading
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set

from ._errors import ShutDownError
from ._events import EventHub
from ._native import SFT_ERR_NOT_FOUND, SFT_ERR_SHUT_DOWN, SFT_ERR_TIMEOUT, SFT_OK, SFT_WAIT_FOREVER, Native
from ._status import TASK_CANCELLED, TASK_COMPLETED, TASK_FAILED

__all__ = [
    "TaskFunction",
    "HandlerFunction",
    "current_task_id",
    "Runner",
    "runner",
    "event_hub",
    "on_runner_thread",
    "registered_handler_names",
    "yield_task",
]

#: What ``submit_task`` runs: a function of no arguments, or an async one.
TaskFunction = Callable[[], Any]

#: What ``register_handler`` runs for each named task: a function of the decoded payload, or an async one.
HandlerFunction = Callable[[Any], Any]

_logger = logging.getLogger("storyflow_tasks")

_current_task: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("storyflow_tasks_current", default=None)


def current_task_id() -> Optional[str]:
    """The id of the Python task whose function (or coroutine) is running in this context, else ``None``.

    Task functions take no arguments, as in the original StoryFlow ``tasks.py``
    design; this is how one finds its own id, to report progress or poll
    ``is_cancel_requested``.
    """
    return _current_task.get()


class _Job:
    """What the runner needs to run one task: its function, and the loop of a coroutine function."""

    __slots__ = ("function", "loop")

    def __init__(self, function: TaskFunction, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.function = function
        self.loop = loop


class _Handler:
    """A registered handler: its function of the payload, and the loop of an async one."""

    __slots__ = ("function", "loop")

    def __init__(self, function: HandlerFunction, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.function = function
        self.loop = loop


def _describe(error: BaseException) -> str:
    """``"ExcType: message"``, the text a failed task's ``error`` carries."""
    name = type(error).__name__
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not lose the failure itself
        text = "<the exception's text could not be rendered>"
    return f"{name}: {text}" if text else name


class Runner:
    """This process's runner: its id in the library, its thread, and the functions of the tasks queued for it."""

    def __init__(self, lib: Native, exit_timeout: Callable[[], int]) -> None:
        self._lib = lib
        self._exit_timeout_ms = exit_timeout
        self._jobs: Dict[str, _Job] = {}
        self._handlers: Dict[str, _Handler] = {}
        #: The tasks handed over and not finished yet: id -> the job of a function task, None for a named one.
        self._running: Dict[str, Optional[_Job]] = {}
        #: The running tasks that yielded: their finish puts the job back for the next hand-over.
        self._yielded: Set[str] = set()
        #: Held while a task is submitted (or a handler registered) and its function stored,
        #: so the thread never looks for it too early.
        self.lock = threading.Lock()
        #: Held across a yield and its record here, and across a finish: a yield from another thread
        #: is either seen by the finish (the job kept) or refused by the library (the task ended).
        self._finish_lock = threading.Lock()
        self.exiting = False
        self.id = self._register()
        self._thread = threading.Thread(target=self._serve, name="storyflow-tasks-runner", daemon=True)
        self._thread.start()

    def _register(self) -> int:
        out = ctypes.c_uint64()
        self._lib.check(self._lib.sft_runner_register(ctypes.byref(out)), "registering the Python task runner")
        return int(out.value)

    def submit(
        self,
        task_id: Optional[bytes],
        function: TaskFunction,
        loop: Optional[asyncio.AbstractEventLoop],
        options: Optional[bytes],
    ) -> str:
        """Queues a task for this runner with its submit options (JSON, or None); its id (the given one, or a new UUIDv4)."""
        lib = self._lib
        with self.lock:
            if self.exiting:
                raise ShutDownError("the Python interpreter is exiting: no new tasks")
            code, new_id = lib.call_with_out_string(lib.sft_submit_runner_task_with_options, self.id, task_id, options)
            if code != SFT_OK or new_id is None:
                lib.raise_for(code, "submit_task")
            self._jobs[new_id] = _Job(function, loop)
        return new_id

    def add_handler(self, name: str, function: HandlerFunction, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        """Makes this runner serve the named tasks of ``name`` (the library refuses a name registered twice)."""
        lib = self._lib
        with self.lock:
            if self.exiting:
                raise ShutDownError("the Python interpreter is exiting: no new handlers")
            code = lib.sft_runner_add_handler(self.id, name.encode("utf-8"))
            if code != SFT_OK:
                lib.raise_for(code, f"register_handler({name!r})")
            self._handlers[name] = _Handler(function, loop)

    def handler_names(self) -> List[str]:
        """The names this runner serves, in registration order."""
        with self.lock:
            return list(self._handlers)

    def is_this_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def yield_task(self, task_id: str, task: bytes) -> int:
        """``sft_yield_task``, remembering a yield of one of this runner's running tasks; the result code."""
        with self._finish_lock:
            code: int = self._lib.sft_yield_task(task)
            if code == SFT_OK:
                with self.lock:
                    # A function task may be handed over and not taken from _jobs yet.
                    if task_id in self._running or task_id in self._jobs:
                        self._yielded.add(task_id)
            return code

    # ----- the thread ------------------------------------------------------------------------

    def _serve(self) -> None:
        lib = self._lib
        while True:
            code, text = lib.call_with_out_string(lib.sft_runner_next, self.id, SFT_WAIT_FOREVER)
            if code in (SFT_ERR_SHUT_DOWN, SFT_ERR_NOT_FOUND):
                return  # closed at exit, or the manager shut down with nothing left for us
            if code == SFT_ERR_TIMEOUT or text is None:
                continue
            if code != SFT_OK:
                _logger.error("storyflow_tasks: the runner could not take its next task: %s", lib.last_error_message())
                continue
            assignment = json.loads(text)
            task_id: str = assignment["task_id"]
            name: Optional[str] = assignment.get("handler")
            try:
                if name is None:
                    self._run_task(task_id, assignment["run"])
                elif assignment["run"]:
                    self._run_named(task_id, name, assignment.get("payload"))
            except BaseException:  # the runner must outlive any one task
                _logger.exception("storyflow_tasks: the runner failed on task %r", task_id)
                self.finish(task_id, 1, "InternalError: the Python task runner failed; see the log")

    def _run_task(self, task_id: str, run: bool) -> None:
        """A function task: the function stored at submission, taken out here whether it runs or not."""
        with self.lock:
            job = self._jobs.pop(task_id, None)
            if run and job is not None:
                self._running[task_id] = job
            elif not run:
                self._yielded.discard(task_id)
        if not run:
            return  # released without running (cancelled, shut down): the function goes with it
        if job is None:
            self.finish(task_id, 1, "InternalError: the Python runner holds no function for this task")
        elif job.loop is None:
            self._run_function(task_id, job.function, "task function")
        else:
            self._start_coroutine(task_id, job.function, job.loop)

    def _run_named(self, task_id: str, name: str, payload: Any) -> None:
        """A named task: its handler called with the payload the library decoded from the queue."""
        with self.lock:
            handler = self._handlers.get(name)
            self._running[task_id] = None
        if handler is None:  # the library hands a runner only the names it added
            self.finish(task_id, 1, f"InternalError: the Python runner holds no handler named {name!r}")
            return
        function = handler.function

        def call() -> Any:
            return function(payload)

        if handler.loop is None:
            self._run_function(task_id, call, "handler")
        else:
            self._start_coroutine(task_id, call, handler.loop)

    def finish(self, task_id: str, code: int, message: Optional[str]) -> None:
        """Reports a task's outcome, from any thread; never raises (it runs on the runner and in loop callbacks).

        The message travels as a JSON string, so every character (NUL included)
        arrives; the library shortens one over its limit and replaces a lone
        surrogate, so this call cannot fail on the text.
        """
        text = None if message is None else json.dumps(message).encode("ascii")
        kept = False
        with self._finish_lock:
            with self.lock:
                job = self._running.pop(task_id, None)
                if task_id in self._yielded:
                    self._yielded.discard(task_id)
                    if job is not None:
                        # Back in the queue: the library hands this task over again, and it runs this function
                        # again; stored before the finish, which may hand it over at once.
                        self._jobs[task_id] = job
                        kept = True
            result = self._lib.sft_runner_finish(self.id, task_id.encode(), code, text)
        if result not in (SFT_OK, SFT_ERR_NOT_FOUND):  # NOT_FOUND: closed at exit, the task already failed there
            _logger.error("storyflow_tasks: could not finish task %r: %s", task_id, self._lib.last_error_message())
        if kept and self._is_final(task_id):
            # Cancellation (or a passed deadline) wins over a yield: the task ended, and never comes back.
            with self.lock:
                self._jobs.pop(task_id, None)

    def _is_final(self, task_id: str) -> bool:
        status = self._lib.take_json(self._lib.sft_get_task_status(task_id.encode()))
        return status is None or status["status"] in (TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED)

    def _run_function(self, task_id: str, function: TaskFunction, what: str) -> None:
        token = _current_task.set(task_id)
        try:
            result = function()
        except BaseException as error:  # SystemExit and the like fail the task, not the runner
            _logger.error("storyflow_tasks: task %r failed", task_id, exc_info=True)
            self.finish(task_id, 1, _describe(error))
            return
        finally:
            _current_task.reset(token)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited on purpose: no "never awaited" warning
            self.finish(task_id, 1, f"TypeError: the {what} returned an awaitable; give the async function itself")
            return
        self.finish(task_id, 0, None)

    def _start_coroutine(self, task_id: str, function: TaskFunction, loop: asyncio.AbstractEventLoop) -> None:
        """Starts a coroutine task on its loop; it holds the worker until its asyncio task is done.

        The runner goes back to ``sft_runner_next`` at once: the worker hands it
        nothing else before this task is finished, which the asyncio task's done
        callback reports once the coroutine has really ended, its handling of a
        cancellation included.
        """
        # call_soon_threadsafe copies this context into the asyncio task: current_task_id() works inside it.
        token = _current_task.set(task_id)
        coroutine: Any = None
        try:
            awaitable = function()
            if not inspect.isawaitable(awaitable):
                raise TypeError(f"the async task function returned {type(awaitable).__name__}, not an awaitable")
            coroutine = awaitable

            def start() -> None:
                task = loop.create_task(_cancellable(task_id, awaitable, event_hub(self._lib)))
                task.add_done_callback(lambda done: self._finish_from_task(task_id, done))

            loop.call_soon_threadsafe(start)
        except BaseException as error:  # a closed loop ("Event loop is closed"), or a function that is not async
            if inspect.iscoroutine(coroutine):
                coroutine.close()
            self.finish(task_id, 1, _describe(error))
        finally:
            _current_task.reset(token)

    def _finish_from_task(self, task_id: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.finish(task_id, 1, "CancelledError: the coroutine was cancelled")
            return
        error = task.exception()
        if error is not None:
            _logger.error("storyflow_tasks: task %r failed", task_id, exc_info=error)
            self.finish(task_id, 1, _describe(error))
        else:
            self.finish(task_id, 0, None)

    # ----- exit -----------------------------------------------------------------------------

    def close(self) -> None:
        """At interpreter exit: the library cancels the queued tasks and gives the running one the exit timeout."""
        with self.lock:
            self.exiting = True
        self._lib.sft_runner_close(self.id, self._exit_timeout_ms())


async def _cancellable(task_id: str, awaitable: Awaitable[Any], hub: EventHub) -> Any:
    """Awaits a coroutine task, cancelling it through asyncio once the task's cancellation is requested.

    Woken by the library's change feed, never by polling.
    """
    from ._manager import TaskManager  # the manager imports this module

    inner = asyncio.ensure_future(awaitable)
    subscription = hub.subscribe(task_id, asyncio.get_running_loop())
    try:
        while not inner.done():
            subscription.changed.clear()  # before reading, so no change after the read is missed
            if TaskManager().is_cancel_requested(task_id):
                inner.cancel()
                break
            changed = asyncio.ensure_future(subscription.changed.wait())
            await asyncio.wait({inner, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
        return await inner
    finally:
        hub.unsubscribe(subscription)
        if not inner.done():
            inner.cancel()


# ----- the process's runner, its change feed, exit and fork ------------------------------------


class _ProcessState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runner: Optional[Runner] = None
        self.hub: Optional[EventHub] = None


_state = _ProcessState()


def runner(lib: Native, exit_timeout: Callable[[], int]) -> Runner:
    """The process's runner, registered (and its exit hook installed) on first use."""
    state = _state
    current = state.runner
    if current is not None:
        return current
    with state.lock:
        if state.runner is None:
            state.runner = Runner(lib, exit_timeout)
            atexit.register(state.runner.close)
        return state.runner


def yield_task(lib: Native, task_id: str, task: bytes) -> int:
    """``sft_yield_task`` for ``task_id``, through the process's runner when there is one (it keeps a yielded task's function)."""
    current = _state.runner
    if current is None:
        code: int = lib.sft_yield_task(task)  # no Python task ever ran here: the task is another language's
        return code
    return current.yield_task(task_id, task)


def registered_handler_names() -> List[str]:
    """The handler names this process serves, in registration order."""
    current = _state.runner
    return [] if current is None else current.handler_names()


def on_runner_thread() -> bool:
    """Whether the caller is the runner's thread, which the library knows is inside the task it runs."""
    current = _state.runner
    return current is not None and current.is_this_thread()


def event_hub(lib: Native) -> EventHub:
    """The process's change-feed thread for asyncio waiters, started on first use."""
    state = _state
    with state.lock:
        if state.hub is None:
            state.hub = EventHub(lib)
        return state.hub


def _reset_after_fork() -> None:
    # The child has none of the parent's threads, and its library has a fresh manager in
    # which the parent's runner id is unknown: its first submission registers a runner of its own.
    global _state
    _state = _ProcessState()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
