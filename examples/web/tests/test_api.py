"""The web API over real HTTP: the app runs in its own process (conftest), espeak-ng really speaks.

Narrations that must still be going when the test acts on them are long (100
sentences, 2 s apart) and are cancelled at the end: what a test checks never
depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from helpers import FINISHED, Narrations, read_wav, sentences, server_sent_events

WEB_DIR = Path(__file__).resolve().parent.parent
JSON = {"Content-Type": "application/json"}


def test_the_page_and_its_script_are_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="narrate-button"' in page.text and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert "EventSource" in script.text


def test_a_narration_speaks_each_sentence_into_a_wav_file(client: httpx.Client, narrations: Narrations) -> None:
    text = "The fox saw the grapes. He jumped, and missed! Were they sour?"
    response = client.post("/api/stories/fox/narrate", json={"text": text})
    assert response.status_code == 202, response.text
    answer = response.json()
    narrations.task_ids.append(answer["task_id"])
    assert answer["story_id"] == "fox" and answer["task_id"].startswith("fox-")
    assert response.headers["location"] == answer["status_url"] == f"/api/tasks/{answer['task_id']}"
    assert [segment["text"] for segment in answer["segments"]] == [
        "The fox saw the grapes.", "He jumped, and missed!", "Were they sour?"]

    final = narrations.follow(answer["task_id"])[-1]
    assert final["status"] == "COMPLETED", final
    assert final["errors"] == [] and final["error"] is None
    assert final["progress"]["percentage"] == 100
    assert [segment["segment_id"] for segment in final["completed_segments"]] == [1, 2, 3]
    assert client.get(answer["status_url"]).json() == final

    for segment in final["completed_segments"]:
        audio = client.get(segment["audio_url"])
        assert audio.status_code == 200
        assert audio.headers["content-type"] in ("audio/wav", "audio/x-wav")
        with read_wav(audio.content) as wav:
            assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
            frames = wav.readframes(wav.getnframes())
            assert segment["duration"] == pytest.approx(wav.getnframes() / wav.getframerate(), abs=0.001)
        samples = memoryview(frames).cast("h")
        assert max(abs(sample) for sample in samples) > 1000, "the WAV is silent"


def test_story_headings_are_not_spoken_and_voice_markup_is_kept(client: httpx.Client, narrations: Narrations) -> None:
    text = "# A title\n\n## One\nFirst line. Second line.\n\n## Two\n[voice:en+f3] Third line!\n"
    answer = narrations.start("headings", text)
    assert answer["segments"] == [
        {"segment_id": 1, "text": "First line.", "voice": None},
        {"segment_id": 2, "text": "Second line.", "voice": None},
        {"segment_id": 3, "text": "Third line!", "voice": "en+f3"},
    ]
    final = narrations.follow(answer["task_id"])[-1]
    assert final["status"] == "COMPLETED" and len(final["completed_segments"]) == 3


def test_events_follow_a_narration_from_the_queue_to_its_end(client: httpx.Client, narrations: Narrations) -> None:
    blocker = narrations.start_long("blocker")
    narrations.wait_until_running(blocker["task_id"])
    followed = narrations.start("followed", sentences(100), pace_seconds=0.5)
    events = narrations.events(followed["task_id"])
    first = next(events)
    assert first["status"] == "PENDING" and first["queue_position"] == 0
    assert client.delete(blocker["status_url"]).status_code == 202
    statuses = [first]
    cancelled = False
    for status in events:
        statuses.append(status)
        if len(status["completed_segments"]) >= 2 and not cancelled:
            assert client.delete(followed["status_url"]).status_code == 202
            cancelled = True

    revisions = [status["revision"] for status in statuses]
    assert revisions == sorted(set(revisions)), "one event per change: revisions only grow"
    assert statuses[-1]["status"] == "CANCELLED"
    spoken = [len(status["completed_segments"]) for status in statuses]
    assert spoken == sorted(spoken) and 2 <= spoken[-1] < 100
    speaking = [status["progress"]["current_segment_id"] for status in statuses
                if status["status"] == "PROCESSING" and "current_segment_id" in status["progress"]]
    assert speaking and speaking == sorted(speaking) and set(speaking) <= set(range(1, 101))
    assert any(status["cancel_requested"] for status in statuses)


def test_an_event_stream_resumes_after_the_last_event_id(client: httpx.Client, narrations: Narrations) -> None:
    answer = narrations.start("resume", "One. Two.")
    final = narrations.follow(answer["task_id"])[-1]
    assert narrations.follow(answer["task_id"]) == [final]  # a late listener gets the final status
    earlier = {"Last-Event-ID": str(final["revision"] - 1)}
    assert list(narrations.events(answer["task_id"], headers=earlier)) == [final]
    done = client.get(answer["events_url"], headers={"Last-Event-ID": str(final["revision"])})
    assert done.status_code == 204, "after the final status, EventSource is told to stop reconnecting"


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("DELETE", ""), ("GET", "/events")])
def test_an_unknown_task_is_404(client: httpx.Client, method: str, suffix: str) -> None:
    response = client.request(method, f"/api/tasks/no-such-task{suffix}")
    assert response.status_code == 404
    assert "no-such-task" in response.json()["detail"]


def test_a_story_narrated_twice_at_once_is_409(client: httpx.Client, narrations: Narrations) -> None:
    running = narrations.start_long("twice")
    again = client.post("/api/stories/twice/narrate", json={"text": "Again."})
    assert again.status_code == 409
    assert again.json()["task_id"] == running["task_id"]
    assert running["task_id"] in again.json()["detail"]
    other = narrations.start("another-story", "Fine.")  # other stories still queue behind it
    assert other["task_id"] != running["task_id"]

    client.delete(running["status_url"])
    assert narrations.follow(running["task_id"])[-1]["status"] == "CANCELLED"
    narrations.start("twice", "Once more, now that the first one is over.")


def test_concurrent_requests_for_one_story_start_one_narration(base_url: str, narrations: Narrations) -> None:
    async def post_all() -> list:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            body = {"text": sentences(100), "pace_seconds": 2}
            return await asyncio.gather(*(http.post("/api/stories/race/narrate", json=body) for _ in range(8)))

    responses = asyncio.run(post_all())
    codes = sorted(response.status_code for response in responses)
    accepted = [response.json()["task_id"] for response in responses if response.status_code == 202]
    narrations.task_ids.extend(accepted)
    assert codes == [202] + [409] * 7
    assert {response.json()["task_id"] for response in responses if response.status_code == 409} == set(accepted)


def test_cancel_a_pending_and_a_running_narration(client: httpx.Client, narrations: Narrations) -> None:
    running = narrations.start_long("running")
    assert narrations.wait_until_running(running["task_id"])["status"] == "PROCESSING"
    pending = narrations.start("pending", "Never spoken.")

    cancelled = client.delete(pending["status_url"])
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED" and cancelled.json()["started_at"] is None

    asked = client.delete(running["status_url"])
    assert asked.status_code == 202
    assert asked.json()["cancel_requested"] is True
    final = narrations.follow(running["task_id"])[-1]
    assert final["status"] == "CANCELLED"
    assert len(final["completed_segments"]) < 100 and final["error"]

    again = client.delete(running["status_url"])
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"] and again.json()["status"] == "CANCELLED"
    assert narrations.follow(pending["task_id"]) == [client.get(pending["status_url"]).json()]


def test_segment_errors_are_reported_and_a_narration_with_no_audio_fails(narrations: Narrations) -> None:
    partly = narrations.start("partly", "[voice:no-such-voice] Not spoken. Spoken.")
    final = narrations.follow(partly["task_id"])[-1]
    assert final["status"] == "COMPLETED"
    assert [segment["segment_id"] for segment in final["completed_segments"]] == [2]
    assert [error["segment_id"] for error in final["errors"]] == [1]
    assert "no-such-voice" in final["errors"][0]["error"]

    none = narrations.start("none", "Nothing. At all.", voice="no-such-voice")
    failed = narrations.follow(none["task_id"])[-1]
    assert failed["status"] == "FAILED"
    assert "none of the 2 sentences could be spoken" in failed["error"]
    assert len(failed["errors"]) == 2


def test_text_over_the_limits_is_413(client: httpx.Client) -> None:
    over = client.post("/api/stories/big/narrate", json={"text": "a" * 20_001})
    assert over.status_code == 413
    assert "20001 characters" in over.json()["detail"] and "20000" in over.json()["detail"]

    many = client.post("/api/stories/big/narrate", json={"text": "Yes. " * 501})
    assert many.status_code == 413
    assert "501 sentences" in many.json()["detail"]

    body = json.dumps({"text": "é" * 30_000}, ensure_ascii=True).encode()  # 180 kB of \u00e9 escapes
    escaped = client.post("/api/stories/big/narrate", content=body, headers=JSON)
    assert escaped.status_code == 413 and "30000 characters" in escaped.json()["detail"]

    huge = client.post("/api/stories/big/narrate", content=b" " * 300_000, headers=JSON)
    assert huge.status_code == 413
    assert "request body is over" in huge.json()["detail"]


@pytest.mark.parametrize("path, body, mentions", [
    ("/api/stories/ok/narrate", {}, "body.text"),
    ("/api/stories/ok/narrate", {"text": 7}, "body.text"),
    ("/api/stories/ok/narrate", {"text": ""}, "body.text"),
    ("/api/stories/ok/narrate", {"text": " \n\t "}, "empty"),
    ("/api/stories/ok/narrate", {"text": "Hi.", "speed": 2}, "body.speed"),
    ("/api/stories/ok/narrate", {"text": "Hi.", "voice": "en; rm -rf"}, "body.voice"),
    ("/api/stories/ok/narrate", {"text": "Hi.", "pace_seconds": -1}, "body.pace_seconds"),
    ("/api/stories/ok/narrate", {"text": "Hi.", "pace_seconds": 6}, "body.pace_seconds"),
    ("/api/stories/ok/narrate", {"text": "Hi.", "pace_seconds": "1"}, "body.pace_seconds"),
    ("/api/stories/ok/narrate", {"text": "[voice:] Hi."}, "[voice:NAME]"),
    ("/api/stories/ok/narrate", {"text": "# Title only"}, "no chapter"),
    ("/api/stories/ok/narrate", [1, 2], "body"),
    ("/api/stories/bad.id/narrate", {"text": "Hi."}, "path.story_id"),
    ("/api/stories/" + "x" * 65 + "/narrate", {"text": "Hi."}, "path.story_id"),
])
def test_bad_input_is_422_with_a_message(client: httpx.Client, path: str, body: object, mentions: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert mentions in response.json()["detail"]


def test_a_body_that_is_not_json_is_422(client: httpx.Client) -> None:
    response = client.post("/api/stories/ok/narrate", content=b"text=hello", headers=JSON)
    assert response.status_code == 422
    assert "Invalid JSON" in response.json()["detail"]


def test_bad_requests_leave_the_story_free(client: httpx.Client, narrations: Narrations) -> None:
    assert client.post("/api/stories/free/narrate", json={"text": ""}).status_code == 422
    assert client.post("/api/stories/free/narrate", json={"text": "a" * 20_001}).status_code == 413
    final = narrations.follow(narrations.start("free", "Still free.")["task_id"])[-1]
    assert final["status"] == "COMPLETED"


def test_media_outside_the_audio_folder_is_not_served(client: httpx.Client, base_url: str) -> None:
    assert client.get("/media/audio/no-such-task/0001.wav").status_code == 404
    with httpx.Client(timeout=30) as raw:  # no URL normalisation: the dots reach the server
        escaped = raw.get(base_url + "media/audio/..%2f..%2fapp.py")
    assert escaped.status_code == 404
    assert "def create_app" not in escaped.text


def test_a_full_queue_is_503_and_says_when_to_retry(tmp_path: Path) -> None:
    from server_process import running_app

    with running_app(tmp_path / "media", ["--max-pending", "1"]) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        narrations = Narrations(http)
        try:
            running = narrations.start_long("first")
            narrations.wait_until_running(running["task_id"])
            narrations.start("second", "Waits its turn.")
            full = http.post("/api/stories/third/narrate", json={"text": "No room."})
            assert full.status_code == 503
            assert full.headers["retry-after"] == "5"
            assert "already waiting" in full.json()["detail"]
        finally:
            narrations.finish_all()


def test_an_event_stream_sends_only_valid_events(client: httpx.Client, narrations: Narrations) -> None:
    answer = narrations.start("raw-events", "One. Two. Three.")
    with client.stream("GET", answer["events_url"]) as response:
        assert response.headers["cache-control"] == "no-store"
        events = list(server_sent_events(response))
    assert events and all(event.event == "status" for event in events)
    assert json.loads(events[-1].data)["status"] in FINISHED


@pytest.mark.parametrize("after", ["²", "1" * 5000, "-1", "1.5", "0x10", "١٢"])
def test_an_after_that_is_not_a_revision_is_422(client: httpx.Client, narrations: Narrations, after: str) -> None:
    answer = narrations.start("after", "One.")
    narrations.follow(answer["task_id"])
    response = client.get(answer["events_url"], params={"after": after})
    assert response.status_code == 422, response.text
    assert "after must be a revision" in response.json()["detail"]
    resumed = client.get(answer["events_url"], headers={"Last-Event-ID": "²".encode()})
    assert resumed.status_code == 422 and "Last-Event-ID" in resumed.json()["detail"]


@pytest.mark.parametrize("text, code", [("Hello\0 there", 0), ("Bell\x07 here.", 7), ("C1\x85 here.", 0x85)])
def test_control_characters_in_the_text_are_refused(client: httpx.Client, text: str, code: int) -> None:
    response = client.post("/api/stories/controls/narrate", json={"text": text})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"U+{code:04X}" in detail and "control character" in detail
    if code == 0:
        assert "character 6" in detail and "NUL" in detail


def test_tabs_and_line_breaks_are_kept(narrations: Narrations) -> None:
    answer = narrations.start("whitespace", "First\tline.\r\nSecond line.\n")
    assert [segment["text"] for segment in answer["segments"]] == ["First\tline.", "Second line."]
    assert narrations.follow(answer["task_id"])[-1]["status"] == "COMPLETED"


def test_the_progress_never_names_a_playable_sentence(narrations: Narrations) -> None:
    answer = narrations.start("truthful", sentences(4), pace_seconds=0.2)
    statuses = narrations.follow(answer["task_id"])
    assert statuses[-1]["status"] == "COMPLETED"
    named = 0
    for status in statuses:
        playable = {segment["segment_id"] for segment in status["completed_segments"]}
        speaking = status["progress"].get("current_segment_id")
        assert speaking not in playable, status
        named += speaking is not None
    assert named > 0, "no status named the sentence being spoken"


def test_a_narration_that_has_spoken_everything_is_not_cancelled(client: httpx.Client,
                                                                 narrations: Narrations) -> None:
    # A long pace: with a pause after the last sentence, a cancel would land in it.
    answer = narrations.start("to-the-end", "Only one sentence.", pace_seconds=5)
    for status in narrations.events(answer["task_id"]):
        if status["completed_segments"]:
            break
    late = client.delete(answer["status_url"])
    assert late.status_code == 409, late.text
    assert "spoken every sentence" in late.json()["detail"] or "already finished" in late.json()["detail"]
    final = narrations.follow(answer["task_id"])[-1]
    assert final["status"] == "COMPLETED" and final["progress"]["percentage"] == 100
