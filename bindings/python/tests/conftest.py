"""Shared fixtures: the process-wide manager, gates that hold the worker, and subprocess runs.

Every test in this process shares the one manager and its one worker, as an
application would. A test that needs a task to stay PENDING first holds the
worker with a gate; the fixture opens every gate at teardown and waits for
those tasks, so no test leaves the worker busy for the next one. Tests that
need their own configuration, a shutdown or an exit run in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import storyflow_tasks
from storyflow_tasks import TaskManager, get_task_manager

#: Generous bound on how long a test waits for something that should happen
#: at once; only a hang ever reaches it, so it guards without timing anything.
HANG_GUARD = 30.0

TESTS_DIR = Path(__file__).resolve().parent
REPOSITORY = TESTS_DIR.parents[2]
PACKAGE_PARENT = Path(storyflow_tasks.__file__).resolve().parent.parent


class Gate:
    """A task that holds the worker until opened: tasks submitted after it stay PENDING."""

    def __init__(self, tm: TaskManager) -> None:
        self._opened = threading.Event()
        self.started = threading.Event()
        self.task_id = tm.submit_task(self._hold)

    def _hold(self) -> None:
        self.started.set()
        if not self._opened.wait(HANG_GUARD):
            raise TimeoutError("the gate was never opened")

    def wait_started(self) -> Gate:
        assert self.started.wait(HANG_GUARD), "the gate task never started"
        return self

    def open(self) -> None:
        self._opened.set()


@pytest.fixture
def tm() -> TaskManager:
    return get_task_manager()


@pytest.fixture
def gate(tm: TaskManager) -> Iterator[Callable[[], Gate]]:
    """Makes gates; every one is opened and finished at teardown."""
    made: List[Gate] = []

    def make() -> Gate:
        made.append(Gate(tm))
        return made[-1]

    yield make
    for each in made:
        each.open()
    for each in made:
        tm.wait(each.task_id, timeout=HANG_GUARD)


def python_env(**extra: str) -> dict:
    """The environment for a child interpreter that imports the package under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_python(
    code: str, *, env: Optional[dict] = None, timeout: float = HANG_GUARD, cwd: Optional[str] = None
) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter; a hang fails the test instead of blocking the suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env if env is not None else python_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            # `python -c` puts its working directory first on sys.path: never a source checkout
            # of the package, which would shadow the package under test.
            cwd=cwd if cwd is not None else TESTS_DIR,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the child interpreter hung; stdout={expired.stdout!r} stderr={expired.stderr!r}")


def assert_clean_exit(result: subprocess.CompletedProcess, code: int = 0) -> None:
    """The child exited with ``code``, and nothing fatal was printed on the way out."""
    assert "Fatal Python error" not in result.stderr, result.stderr
    assert "FATAL" not in result.stderr, result.stderr
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


ENGINE_SOURCE = TESTS_DIR / "c_engine" / "engine.c"


def build_c_engine(link_against: Path, output: Path) -> Path:
    """Compiles tests/c_engine/engine.c into ``output``, linked against the library file ``link_against``."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler")
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{REPOSITORY / 'include'}",
            str(ENGINE_SOURCE),
            str(link_against),
            f"-Wl,-rpath,{link_against.parent}",
            "-o",
            str(output),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return output
