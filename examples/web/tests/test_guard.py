"""Only the app's own page may drive it: Host, Origin and Content-Type checks, protective headers, server limits.

Each refusal is checked for what it must not do too: no narration starts.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from helpers import Narrations

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_process import app_process, running_app  # noqa: E402

HEADERS_EVERYWHERE = ["content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options"]


def _story_is_free(client: httpx.Client, narrations: Narrations, story_id: str) -> None:
    """A refused POST started nothing: the story can be narrated at once (a running one would be 409)."""
    assert narrations.follow(narrations.start(story_id, "Now it speaks.")["task_id"])[-1]["status"] == "COMPLETED"


def test_every_answer_carries_the_protective_headers(client: httpx.Client, narrations: Narrations) -> None:
    answer = narrations.start("headers", "One.")
    final = narrations.follow(answer["task_id"])[-1]
    answers = [client.get("/"), client.get("/static/app.js"), client.get(answer["status_url"]),
               client.get("/api/tasks/no-such-task"), client.get(final["completed_segments"][0]["audio_url"]),
               client.post("/api/stories/x/narrate", content=b"{}", headers={"Content-Type": "text/plain"}),
               client.get("/", headers={"Host": "evil.example"})]
    with client.stream("GET", answer["events_url"], params={"after": "-1"}) as events:
        answers.append(events)
    for response in answers:
        for name in HEADERS_EVERYWHERE:
            assert name in response.headers, (response.request.url, name)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    csp = answers[0].headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert answers[0].headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("headers, body, mentions", [
    ({"Content-Type": "text/plain"}, b'{"text": "Started by a form."}', "text/plain"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"text=Started", "x-www-form-urlencoded"),
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--", "multipart/form-data"),
    ({}, b'{"text": "No type at all."}', "no Content-Type"),
])
def test_a_post_that_is_not_json_is_415(client: httpx.Client, narrations: Narrations, headers: dict, body: bytes,
                                        mentions: str) -> None:
    response = client.post("/api/stories/typed/narrate", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert mentions in response.json()["detail"] and "application/json" in response.json()["detail"]
    _story_is_free(client, narrations, "typed")


def test_json_with_a_charset_is_json(client: httpx.Client, narrations: Narrations) -> None:
    response = client.post("/api/stories/charset/narrate", content=b'{"text": "Fine."}',
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 202, response.text
    narrations.task_ids.append(response.json()["task_id"])


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1"])
def test_a_request_from_another_origin_is_403(client: httpx.Client, narrations: Narrations, origin: str) -> None:
    response = client.post("/api/stories/origin/narrate", json={"text": "From elsewhere."},
                           headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert "origin" in response.json()["detail"] and "refused" in response.json()["detail"]
    assert client.get("/", headers={"Origin": origin}).status_code == 403
    _story_is_free(client, narrations, "origin")


def test_the_page_s_own_origin_and_localhost_are_allowed(client: httpx.Client, base_url: str,
                                                         narrations: Narrations) -> None:
    port = urlsplit(base_url).port
    pairs = [(base_url.rstrip("/"), f"127.0.0.1:{port}"), (f"http://localhost:{port}", f"localhost:{port}")]
    for number, (origin, host) in enumerate(pairs):
        response = client.post(f"/api/stories/own-{number}/narrate", json={"text": "Mine."},
                               headers={"Origin": origin, "Host": host})
        assert response.status_code == 202, response.text
        narrations.task_ids.append(response.json()["task_id"])


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1", "127.0.0.1:1", "localhost.evil"])
def test_a_host_that_is_not_this_server_is_400(client: httpx.Client, narrations: Narrations, host: str) -> None:
    response = client.post("/api/stories/rebinding/narrate", json={"text": "Rebound."}, headers={"Host": host})
    assert response.status_code == 400, response.text
    assert "Host header" in response.json()["detail"]
    assert client.get("/api/tasks/anything", headers={"Host": host}).status_code == 400
    _story_is_free(client, narrations, "rebinding")


def test_allowed_hosts_and_origins_come_from_the_options(tmp_path: Path) -> None:
    with running_app(tmp_path / "media", ["--allowed-host", "narration.test:8080",
                                          "--allowed-origin", "https://narration.test"]) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/").status_code == 400, "the default hosts are replaced"
        named = {"Host": "narration.test:8080"}
        assert http.get("/", headers=named).status_code == 200
        assert http.get("/", headers={**named, "Origin": "https://narration.test"}).status_code == 200
        assert http.get("/", headers={**named, "Origin": "http://narration.test:8080"}).status_code == 403


def test_allowed_hosts_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORYFLOW_WEB_ALLOWED_HOSTS", "one.test:1, two.test:2")
    with running_app(tmp_path / "media") as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/").status_code == 400
        assert http.get("/", headers={"Host": "two.test:2"}).status_code == 200
        assert http.get("/", headers={"Host": "two.test:2", "Origin": "http://one.test:1"}).status_code == 200


# ----- the HTTP server's own limits ------------------------------------------------------


@pytest.fixture(scope="module")
def limited_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    media = tmp_path_factory.mktemp("limited") / "media"
    with app_process(media, ["--max-connections", "4", "--keep-alive", "1"]) as app:
        yield app


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_64_mb_header_is_refused_without_being_buffered(limited_app) -> None:
    host = urlsplit(limited_app.url).netloc
    before = _resident_kib(limited_app.pid)
    chunk = b"a" * 65536
    total = 64 * 1024 * 1024
    sent = 0
    with _connect(limited_app.url) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Huge: ".encode())
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: what is being checked
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert sent < total, "the server read the whole 64 MB header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:100]
    grown = _resident_kib(limited_app.pid) - before
    assert grown < 16 * 1024, f"the server grew by {grown} KiB while refusing the header"
    with httpx.Client(base_url=limited_app.url, timeout=30) as http:
        assert http.get("/").status_code == 200, "the server still answers"


def test_connections_past_the_limit_get_503(limited_app) -> None:
    idle = [_connect(limited_app.url) for _ in range(4)]
    try:
        with httpx.Client(base_url=limited_app.url, timeout=30) as http:
            refused = http.get("/")
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    with httpx.Client(base_url=limited_app.url, timeout=30) as http:
        assert http.get("/").status_code == 200, "room again once the connections closed"


def test_an_idle_kept_alive_connection_is_closed(limited_app) -> None:
    host = urlsplit(limited_app.url).netloc
    with _connect(limited_app.url) as sock:
        sock.sendall(f"GET /static/style.css HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        received = b""
        while True:  # read until the server closes: it does so once the connection is idle
            data = sock.recv(65536)
            if not data:
                break
            received += data
    assert received.startswith(b"HTTP/1.1 200")
