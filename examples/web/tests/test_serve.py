"""`make serve PORT=N` serves on that port, and a busy port says how to pick another."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_process import READY_PREFIX, WEB_DIR  # noqa: E402

REPO_DIR = WEB_DIR.parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_serve_takes_port_and_host() -> None:
    port = _free_port()
    child = subprocess.Popen(["make", "-s", "serve", f"PORT={port}", "HOST=127.0.0.1"], cwd=REPO_DIR,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        seen = []
        for line in child.stdout:
            seen.append(line)
            if line.startswith(READY_PREFIX):
                break
        else:
            raise AssertionError("make serve ended before it was ready:\n" + "".join(seen))
        assert line.strip() == f"{READY_PREFIX}http://127.0.0.1:{port}/"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(60)


def test_a_busy_port_says_how_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, str(WEB_DIR / "app.py"), "--port", str(port), "--media-dir",
                                 str(tmp_path / "media")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"app.py: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "--port N" in message and "make serve PORT=N" in message
