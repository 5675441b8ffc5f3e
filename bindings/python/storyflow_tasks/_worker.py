"""``python -m storyflow_tasks worker``: a process that only runs named handlers, as ``rq worker`` and ``celery worker`` do.

The API processes of a service submit named tasks to a shared store and read
their statuses; the worker imports the modules that register the handlers
(``@tm.handler(name)``) and runs those tasks, so that the handlers' work holds
this process's GIL, not the API's.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
import socket
import sys
import threading
import traceback
from typing import List, Optional, Sequence, Tuple

from ._errors import StoryflowTasksError, TaskTimeoutError
from ._manager import TaskManager
from ._runner import registered_handler_names

__all__ = ["main"]

PROGRAM = "python -m storyflow_tasks"
STORE_ENV = "STORYFLOW_TASKS_STORE"
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

#: Exit statuses: 0 after a graceful stop; 1 when the running task had to be abandoned
#: (it is resumed elsewhere), or a module could not be imported (or its store opened);
#: 2 for a wrong command line.
EXIT_ABANDONED = 1
EXIT_USAGE = 2


def _parser() -> Tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command line's parser, and its ``worker`` command's (whose usage a wrong worker command line shows)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description="The storyflow-tasks command line.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    worker = commands.add_parser(
        "worker",
        help="run the named handlers of some modules for a shared store",
        description=(
            "Imports the modules, which register named handlers with @tm.handler(name), "
            "then runs the named tasks that any process submits to the store, one at a time "
            "across every process of the store, until SIGINT or SIGTERM."
        ),
        epilog=(
            "Stopping: on SIGINT or SIGTERM the worker takes no new task, asks the running one "
            "to stop here (a handler sees tm.is_cancel_requested) and waits up to --shutdown-timeout "
            "seconds for it; if it has not ended by then, or on a second signal, the process exits "
            "at once. Either way the task counts as interrupted: a worker of the same store resumes it. "
            f"Example: {PROGRAM} worker --store sqlite:/var/lib/narration/tasks.db --import myapp.tasks"
        ),
    )
    worker.add_argument(
        "--store",
        help=f"the shared store, e.g. sqlite:/path/tasks.db (default: ${STORE_ENV}); the memory store is private to one process",
    )
    worker.add_argument(
        "--import",
        dest="modules",
        action="append",
        required=True,
        metavar="MODULE",
        help="a module to import, which registers handlers (repeat for several); found from the current directory too",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help=f"how long a stop waits for the running task (default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    return parser, worker


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    parser, worker = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command != "worker":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _serve(worker, arguments.store, arguments.modules, arguments.shutdown_timeout)


def _fail(message: str) -> None:
    print(f"storyflow_tasks worker: {message}", file=sys.stderr, flush=True)


def _serve(parser: argparse.ArgumentParser, store: Optional[str], modules: List[str], shutdown_timeout: float) -> int:
    if not 0 <= shutdown_timeout < float("inf"):
        parser.error(f"--shutdown-timeout must be a finite number of seconds >= 0, not {shutdown_timeout!r}")
    tm = TaskManager()
    try:
        if store is not None and store != "memory":
            tm.configure(store=store)
        store = store or str(tm.get_config().get("store", "memory"))
    except StoryflowTasksError as error:
        parser.error(str(error))
    if store == "memory":
        parser.error(
            f"the worker needs a shared store: give --store sqlite:<path> (or set ${STORE_ENV}); "
            "no other process can submit to the memory store"
        )

    # Modules are named as the application imports them, from its directory, as rq and celery do.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except StoryflowTasksError as error:  # e.g. the store could not be opened when a handler registered
            _fail(f"importing {module}: {error}")
            return EXIT_ABANDONED
        except Exception:
            traceback.print_exc()
            _fail(f"could not import {module} (traceback above)")
            return EXIT_ABANDONED
    names = registered_handler_names()
    if not names:
        _fail(f"{', '.join(modules)} registered no handler: decorate a function with @tm.handler(name)")
        return EXIT_USAGE

    signals = _SignalWaiter()
    print(
        f"storyflow_tasks worker (pid {os.getpid()}): serving {', '.join(names)} from {store}; SIGINT or SIGTERM stops it",
        flush=True,
    )
    received = signals.wait(None)
    print(
        f"storyflow_tasks worker: {signal.Signals(received).name}: stopping (up to {shutdown_timeout:g} s for the running task)", flush=True
    )
    return _stop(tm, signals, shutdown_timeout)


def _stop(tm: TaskManager, signals: _SignalWaiter, timeout: float) -> int:
    """Shuts the manager down on a thread of its own, so that a second signal can still end the process at once."""
    outcome: List[BaseException] = []

    def shut_down() -> None:
        try:
            tm.shutdown(timeout=timeout)
        except BaseException as error:
            outcome.append(error)
        finally:
            signals.wake()

    stopper = threading.Thread(target=shut_down, name="storyflow-tasks-worker-stop", daemon=True)
    stopper.start()
    received = signals.wait(None)
    if received != _SignalWaiter.WOKEN:
        _abandon(f"{signal.Signals(received).name} again: exiting without waiting for the running task, which will be resumed")
    stopper.join()
    if outcome:
        error = outcome[0]
        if isinstance(error, TaskTimeoutError):
            _abandon(f"the running task did not end within {timeout:g} s: exiting; it will be resumed")
        _abandon(f"the shutdown failed: {error}")
    print("storyflow_tasks worker: stopped", flush=True)
    return 0


def _abandon(message: str) -> None:
    """Exits at once, as a crash would: the running task is left to the store's recovery, never failed here."""
    _fail(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_ABANDONED)


class _SignalWaiter:
    """SIGINT and SIGTERM as bytes on a socket, so the main thread can block for them without a race or a poll."""

    #: What ``wake`` writes: not a signal number.
    WOKEN = 0

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        # The C-level handler writes the signal's number to the wakeup socket the moment it
        # arrives, whatever the main thread is doing; the Python handler has nothing left to do.
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, _ignore)

    def wait(self, timeout: Optional[float]) -> int:
        """The next signal's number, or ``WOKEN``."""
        while True:
            ready, _, _ = select.select([self._reader], [], [], timeout)
            if ready:
                data = self._reader.recv(1)
                if data:
                    return data[0]

    def wake(self) -> None:
        self._writer.send(bytes([self.WOKEN]))


def _ignore(number: int, frame: object) -> None:
    """The wakeup socket carries the signal; installing a handler is what makes Python write to it."""
