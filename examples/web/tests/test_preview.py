"""Voice previews and priorities: a preview (one sentence, priority 10) goes ahead of every narration, and a
narration being spoken gives way to it after its sentence, then resumes there; the queue lists the narrations.

The app runs in its own process (conftest); espeak-ng really speaks. Nothing here depends on how fast the
machine is: a narration that must still be running when the preview comes is long, and "within a sentence"
is read from where the narration gave way (its checkpoint), not from a clock.
"""

from __future__ import annotations

from typing import List

import httpx
import pytest

from helpers import Narrations, read_wav, sentences

PREVIEW_PRIORITY = 10


def _done(status: dict) -> int:
    return len(status["completed_segments"]) + len(status["errors"])


def _spoken_ids(status: dict) -> List[int]:
    return [segment["segment_id"] for segment in status["completed_segments"]]


def _until_spoken(narrations: Narrations, task_id: str, count: int) -> dict:
    for status in narrations.events(task_id):
        if len(status["completed_segments"]) >= count:
            return status
    raise AssertionError(f"task {task_id} ended before {count} sentences were spoken")


def _preview(client: httpx.Client, narrations: Narrations, **body: object) -> dict:
    response = client.post("/api/previews", json=body)
    assert response.status_code == 202, response.text
    answer = response.json()
    narrations.task_ids.append(answer["task_id"])
    assert response.headers["location"] == answer["status_url"]
    return answer


def test_a_preview_jumps_a_long_narration_which_resumes_at_its_next_sentence(
        client: httpx.Client, narrations: Narrations) -> None:
    count = 10
    long = narrations.start("long", sentences(count), pace_seconds=0.4)
    before = _until_spoken(narrations, long["task_id"], 2)
    answer = _preview(client, narrations, voice="en+f3")
    assert answer["priority"] == PREVIEW_PRIORITY and answer["voice"] == "en+f3"
    assert [segment["text"] for segment in answer["segments"]] == ["Hello, this is how the voice en+f3 sounds."]

    preview = narrations.follow(answer["task_id"])[-1]
    assert preview["status"] == "COMPLETED", preview
    assert preview["handler"] == "preview-voice" and preview["priority"] == PREVIEW_PRIORITY
    assert preview["deadline"] is not None and preview["deadline"] > preview["created_at"]
    with read_wav(client.get(preview["completed_segments"][0]["audio_url"]).content) as wav:
        assert wav.getnframes() > 0

    final = narrations.follow(long["task_id"])[-1]
    assert final["status"] == "COMPLETED", final
    assert preview["completed_at"] < final["completed_at"], "the narration ended before the preview"
    assert final["yields"] == 1 and final["attempt"] == 1, "a yield is not an interruption"
    assert _spoken_ids(final) == list(range(1, count + 1)), "every sentence once, in order"
    # It gave way after the sentence being spoken when the preview came, or the next one at most.
    assert final["checkpoint"]["resume_at"] <= _done(before) + 2, (final["checkpoint"], _done(before))
    assert final["priority"] == 0 and final["yield_requested"] is False


def test_the_yielded_narration_goes_before_the_narrations_behind_it(
        client: httpx.Client, narrations: Narrations) -> None:
    long = narrations.start("first-in-line", sentences(6), pace_seconds=0.4)
    _until_spoken(narrations, long["task_id"], 1)
    behind = narrations.start("behind-it", "Spoken last.")
    preview = _preview(client, narrations, voice="en-us", text="A sentence of my own.")
    assert [segment["text"] for segment in preview["segments"]] == ["A sentence of my own."]
    finals = {task_id: narrations.follow(task_id)[-1]
              for task_id in (preview["task_id"], long["task_id"], behind["task_id"])}
    assert all(final["status"] == "COMPLETED" for final in finals.values()), finals
    order = sorted(finals, key=lambda task_id: finals[task_id]["completed_at"])
    assert order == [preview["task_id"], long["task_id"], behind["task_id"]]
    assert finals[long["task_id"]]["yields"] == 1 and finals[behind["task_id"]]["yields"] == 0


def test_a_preview_in_a_voice_espeak_ng_lacks_fails_saying_so(client: httpx.Client, narrations: Narrations) -> None:
    answer = _preview(client, narrations, voice="no-such-voice")
    final = narrations.follow(answer["task_id"])[-1]
    assert final["status"] == "FAILED"
    assert "none of the 1 sentences could be spoken" in final["error"]
    assert "no-such-voice" in final["errors"][0]["error"]


@pytest.mark.parametrize("body, mentions", [
    ({"voice": "en", "text": "One sentence. And another."}, "a preview is one sentence; this text has 2"),
    ({"voice": "en", "text": "   "}, "empty"),
    ({"voice": "en", "text": "x" * 301}, "body.text"),
    ({"voice": "en; rm -rf /"}, "body.voice"),
    ({}, "body.voice"),
    ({"voice": "en", "priority": 99}, "body.priority"),
    ({"voice": "en", "text": "Stop\x00here."}, "U+0000"),
])
def test_a_bad_preview_is_422_with_a_message(client: httpx.Client, body: dict, mentions: str) -> None:
    response = client.post("/api/previews", json=body)
    assert response.status_code == 422, response.text
    assert mentions in response.json()["detail"]


def test_the_queue_lists_the_narrations_running_first_then_in_their_order(
        client: httpx.Client, narrations: Narrations) -> None:
    running = narrations.start_long("queue-running")
    narrations.wait_until_running(running["task_id"])
    second = narrations.start("queue-second", "Waits.")
    third = narrations.start("queue-third", "Waits longer.")
    listed = client.get("/api/narrations")
    assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
    queue = listed.json()["narrations"]
    assert [status["task_id"] for status in queue] == [running["task_id"], second["task_id"], third["task_id"]]
    assert [status["status"] for status in queue] == ["PROCESSING", "PENDING", "PENDING"]
    assert [status["queue_position"] for status in queue[1:]] == [0, 1]
    narrations.finish_all()
    assert client.get("/api/narrations").json()["narrations"] == []
