"""What the API tests share: reading a Server-Sent Events stream, and narrations cleaned up after a test."""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import httpx

FINISHED = {"COMPLETED", "FAILED", "CANCELLED"}


@dataclass
class ServerSentEvent:
    event: str
    data: str
    id: Optional[str]

    def json(self) -> dict:
        return json.loads(self.data)


def server_sent_events(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """Parses ``text/event-stream`` as the browser does (comments skipped, fields up to a blank line)."""
    fields: Dict[str, List[str]] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield ServerSentEvent(fields.get("event", ["message"])[-1], "\n".join(fields["data"]),
                                      fields.get("id", [None])[-1])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)


def sentences(count: int, word: str = "Sentence") -> str:
    return " ".join(f"{word} number {n}." for n in range(1, count + 1))


def read_wav(body: bytes) -> wave.Wave_read:
    return wave.open(io.BytesIO(body), "rb")


class Narrations:
    """Starts narrations through the API and follows their event streams."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.task_ids: List[str] = []

    def start(self, story_id: str, text: str, **fields) -> dict:
        response = self.client.post(f"/api/stories/{story_id}/narrate", json={"text": text, **fields})
        assert response.status_code == 202, response.text
        answer = response.json()
        self.task_ids.append(answer["task_id"])
        return answer

    def start_long(self, story_id: str) -> dict:
        """A narration that runs until cancelled, for all practical purposes (100 sentences, 2 s apart)."""
        return self.start(story_id, sentences(100), pace_seconds=2)

    def events(self, task_id: str, headers: Optional[dict] = None) -> Iterator[dict]:
        """The statuses the event stream sends, until it ends (the caller may stop early)."""
        with self.client.stream("GET", f"/api/tasks/{task_id}/events", headers=headers) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in server_sent_events(response):
                assert event.event == "status"
                status = event.json()
                assert event.id == str(status["revision"])
                yield status

    def follow(self, task_id: str) -> List[dict]:
        """Every status the event stream sends; the last one is final."""
        statuses = list(self.events(task_id))
        assert statuses and statuses[-1]["status"] in FINISHED, statuses[-1:]
        return statuses

    def wait_until_running(self, task_id: str) -> dict:
        for status in self.events(task_id):
            if status["status"] != "PENDING":
                return status
        raise AssertionError(f"task {task_id} ended without an event")

    def finish_all(self) -> None:
        for task_id in self.task_ids:
            self.client.delete(f"/api/tasks/{task_id}")  # 409 for those already finished: fine
        for task_id in self.task_ids:
            if self.client.get(f"/api/tasks/{task_id}").status_code != 404:  # 404: cleaned up already
                self.follow(task_id)
