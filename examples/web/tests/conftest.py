"""Fixtures: the app running in a child process on a free loopback port, and an HTTP client for it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # server_process.py

from server_process import running_app  # noqa: E402

from helpers import Narrations  # noqa: E402


@pytest.fixture(scope="session")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One app for the session; each narration asks for its own pace."""
    directory = tmp_path_factory.mktemp("web")
    with running_app(directory / "media", log_path=directory / "app.log") as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(30.0)) as http:
        yield http


@pytest.fixture
def narrations(client: httpx.Client) -> Iterator[Narrations]:
    """Starts narrations and, at the end of the test, cancels those still going and waits for them."""
    started = Narrations(client)
    yield started
    started.finish_all()
