"""Starts the web app (app.py) in a child process on a free loopback port, for the tests and the load test.

The app binds 127.0.0.1:0 itself and prints ``storyflow-web: ready on URL``
once its task manager and engine are set up; this waits for that line (a
bounded wait) and stops the child on exit.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

WEB_DIR = Path(__file__).resolve().parent
READY_PREFIX = "storyflow-web: ready on "
#: Bounded wait for the app to come up (the first start may load libespeak-ng's data from a cold disk).
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


class ServerStartError(RuntimeError):
    """The app did not come up; the message carries what it printed."""


@dataclass(frozen=True)
class AppProcess:
    """The running app: its base URL (ending in ``/``), its process id, and every API process's URL."""

    url: str
    pid: int
    urls: Tuple[str, ...] = ()


@contextmanager
def running_app(media_dir: Path, extra_args: Optional[List[str]] = None,
                log_path: Optional[Path] = None) -> Iterator[str]:
    """Runs ``app.py --port 0 --media-dir media_dir [extra_args]``; yields its base URL (ending in ``/``).

    The child's output goes to ``log_path`` (or is dropped) once it is ready.
    """
    with app_process(media_dir, extra_args, log_path) as app:
        yield app.url


@contextmanager
def app_process(media_dir: Path, extra_args: Optional[List[str]] = None,
                log_path: Optional[Path] = None, api_processes: int = 1) -> Iterator[AppProcess]:
    """As ``running_app``, yielding the process too; with ``api_processes`` > 1, once each printed its ready line."""
    command = [sys.executable, "-u", str(WEB_DIR / "app.py"), "--port", "0", "--media-dir", str(media_dir),
               *(extra_args or [])]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ), cwd=str(WEB_DIR))
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    log = open(log_path, "w", encoding="utf-8") if log_path else None

    def pump_output() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
            if log:
                log.write(line)
                log.flush()
        lines.put(None)

    reader = threading.Thread(target=pump_output, name="app-output", daemon=True)
    reader.start()
    try:
        urls = tuple(_await_ready(child, lines) for _ in range(api_processes))
        yield AppProcess(urls[0], child.pid, urls)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        reader.join(STOP_TIMEOUT_SECONDS)
        if log:
            log.close()


def _await_ready(child: subprocess.Popen, lines: "queue.Queue[Optional[str]]") -> str:
    seen: List[str] = []
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT_SECONDS)
        except queue.Empty:
            raise ServerStartError(f"app.py printed no ready line within {START_TIMEOUT_SECONDS:.0f} s:\n"
                                   + "".join(seen)) from None
        if line is None:
            child.wait()
            raise ServerStartError(f"app.py exited with status {child.returncode} before it was ready:\n"
                                   + "".join(seen))
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX):].strip()
        seen.append(line)
