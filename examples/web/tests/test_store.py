"""Over an SQLite task store (a real file in a temporary directory): statuses survive a restart, a narration
interrupted by SIGKILL starts again at its next sentence, and servers on one file share one queue.

Every server is a real process (server_process.py); kills are real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import httpx
import pytest

from helpers import Narrations, sentences

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_process import AppProcess, app_process  # noqa: E402


def _store_args(directory: Path) -> List[str]:
    return ["--store", f"sqlite:{directory / 'tasks.db'}"]


def _server(directory: Path, name: str, extra: Tuple[str, ...] = ()):
    """A server over the directory's task store and media folder, its output in <name>.log."""
    return app_process(directory / "media", [*_store_args(directory), *extra], log_path=directory / f"{name}.log")


def _client(app: AppProcess) -> httpx.Client:
    return httpx.Client(base_url=app.url, timeout=httpx.Timeout(30.0))


def _status_in_another_process(directory: Path, task_id: str) -> dict:
    """The task's status as a process that only opens the store reads it (no server, no handler)."""
    script = ("import json, sys\n"
              "from storyflow_tasks import get_task_manager\n"
              "tm = get_task_manager()\n"
              "tm.configure(store=sys.argv[1])\n"
              "print(json.dumps(tm.get_task_status(sys.argv[2])))\n")
    result = subprocess.run([sys.executable, "-c", script, f"sqlite:{directory / 'tasks.db'}", task_id],
                            capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def _spoken_ids(status: dict) -> List[int]:
    return [segment["segment_id"] for segment in status["completed_segments"]]


def _until_spoken(narrations: Narrations, task_id: str, count: int) -> dict:
    for status in narrations.events(task_id):
        if len(status["completed_segments"]) >= count:
            return status
    raise AssertionError(f"task {task_id} ended before {count} sentences were spoken")


def _wav_identities(folder: Path) -> Dict[str, Tuple[int, int]]:
    """Each WAV's inode and modification time: a sentence spoken again is a new file renamed into place."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(folder.glob("*.wav"))}


def test_a_restart_keeps_every_status_and_resumes_the_running_narration(tmp_path: Path) -> None:
    with _server(tmp_path, "first") as app, _client(app) as http:
        narrations = Narrations(http)
        completed = narrations.follow(narrations.start("done", "One. Two.")["task_id"])[-1]
        failed = narrations.follow(narrations.start("failed", "Nothing.", voice="no-such-voice")["task_id"])[-1]
        cancelled_id = narrations.start_long("cancelled")["task_id"]
        narrations.wait_until_running(cancelled_id)
        assert http.delete(f"/api/tasks/{cancelled_id}").status_code == 202
        cancelled = narrations.follow(cancelled_id)[-1]
        assert [completed["status"], failed["status"], cancelled["status"]] == ["COMPLETED", "FAILED", "CANCELLED"]
        running_id = narrations.start("running", sentences(12), pace_seconds=0.5)["task_id"]
        _until_spoken(narrations, running_id, 2)
        pending_id = narrations.start("pending", "Waits. Its turn.")["task_id"]
        assert http.get(f"/api/tasks/{pending_id}").json()["status"] == "PENDING"
    # The server stopped (SIGTERM) with one narration running and one waiting.

    before = _status_in_another_process(tmp_path, running_id)
    assert before["status"] in ("PENDING", "PROCESSING") and before["attempt"] == 1
    spoken_before = before["completed_segments"]
    assert len(spoken_before) >= 2
    with _server(tmp_path, "second") as app, _client(app) as http:
        narrations = Narrations(http)
        for status in (completed, failed, cancelled):
            assert http.get(f"/api/tasks/{status['task_id']}").json() == status
        resumed = narrations.follow(running_id)[-1]
        assert resumed["status"] == "COMPLETED", resumed
        assert resumed["attempt"] == 2
        assert _spoken_ids(resumed) == list(range(1, 13))
        assert resumed["completed_segments"][:len(spoken_before)] == spoken_before
        waited = narrations.follow(pending_id)[-1]
        assert waited["status"] == "COMPLETED" and waited["attempt"] == 1
        assert waited["started_at"] >= resumed["completed_at"], "the interrupted narration goes first"


def test_a_narration_killed_mid_chapter_resumes_at_its_next_sentence(tmp_path: Path) -> None:
    text = "# A story\n\n## One\n" + sentences(8, "First chapter") + "\n\n## Two\n" + sentences(8, "Second chapter")
    with _server(tmp_path, "killed") as app, _client(app) as http:
        narrations = Narrations(http)
        task_id = narrations.start("chapters", text, pace_seconds=0.2)["task_id"]
        _until_spoken(narrations, task_id, 5)
        os.kill(app.pid, signal.SIGKILL)

    recorded = _status_in_another_process(tmp_path, task_id)
    assert recorded["status"] == "PENDING", "an interrupted named task waits at the head of the queue"
    spoken = _spoken_ids(recorded)
    assert spoken == list(range(1, len(spoken) + 1)) and len(spoken) >= 5
    folder = tmp_path / "media" / task_id
    files_before = _wav_identities(folder)
    assert set(files_before) >= {f"{n:04d}.wav" for n in spoken}

    with _server(tmp_path, "resumed") as app, _client(app) as http:
        narrations = Narrations(http)
        statuses = narrations.follow(task_id)
        final = statuses[-1]
        assert final["status"] == "COMPLETED", final
        assert final["attempt"] == 2
        assert _spoken_ids(final) == list(range(1, 17)), "every sentence once, in order"
        assert final["completed_segments"][:len(spoken)] == recorded["completed_segments"]
        for status in statuses:
            assert _spoken_ids(status)[:len(spoken)] == spoken
            speaking = status["progress"].get("current_segment_id")
            assert speaking is None or speaking > len(spoken), f"sentence {speaking} was spoken again"
        files_after = _wav_identities(folder)
        assert sorted(files_after) == [f"{n:04d}.wav" for n in range(1, 17)]
        for n in spoken:
            name = f"{n:04d}.wav"
            assert files_after[name] == files_before[name], f"{name} was written again"
        for segment in final["completed_segments"]:
            assert http.get(segment["audio_url"]).status_code == 200


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[Tuple[httpx.Client, httpx.Client]]:
    """Two servers, started apart, over one task store and one media folder."""
    with _server(tmp_path, "a") as first, _server(tmp_path, "b") as second, \
            _client(first) as a, _client(second) as b:
        yield a, b


def test_a_narration_submitted_through_one_server_is_followed_through_the_other(two_servers) -> None:
    a, b = two_servers
    through_a, through_b = Narrations(a), Narrations(b)
    answer = through_a.start("shared", sentences(4), pace_seconds=0.1)
    final = through_b.follow(answer["task_id"])[-1]
    assert final["status"] == "COMPLETED" and _spoken_ids(final) == [1, 2, 3, 4]
    assert a.get(answer["status_url"]).json() == final
    for segment in final["completed_segments"]:
        assert a.get(segment["audio_url"]).status_code == 200
        assert b.get(segment["audio_url"]).status_code == 200


def test_two_servers_speak_one_narration_at_a_time_and_know_each_other_s(two_servers) -> None:
    a, b = two_servers
    through_a, through_b = Narrations(a), Narrations(b)
    try:
        long = through_a.start_long("busy")
        through_a.wait_until_running(long["task_id"])
        taken = b.post("/api/stories/busy/narrate", json={"text": "Again."})
        assert taken.status_code == 409 and taken.json()["task_id"] == long["task_id"]
        behind = through_b.start("behind", "Spoken after it.")
        assert b.get(behind["status_url"]).json()["status"] == "PENDING"
        # Cancelled through the other server: 202, or 200 when the narration, which looks for a
        # cancel in its pauses too, has already stopped by the time the answer is written.
        assert b.delete(long["status_url"]).status_code in (200, 202)
        first = through_a.follow(long["task_id"])[-1]
        second = through_a.follow(behind["task_id"])[-1]
        assert first["status"] == "CANCELLED" and second["status"] == "COMPLETED"
        assert second["started_at"] >= first["completed_at"]
    finally:
        through_a.finish_all()
        through_b.finish_all()


@pytest.mark.parametrize("processes", [("--workers", "2"), ("--worker-process",),
                                       ("--workers", "2", "--worker-process")],
                         ids=["workers-2", "worker-process", "both"])
def test_several_processes_on_one_port(tmp_path: Path, processes: Tuple[str, ...]) -> None:
    with _server(tmp_path, "served", processes) as app, _client(app) as http:
        narrations = Narrations(http)
        answers = [narrations.start(f"story-{n}", sentences(3), pace_seconds=0.1) for n in range(3)]
        finals = [narrations.follow(answer["task_id"])[-1] for answer in answers]
        assert [final["status"] for final in finals] == ["COMPLETED"] * 3
        spans = sorted((final["started_at"], final["completed_at"]) for final in finals)
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:])), "two spoke at once"
        for final in finals:
            for segment in final["completed_segments"]:
                assert http.get(segment["audio_url"]).status_code == 200


def test_two_api_processes_and_two_workers_answer_for_each_other(tmp_path: Path) -> None:
    """The layout of `make serve` over redis://, here over one SQLite file: API processes on two ports that
    register no handler, worker processes that speak. A narration sent to one API process is followed and heard
    through the other, and a preview sent to the other jumps it (one file runs one narration at a time)."""
    layout = ("--api-processes", "2", "--worker-processes", "2")
    with app_process(tmp_path / "media", [*_store_args(tmp_path), *layout], log_path=tmp_path / "layout.log",
                     api_processes=2) as app:
        assert len(set(app.urls)) == 2, app.urls
        with httpx.Client(base_url=app.urls[0], timeout=30) as one, \
                httpx.Client(base_url=app.urls[1], timeout=30) as two:
            through_one, through_two = Narrations(one), Narrations(two)
            try:
                answer = through_one.start("layout", sentences(8), pace_seconds=0.3)
                before = _until_spoken(through_two, answer["task_id"], 2)
                listed = two.get("/api/narrations").json()["narrations"]
                assert [status["task_id"] for status in listed] == [answer["task_id"]]
                response = two.post("/api/previews", json={"voice": "en+f3"})
                assert response.status_code == 202, response.text
                preview = through_two.follow(response.json()["task_id"])[-1]
                final = through_two.follow(answer["task_id"])[-1]
                assert preview["status"] == final["status"] == "COMPLETED", (preview, final)
                assert preview["completed_at"] < final["completed_at"]
                assert final["yields"] == 1 and _spoken_ids(final) == list(range(1, 9))
                done_before = len(before["completed_segments"]) + len(before["errors"])
                assert final["checkpoint"]["resume_at"] <= done_before + 2
                assert one.get(answer["status_url"]).json() == final
                for segment in [*final["completed_segments"], *preview["completed_segments"]]:
                    assert one.get(segment["audio_url"]).status_code == 200
                    assert two.get(segment["audio_url"]).status_code == 200
            finally:
                through_one.finish_all()
    log = (tmp_path / "layout.log").read_text()
    assert log.count("storyflow_tasks worker (pid") == 2, log
    assert "-worker1" in log and "-worker2" in log, "each worker process has a machine identity of its own"
