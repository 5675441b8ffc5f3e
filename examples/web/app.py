#!/usr/bin/env python3
"""StoryFlow's audio-generation API over storyflow-tasks: a FastAPI app and its page.

    python examples/web/app.py [--host 127.0.0.1] [--port 8000] [--pace 0.3] [--media-dir DIR]
                               [--store memory|sqlite:PATH|redis://HOST:PORT] [--workers N] [--api-processes N]
                               [--worker-process] [--worker-processes N] [limits...]

``POST /api/stories/{story_id}/narrate`` queues a narration (one task, one WAV
per sentence, spoken by the demo's espeak-ng engine); ``GET /api/tasks/{id}``
is its status in the library's wire format; ``GET /api/tasks/{id}/events``
streams one Server-Sent Event per change until it finishes;
``DELETE /api/tasks/{id}`` cancels it; ``POST /api/previews`` speaks one sentence
in a voice ahead of every narration (a narration being spoken yields to it
after its sentence); ``GET /api/narrations`` lists those pending and running;
``/media/audio/...`` serves the WAVs and ``/`` the page. It listens on
127.0.0.1 by default.

Each narration is a task of the library's named handler ``narrate``
(``narration.py``). The task store decides what outlives the process: in
``memory`` (the library's default) the statuses end with it; over
``sqlite:PATH`` (``make serve``'s default) they survive a restart, a narration
the process was speaking starts again at its next sentence, and several
processes (``--workers N``, or servers started apart on one file) share one
queue and one running narration, each answering for every task; over
``redis://HOST:PORT`` the same holds across machines, one narration at a time
per machine identity. The narrations are spoken in the API process, or with
``--worker-process`` / ``--worker-processes N`` in worker processes of their
own, so the API's GIL serves requests only; ``--api-processes N`` serves the
API from N processes, each on its own port.

Only the page it serves can drive it: every request must name an allowed
Host, a request from a browser must come from an allowed Origin, and a POST
must be JSON (a cross-site form or ``no-cors`` fetch cannot send that). Every
response carries a Content-Security-Policy and the other protective headers.
The disk it writes is bounded (``media.py``), and so are the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional, Sequence, Tuple

from fastapi import FastAPI, Path as PathParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from media import NARRATION_DIR, WAV_NAME, Limits, MediaStore, UnwritableMediaDir
from narration import (AUDIO_URL_PREFIX, DEFAULT_VOICE, HANDLER_NAME, MEDIA_DIR_ENV, MEDIA_LIMITS_ENV,
                       NARRATION_PRIORITY, PREVIEW_HANDLER_NAME, PREVIEW_PRIORITY, RETENTION_ENV, VOICE_NAME,
                       EspeakEngine, Pause, Segment, StoryFormatError, SynthesisError, narration_payload,
                       register_narration, segments_of)

from storyflow_tasks import (
    FINISHED_STATES,
    TASK_PENDING,
    TASK_PROCESSING,
    InvalidArgumentError,
    InvalidStateError,
    QueueFullError,
    ShutDownError,
    StoryflowTasksError,
    TaskManager,
    TaskNotFoundError,
    TaskTimeoutError,
    get_task_manager,
)

WEB_DIR = Path(__file__).resolve().parent
REPO_DIR = WEB_DIR.parent.parent
STATIC_DIR = WEB_DIR / "static"
STORY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: The longest pause between sentences a request may ask for.
MAX_PACE_SECONDS = 5.0
#: Worst case of JSON's expansion of one character of text: an escaped surrogate pair, "\\ud83d\\ude00".
JSON_BYTES_PER_CHAR = 12
#: Characters the text may not hold: C0 and C1 controls but tab, newline and carriage return.
#: espeak-ng reads the text as a C string, so a NUL would silently cut the sentence.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: The longest revision ``?after=`` / ``Last-Event-ID`` may name (revisions are u64; 18 digits always fit).
MAX_REVISION_DIGITS = 18
ALLOWED_HOSTS_ENV = "STORYFLOW_WEB_ALLOWED_HOSTS"
ALLOWED_ORIGINS_ENV = "STORYFLOW_WEB_ALLOWED_ORIGINS"
#: The library's own variable for the store, read when neither --store nor the configuration names one.
STORE_ENV = "STORYFLOW_TASKS_STORE"
#: The library's variable for the machine identity: a redis:// store runs one task at a time per identity.
MACHINE_ENV = "STORYFLOW_TASKS_MACHINE"
#: The longest text a voice preview may speak (one sentence).
MAX_PREVIEW_CHARS = 300
#: What a preview says when the request names no text.
PREVIEW_TEXT = "Hello, this is how the voice {voice} sounds."
#: A preview not started within this long is of no use any more: its deadline fails it (the library's deadline).
PREVIEW_DEADLINE_SECONDS = 60.0
#: What the page needs and nothing more: its own script, style, audio and API; no frames, no plugins.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
#: FastAPI's /docs page loads Swagger UI from its CDN and starts it with an inline script.
DOCS_CSP = ("default-src 'none'; script-src https://cdn.jsdelivr.net 'unsafe-inline'; "
            "style-src https://cdn.jsdelivr.net; img-src https://fastapi.tiangolo.com data:; connect-src 'self'; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
PROTECTIVE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # Another site's <audio> or <script> cannot even load what this server answers.
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
]

_logger = logging.getLogger("storyflow_web")


@dataclass(frozen=True)
class Settings:
    """What the app is started with (``main``'s options)."""

    media_dir: Path = REPO_DIR / "target" / "web" / "media"
    #: Host header values answered (``host:port``); anything else gets 400 (DNS rebinding).
    allowed_hosts: Tuple[str, ...] = ("127.0.0.1:8000", "localhost:8000")
    #: Origin header values allowed (``http://host:port``); a request from any other page gets 403.
    allowed_origins: Tuple[str, ...] = ("http://127.0.0.1:8000", "http://localhost:8000")
    #: Pause after each sentence when a request names none: espeak-ng speaks a
    #: sentence in milliseconds, and a pause lets a person watch the progress.
    pace_seconds: float = 0.0
    max_text_chars: int = 20_000
    max_segments: int = 500
    #: Narrations allowed to wait behind the running one (the library's max_pending_tasks).
    max_pending: int = 16
    #: All the audio kept on disk; with max_narration_audio_bytes it sets how many finished
    #: narrations are kept (the library's max_retained_finished), so the total cannot pass it.
    max_media_bytes: int = 1024 * 1024 * 1024
    #: One narration's audio (some 12 minutes of speech); past it the narration stops, FAILED.
    max_narration_audio_bytes: int = 32 * 1024 * 1024
    #: New narrations get 507 while the disk has less free space than this.
    min_free_bytes: int = 64 * 1024 * 1024
    #: A finished narration's status and audio are kept this long at most (the library's cleanup_threshold_secs).
    keep_finished_seconds: float = 3600.0
    #: An SSE comment is sent after this long without a change, so dead clients are noticed.
    keepalive_seconds: float = 15.0
    #: Printed (with the URL) once the app is ready, for scripts that start it.
    ready_url: Optional[str] = None
    #: Whether this process registers the narration handler (else a worker process speaks).
    speak: bool = True

    @property
    def max_body_bytes(self) -> int:
        return self.max_text_chars * JSON_BYTES_PER_CHAR + 4096

    @property
    def max_retained_finished(self) -> int:
        """Finished narrations kept: they and the running one together fit in max_media_bytes."""
        return max(1, self.max_media_bytes // self.max_narration_audio_bytes - 1)

    @property
    def media_limits(self) -> Limits:
        return Limits(max_bytes=self.max_media_bytes, max_narration_bytes=self.max_narration_audio_bytes,
                      min_free_bytes=self.min_free_bytes)


class NarrateRequest(BaseModel):
    """The body of ``POST /api/stories/{story_id}/narrate``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(description="the text to narrate: sentences, or a story with '## Chapter' headings")
    voice: Optional[str] = Field(None, max_length=64, pattern=f"^{VOICE_NAME.pattern}$",
                                 description="espeak-ng voice (default 'en'); [voice:NAME] markup overrides it")
    pace_seconds: Optional[float] = Field(None, ge=0, le=MAX_PACE_SECONDS, allow_inf_nan=False,
                                          description="pause after each sentence")


class PreviewRequest(BaseModel):
    """The body of ``POST /api/previews``: one sentence in one voice, spoken ahead of every narration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    voice: str = Field(max_length=64, pattern=f"^{VOICE_NAME.pattern}$", description="espeak-ng voice to hear")
    text: Optional[str] = Field(None, max_length=MAX_PREVIEW_CHARS,
                                description="one sentence (default: a sentence naming the voice)")


class ApiError(Exception):
    """An error answered as ``{"detail": message, ...}`` with ``status_code``."""

    def __init__(self, status_code: int, message: str, headers: Optional[Dict[str, str]] = None, **extra) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers
        self.extra = extra


def _describe_validation(errors: List[dict]) -> str:
    """Pydantic's errors as one readable line: ``body.voice: String should match pattern ...``."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def _status_response(status: dict, status_code: int = 200) -> Response:
    # json.dumps straight away: the status is plain JSON already, no encoder pass needed.
    return Response(json.dumps(status), status_code=status_code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _sse(status: dict) -> str:
    return f"id: {status['revision']}\nevent: status\ndata: {json.dumps(status)}\n\n"


class Narrator:
    """The app's side of the narrations: admitting and submitting them, finding a story's, cleaning up files.

    It keeps no state of its own: every answer comes from the task store, so
    any process over one durable store answers for any narration.
    """

    def __init__(self, tm: TaskManager, settings: Settings, store: MediaStore, durable: bool) -> None:
        self.tm = tm
        self.settings = settings
        self.store = store
        #: Whether the task store outlives this process (``sqlite:``): then stopping pauses, never cancels.
        self.durable = durable
        #: Set by ``speak_here`` when this process registers the handler.
        self.engine: Optional[EspeakEngine] = None
        self.pause = Pause()
        # sweep() runs on the event loop and on the worker (as a narration starts).
        self._lock = threading.Lock()

    def speak_here(self, engine: EspeakEngine) -> None:
        """Registers the narration handler: this process speaks narrations (any process's, in a shared store)."""
        self.engine = engine
        register_narration(self.tm, engine, self.store, before_each=self.sweep, pause=self.pause)

    def sweep(self) -> None:
        """Deletes the files of the narrations the library has cleaned up (retention cap or age).

        Run before each narration is admitted, as each starts, and now and
        then, so the finished narrations on disk are never more than the
        library retains; then counts what the disk holds.
        """
        with self._lock:
            self.store.sweep(lambda task_id: self.tm.get_task_status(task_id) is not None)

    def narrations(self) -> List[dict]:
        """The statuses of the narrations pending or running, in any process of the store."""
        unfinished = [*self.tm.list_tasks(TASK_PROCESSING), *self.tm.list_tasks(TASK_PENDING)]
        return [status for status in unfinished if status.get("handler") == HANDLER_NAME]

    def running_task(self, story_id: str) -> Optional[dict]:
        """The status of the story's narration if one is still pending or running."""
        for status in self.narrations():
            if story_of(status["task_id"]) == story_id:
                return status
        return None

    @staticmethod
    def _segments(text: str) -> List[Segment]:
        """The sentences of a request's text, or the 422 that says what is wrong with it."""
        control = CONTROL_CHARACTER.search(text)
        if control:
            code = ord(control.group())
            name = " (NUL)" if code == 0 else ""
            raise ApiError(422, f"body.text: character {control.start() + 1} is the control character "
                                f"U+{code:04X}{name}: the text may hold newlines and tabs, no other control "
                                f"characters")
        if not text.strip():
            raise ApiError(422, "body.text: the text is empty: paste something to narrate")
        try:
            return segments_of(text)
        except StoryFormatError as error:
            raise ApiError(422, f"body.text: {error}") from None

    def _admit(self) -> None:
        """Refuses (507) a new task while the media storage cannot take its audio."""
        self.sweep()
        full = self.store.refusal()
        if full is not None:
            raise ApiError(507, full, headers={"Retry-After": "60"})

    def _submit(self, handler: str, payload: Dict[str, object], task_id: str, priority: int,
                deadline: Optional[float] = None) -> None:
        try:
            self.tm.submit_named(handler, payload, task_id=task_id, priority=priority, deadline=deadline)
        except QueueFullError:
            raise ApiError(503, f"{self.settings.max_pending} tasks are already waiting: try again later",
                           headers={"Retry-After": "5"}) from None
        except ShutDownError:
            raise ApiError(503, "the server is shutting down") from None

    def start(self, story_id: str, request: NarrateRequest) -> dict:
        """Queues a narration of ``request.text`` for ``story_id``; returns the POST's answer.

        Runs on the event loop with no await between the duplicate check and
        the submission, so two requests for one story to one process cannot
        both pass it. (Two processes of one store can, within the same
        millisecond or so: the narrations then both run, one after the other.)
        """
        if len(request.text) > self.settings.max_text_chars:
            raise ApiError(413, f"the text is {len(request.text)} characters long; "
                                f"the limit is {self.settings.max_text_chars}")
        segments = self._segments(request.text)
        if len(segments) > self.settings.max_segments:
            raise ApiError(413, f"the text has {len(segments)} sentences; the limit is {self.settings.max_segments}")
        self._admit()
        running = self.running_task(story_id)
        if running is not None:
            raise ApiError(409, f"story {story_id!r} is already being narrated by task {running['task_id']!r} "
                                f"({running['status']}): cancel it or wait for it to finish",
                           task_id=running["task_id"])
        task_id = f"{story_id}-{secrets.token_hex(6)}"
        pace = self.settings.pace_seconds if request.pace_seconds is None else request.pace_seconds
        payload = narration_payload(story_id, segments, request.voice or DEFAULT_VOICE, pace)
        self._submit(HANDLER_NAME, payload, task_id, NARRATION_PRIORITY)
        return {
            "task_id": task_id,
            "story_id": story_id,
            "priority": NARRATION_PRIORITY,
            "status_url": f"/api/tasks/{task_id}",
            "events_url": f"/api/tasks/{task_id}/events",
            "segments": [segment.to_json() for segment in segments],
        }

    def preview(self, request: PreviewRequest) -> dict:
        """Queues a voice preview: one sentence at PREVIEW_PRIORITY, ahead of every narration; the POST's answer.

        A narration being spoken yields to it after its sentence (``narration.py``),
        so the preview is heard within a sentence. One not started within
        PREVIEW_DEADLINE_SECONDS fails (the library's deadline): it would come too late to be of use.
        """
        text = PREVIEW_TEXT.format(voice=request.voice) if request.text is None else request.text
        segments = self._segments(text)
        if len(segments) != 1:
            raise ApiError(422, f"body.text: a preview is one sentence; this text has {len(segments)}")
        self._admit()
        task_id = f"preview-{secrets.token_hex(6)}"
        payload = narration_payload("preview", segments, request.voice, 0.0)
        self._submit(PREVIEW_HANDLER_NAME, payload, task_id, PREVIEW_PRIORITY,
                     deadline=time.time() + PREVIEW_DEADLINE_SECONDS)
        return {
            "task_id": task_id,
            "voice": request.voice,
            "priority": PREVIEW_PRIORITY,
            "status_url": f"/api/tasks/{task_id}",
            "events_url": f"/api/tasks/{task_id}/events",
            "segments": [segment.to_json() for segment in segments],
        }

    def queue(self) -> List[dict]:
        """The narrations pending or running in any process of the store: the running ones, then in queue order."""
        unfinished = self.narrations()
        running = [status for status in unfinished if status["status"] == TASK_PROCESSING]
        waiting = [status for status in unfinished if status["status"] == TASK_PENDING]
        # A narration no live worker serves yet has no queue position (null): it goes last.
        waiting.sort(key=lambda status: (status.get("queue_position") is None, status.get("queue_position") or 0))
        return running + waiting

    @staticmethod
    def fully_spoken(status: dict) -> bool:
        """Whether every sentence of a running narration has its audio or its error: only the finish is left.

        The handler sets the progress's total to the number of sentences before it speaks the first.
        """
        total = status["progress"].get("total", 0)
        return (status["status"] == TASK_PROCESSING and total > 0
                and len(status["completed_segments"]) + len(status["errors"]) >= total)

    def cancel_all(self) -> None:
        """In a store that ends with this process: cancels every narration still pending or running.

        One that has spoken its every sentence is left to finish COMPLETED:
        only its last status update is left to do. A durable store keeps them
        instead: they go on when the service is back.
        """
        if self.durable:
            return
        for status in self.narrations():
            if self.fully_spoken(status):
                continue
            try:
                self.tm.cancel(status["task_id"])
            except (InvalidStateError, TaskNotFoundError):
                pass  # finished already

    def stop(self, timeout: float) -> bool:
        """At shutdown. Returns True when the process must end at once (``os._exit``), leaving its narration.

        Memory store: cancels the narrations, waits for the running one, shuts
        the manager down, releases the engine. Durable store: the narration
        this process speaks pauses after its sentence and the process ends
        without finishing it, so that the store starts it again (at the next
        sentence) once the service is back; the pending ones stay pending.
        """
        if self.durable:
            if not self.pause.wait_paused(timeout):
                _logger.warning("a sentence took more than %s s to speak; the process ends in the middle of it",
                                timeout)
            return self.engine is not None
        self.cancel_all()
        for status in self.narrations():
            if self.fully_spoken(status):
                try:
                    self.tm.wait(status["task_id"], timeout=timeout)  # before shutdown would ask it to cancel
                except (TaskTimeoutError, TaskNotFoundError):
                    pass
        try:
            self.tm.shutdown(timeout=timeout)
        except TaskTimeoutError:
            _logger.warning("a narration did not stop within %s s; the engine is left open", timeout)
            return False
        if self.engine is not None:
            self.engine.close()
        return False


def story_of(task_id: str) -> str:
    """The story a narration's task id names: ``<story id>-<12 hex digits>``."""
    return task_id[:-13]


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = ApiError(413, f"the request body is over {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _after_revision(request: Request) -> int:
    """Where an event stream resumes: the SSE ``Last-Event-ID`` (a revision) or ``?after=``; else -1.

    Either must be a revision as this server sends them: ASCII digits, at
    most 18 of them (``str.isdigit`` alone accepts "²", which ``int`` refuses).
    """
    for where, value in (("Last-Event-ID", request.headers.get("last-event-id")),
                         ("after", request.query_params.get("after"))):
        if value is None or (where == "Last-Event-ID" and not value.strip()):
            continue
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= MAX_REVISION_DIGITS):
            shown = text if len(text) <= 24 else f"{text[:24]}... ({len(text)} characters)"
            raise ApiError(422, f"{where} must be a revision: a whole number of at most {MAX_REVISION_DIGITS} "
                                f"digits, not {shown!r}")
        return int(text)
    return -1


def _host_for_header(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def default_allowed_hosts(host: str, port: int) -> Tuple[str, ...]:
    """The served address and 127.0.0.1/localhost, on the port served (and bare on port 80)."""
    names = ["127.0.0.1", "localhost"]
    if host not in ("0.0.0.0", "::", "") and _host_for_header(host) not in names:
        names.insert(0, _host_for_header(host))
    hosts = [f"{name}:{port}" for name in names]
    if port == 80:
        hosts += names
    return tuple(hosts)


def origins_of(hosts: Sequence[str]) -> Tuple[str, ...]:
    return tuple(f"http://{host}" for host in hosts)


class RequestGuard:
    """ASGI middleware: refuses requests no page of this server would make; protective headers on every answer.

    - ``Host`` must be an allowed one: a page of another site that resolved its
      own name to 127.0.0.1 (DNS rebinding) sends its own name there. 400.
    - ``Origin``, when sent (browsers send it on every POST and DELETE and on
      every cross-origin request), must be an allowed one. 403.
    - A POST must say ``Content-Type: application/json``: a form or a
      ``no-cors`` fetch from another page can only send text/plain,
      urlencoded or multipart bodies. 415.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = {host.lower() for host in allowed_hosts}
        self.allowed_origins = {origin.lower().rstrip("/") for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in ("/docs", "/docs/oauth2-redirect") else PAGE_CSP
        extra = [(b"content-security-policy", csp.encode()), *PROTECTIVE_HEADERS]

        async def send_protected(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send_protected)
            return
        status_code, detail = refusal
        await JSONResponse({"detail": detail}, status_code)(scope, receive, send_protected)

    def refusal(self, scope: Scope) -> Optional[Tuple[int, str]]:
        headers: Dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        host = headers.get("host")
        if host is None:
            return 400, "the request has no Host header"
        if host.lower() not in self.allowed_hosts:
            return 400, (f"the Host header {host[:100]!r} is not one this server answers to "
                         f"(allowed: {', '.join(sorted(self.allowed_hosts))}; see --allowed-host)")
        origin = headers.get("origin")
        if origin is not None and origin.lower().rstrip("/") not in self.allowed_origins:
            return 403, (f"requests from the origin {origin[:100]!r} are refused: only this server's own page "
                         f"may use the API (allowed: {', '.join(sorted(self.allowed_origins))}; see --allowed-origin)")
        if scope["method"] == "POST":
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                shown = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
                return 415, f"the request body must be JSON sent as Content-Type: application/json, not {shown}"
        return None


#: How often finished narrations' files are looked for when no request comes.
SWEEP_SECONDS = 30.0


def create_app(settings: Settings, store: Optional[MediaStore] = None) -> FastAPI:
    """The FastAPI app; the task manager and the engine are set up when it starts (lifespan).

    ``store`` is the media directory, opened (``MediaStore.open``) by the caller.
    """
    if store is None:
        store = MediaStore(settings.media_dir, settings.media_limits)
        store.open()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tm = get_task_manager()
        durable = tm.get_config().get("store", "memory") != "memory"
        narrator = Narrator(tm, settings, store, durable)
        app.state.narrator = narrator
        app.state.exit_at_once = False
        narrator.sweep()  # the files of narrations no status names any more: an earlier run's, in memory
        if settings.speak:
            try:
                engine = EspeakEngine()
            except SynthesisError as error:
                print(f"app.py: cannot start the espeak-ng engine: {error}", file=sys.stderr, flush=True)
                raise
            narrator.speak_here(engine)

        async def sweep_now_and_then() -> None:
            while True:
                await asyncio.sleep(SWEEP_SECONDS)
                narrator.sweep()

        sweeper = asyncio.create_task(sweep_now_and_then())
        if settings.ready_url:
            print(f"storyflow-web: ready on {settings.ready_url}", flush=True)
        yield
        sweeper.cancel()
        app.state.exit_at_once = narrator.stop(timeout=5.0)

    app = FastAPI(title="StoryFlow narration (storyflow-tasks)", lifespan=lifespan, redoc_url=None)
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"detail": error.message, **error.extra}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe_validation(list(error.errors()))}, 422)

    def narrator() -> Narrator:
        return app.state.narrator

    def known_status(task_id: str) -> dict:
        try:
            status = narrator().tm.get_task_status(task_id)
        except InvalidArgumentError as error:
            raise ApiError(422, f"task id: {error}") from None
        if status is None:
            raise ApiError(404, f"no task {task_id!r}: unknown, or finished long ago and cleaned up")
        return status

    # The body is read by hand (a size limit before parsing): its schema is declared for /docs here.
    narrate_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": NarrateRequest.model_json_schema()}}}}

    @app.post("/api/stories/{story_id}/narrate", status_code=202, openapi_extra=narrate_body)
    async def narrate(request: Request,
                      story_id: str = PathParam(pattern=STORY_ID_PATTERN,
                                                description="letters, digits, '_' and '-', at most 64")) -> JSONResponse:
        body = await _read_body(request, settings.max_body_bytes)
        try:
            narrate_request = NarrateRequest.model_validate_json(body or b"null")
        except ValidationError as error:
            errors = [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_input=False)]
            raise ApiError(422, _describe_validation(errors)) from None
        answer = narrator().start(story_id, narrate_request)
        return JSONResponse(answer, 202, headers={"Location": answer["status_url"]})

    preview_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PreviewRequest.model_json_schema()}}}}

    @app.post("/api/previews", status_code=202, openapi_extra=preview_body)
    async def preview(request: Request) -> JSONResponse:
        """Queues a voice preview: one sentence, at a priority above every narration's."""
        body = await _read_body(request, MAX_PREVIEW_CHARS * JSON_BYTES_PER_CHAR + 4096)
        try:
            preview_request = PreviewRequest.model_validate_json(body or b"null")
        except ValidationError as error:
            errors = [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_input=False)]
            raise ApiError(422, _describe_validation(errors)) from None
        answer = narrator().preview(preview_request)
        return JSONResponse(answer, 202, headers={"Location": answer["status_url"]})

    @app.get("/api/narrations")
    async def narrations() -> Response:
        """The narrations pending or running, whichever process of the store took them: running first, then in
        queue order (each the library's status JSON)."""
        return Response(json.dumps({"narrations": narrator().queue()}), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/tasks/{task_id}")
    async def task_status(task_id: str) -> Response:
        return _status_response(known_status(task_id))

    @app.delete("/api/tasks/{task_id}")
    async def cancel_task(task_id: str) -> Response:
        """Cancels: 200 with the CANCELLED status if it had not started, else 202 (it stops after its sentence).

        A narration that has spoken every sentence is not cancelled (409): it
        is finishing, and calling it cancelled would say audio was lost.
        """
        tm = narrator().tm
        status = known_status(task_id)
        if narrator().fully_spoken(status):
            raise ApiError(409, f"task {task_id!r} has spoken every sentence: it is finishing, nothing is left to "
                                "cancel", status=status["status"])
        try:
            cancelled = tm.cancel(task_id)
        except InvalidStateError:
            status = known_status(task_id)
            raise ApiError(409, f"task {task_id!r} has already finished ({status['status']})",
                           status=status["status"]) from None
        except TaskNotFoundError:
            raise ApiError(404, f"no task {task_id!r}") from None
        return _status_response(known_status(task_id), 200 if cancelled else 202)

    @app.get("/api/tasks/{task_id}/events")
    async def task_events(task_id: str, request: Request) -> Response:
        """Server-Sent Events: the status now, then one per change (event ``status``, id = revision), to the end.

        A client reconnecting with ``Last-Event-ID`` gets only what came after;
        once it has the final status, a reconnection gets 204 (the SSE way of
        saying "stop reconnecting").
        """
        status = known_status(task_id)
        after = _after_revision(request)
        if status["status"] in FINISHED_STATES and status["revision"] <= after:
            return Response(status_code=204)
        return StreamingResponse(_status_events(narrator().tm, task_id, after, settings.keepalive_seconds),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get(AUDIO_URL_PREFIX + "/{task_id}/{name}", include_in_schema=False)
    async def audio(task_id: str, name: str) -> FileResponse:
        # Only the names the store renames into place: a temporary file is never served.
        path = store.folder(task_id) / name
        if not (NARRATION_DIR.match(task_id) and WAV_NAME.match(name) and path.is_file()):
            raise ApiError(404, "no such audio: unknown, or its narration was cleaned up")
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _status_events(tm: TaskManager, task_id: str, after: int, keepalive: float) -> AsyncIterator[str]:
    """The SSE stream: woken by the library's change feed (``watch_async``), never blocking the loop."""
    while True:
        try:
            async for status in tm.watch_async(task_id, timeout=keepalive):
                if status["revision"] > after:
                    after = status["revision"]
                    yield _sse(status)
                if status["status"] in FINISHED_STATES:
                    return
            return  # the task left the registry: nothing more will happen to it
        except TaskTimeoutError:
            yield ": keep-alive\n\n"
        except TaskNotFoundError:
            return


def _listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host`` (port 0: any free one), bound before uvicorn starts so the port is known.

    Its protocol is named (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY only
    on such sockets, and without it a response on a kept-alive connection
    waits some 40 ms for the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise SystemExit(f"app.py: cannot listen on {_host_for_header(host)}:{port}: {error.strerror} "
                         f"(pass --port N, or --port 0 for any free port; with make: make serve PORT=N)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0 <= value <= MAX_PACE_SECONDS):
        raise argparse.ArgumentTypeError(f"seconds between 0 and {MAX_PACE_SECONDS}, not {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port number from 0 to 65535, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a whole number >= 0, not {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text}")
    return value


SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def _size(text: str) -> int:
    """A byte count: ``65536``, ``64K``, ``32M``, ``1G`` (powers of 1024)."""
    match = re.fullmatch(r"([0-9]{1,15})([KMG]?)B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"a size such as 65536, 64K, 32M or 1G, not {text}")
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


def _listed(text: Optional[str]) -> List[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; default 127.0.0.1 (another one needs --allowed-host too)")
    parser.add_argument("--port", type=_port, default=8000, help="port (0: any free one); default 8000")
    parser.add_argument("--pace", type=_seconds, default=0.0, metavar="SECONDS",
                        help="default pause after each sentence, so the progress can be watched; default 0")
    parser.add_argument("--media-dir", type=Path, default=Settings.media_dir,
                        help="where the WAV files go; default target/web/media")
    parser.add_argument("--allowed-host", action="append", metavar="HOST:PORT",
                        help=f"a Host header to answer (repeatable; or ${ALLOWED_HOSTS_ENV}, comma-separated); "
                             "default the address served and 127.0.0.1/localhost on its port")
    parser.add_argument("--allowed-origin", action="append", metavar="URL",
                        help=f"an Origin allowed to use the API (repeatable; or ${ALLOWED_ORIGINS_ENV}); "
                             "default http:// and each allowed host")
    parser.add_argument("--max-text-chars", type=_positive, default=Settings.max_text_chars,
                        help=f"longest text a request may send (then 413); default {Settings.max_text_chars}")
    parser.add_argument("--max-sentences", type=_positive, default=Settings.max_segments,
                        help=f"most sentences a request may send (then 413); default {Settings.max_segments}")
    parser.add_argument("--max-media", type=_size, default=Settings.max_media_bytes, metavar="SIZE",
                        help="all the audio kept on disk (e.g. 1G); default 1G")
    parser.add_argument("--max-narration-audio", type=_size, default=Settings.max_narration_audio_bytes,
                        metavar="SIZE", help="one narration's audio; past it, it stops (FAILED); default 32M")
    parser.add_argument("--min-free", type=_size, default=Settings.min_free_bytes, metavar="SIZE",
                        help="free disk space below which new narrations get 507; default 64M")
    parser.add_argument("--max-pending", type=_positive, default=Settings.max_pending,
                        help="narrations that may wait behind the running one (then 503)")
    parser.add_argument("--max-connections", type=_positive, default=64,
                        help="open connections and requests at once, past which uvicorn answers 503; default 64")
    parser.add_argument("--keep-alive", type=_positive, default=5, metavar="SECONDS",
                        help="an idle kept-alive connection is closed after this long; default 5")
    parser.add_argument("--max-header-bytes", type=_size, default=16 * 1024, metavar="SIZE",
                        help="the request line and headers together; a larger request is refused (400); default 16K")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--store", metavar="STORE",
                        help=f"the task store: memory, sqlite:PATH (statuses survive a restart, and every "
                             f"process of the file shares one queue) or redis://HOST:PORT (the same across "
                             f"machines); default ${STORE_ENV}, else memory")
    parser.add_argument("--workers", type=_positive, default=1, metavar="N",
                        help="serve from N processes on one port (needs a shared store: sqlite: or redis://); "
                             "default 1")
    parser.add_argument("--api-processes", type=_positive, default=1, metavar="N",
                        help="serve from N API processes, each on its own port: --port, --port + 1, ... (with "
                             "--port 0 each a free one); needs a shared store; default 1")
    parser.add_argument("--worker-process", action=argparse.BooleanOptionalAction, default=False,
                        help="speak the narrations in a worker process of their own (python -m storyflow_tasks "
                             "worker), not in the API process (needs a shared store); as --worker-processes 1")
    parser.add_argument("--worker-processes", type=_count, default=None, metavar="N",
                        help=f"speak the narrations in N worker processes and none in the API processes; with "
                             f"N > 1 each has a machine identity of its own (${MACHINE_ENV}, suffixed -worker1, "
                             f"-worker2, ...), so that a redis:// store runs N narrations at once")
    # What a supervising app.py passes to the processes it starts.
    parser.add_argument("--socket-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-speak", action="store_true", help=argparse.SUPPRESS)
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    store_spec = _store_spec(args.store or os.environ.get(STORE_ENV) or "memory")
    worker_processes = int(args.worker_process) if args.worker_processes is None else args.worker_processes
    if store_spec == "memory" and (args.workers > 1 or args.api_processes > 1 or worker_processes):
        parser.error("--workers, --api-processes and --worker-process(es) need a task store the processes share: "
                     "--store sqlite:PATH or --store redis://HOST:PORT")
    if args.workers > 1 and args.api_processes > 1:
        parser.error("--workers (processes on one port) and --api-processes (a port each): give one of them")
    if args.port and args.port + args.api_processes - 1 > 65535:
        parser.error(f"--api-processes {args.api_processes} from --port {args.port} would pass port 65535")
    if args.max_media < 2 * args.max_narration_audio:
        parser.error("--max-media must be at least twice --max-narration-audio "
                     "(the running narration and one finished one)")

    import uvicorn  # here: importing the module for its app factory needs no server

    media_dir = args.media_dir.resolve()
    store = MediaStore(media_dir, Limits(max_bytes=args.max_media, max_narration_bytes=args.max_narration_audio,
                                         min_free_bytes=args.min_free))
    try:
        store.open()
    except UnwritableMediaDir as error:
        raise SystemExit(f"app.py: {error} (pass --media-dir DIR)") from None

    if args.socket_fd is None:
        sockets = [_listening_socket(args.host, args.port)]
        for number in range(1, args.api_processes):
            sockets.append(_listening_socket(args.host, args.port + number if args.port else 0))
        sock = sockets[0]
    else:
        sock = socket.socket(fileno=args.socket_fd)
        sockets = [sock]
    port = sock.getsockname()[1]
    hosts = args.allowed_host or _listed(os.environ.get(ALLOWED_HOSTS_ENV)) or default_allowed_hosts(args.host, port)
    origins = args.allowed_origin or _listed(os.environ.get(ALLOWED_ORIGINS_ENV)) or origins_of(hosts)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else _host_for_header(args.host)
    url = f"http://{shown_host}:{port}/"
    settings = Settings(media_dir=media_dir, allowed_hosts=tuple(hosts), allowed_origins=tuple(origins),
                        pace_seconds=args.pace, max_text_chars=args.max_text_chars, max_segments=args.max_sentences,
                        max_pending=args.max_pending, max_media_bytes=args.max_media,
                        max_narration_audio_bytes=args.max_narration_audio, min_free_bytes=args.min_free,
                        ready_url=url, speak=not args.no_speak)
    if args.socket_fd is None and (args.workers > 1 or len(sockets) > 1 or worker_processes):
        return supervise(arguments, args.workers, worker_processes, sockets, store_spec, settings)
    open_tasks(settings, store_spec)
    app = create_app(settings, store)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Before uvicorn waits for open connections: cancelled narrations end their
            # event streams (with the final status), so no connection holds the exit up.
            narrator: Optional[Narrator] = getattr(app.state, "narrator", None)
            if narrator is not None:
                narrator.cancel_all()
            super().handle_exit(sig, frame)

    # h11, not httptools: h11 refuses a request whose headers pass h11_max_incomplete_event_size
    # without buffering them, where httptools keeps whatever headers arrive.
    config = uvicorn.Config(app, http="h11", ws="none", h11_max_incomplete_event_size=args.max_header_bytes,
                            limit_concurrency=args.max_connections, timeout_keep_alive=args.keep_alive,
                            log_level="info" if args.access_log else "warning", access_log=args.access_log,
                            server_header=False, timeout_graceful_shutdown=5)
    server = Server(config)
    server.run(sockets=[sock])  # uvloop when installed, else asyncio
    if getattr(app.state, "exit_at_once", False):
        # The paused narration must stay unfinished: interpreter exit would close the
        # library's runner, which fails a task still running. The store starts it again.
        sys.stdout.flush()
        os._exit(0 if server.started else 1)
    return 0 if server.started else 1


def _store_spec(text: str) -> str:
    """The store as every process must name it: an sqlite: path made absolute (the worker runs elsewhere)."""
    if text.startswith("sqlite:"):
        return "sqlite:" + str(Path(text[len("sqlite:"):]).expanduser().resolve())
    return text


def open_tasks(settings: Settings, store_spec: str) -> TaskManager:
    """Configures the process's task manager and opens its store now, so a bad store stops the start with one line."""
    tm = get_task_manager()
    try:
        tm.configure(store=store_spec, max_pending_tasks=settings.max_pending,
                     max_retained_finished=settings.max_retained_finished,
                     cleanup_threshold_secs=settings.keep_finished_seconds)
        tm.stats()  # the first call that needs the store opens it
    except StoryflowTasksError as error:
        raise SystemExit(f"app.py: cannot use the task store {store_spec}: {error} (pass --store memory, "
                         f"--store sqlite:PATH or --store redis://HOST:PORT)") from None
    return tm


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: a supervisor killed with SIGKILL leaves no server behind.
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def machine_identity() -> str:
    """This machine's identity as the library finds it: ${MACHINE_ENV}, else /etc/machine-id, else the hostname."""
    named = os.environ.get(MACHINE_ENV, "").strip()
    if named:
        return named
    try:
        machine_id = Path("/etc/machine-id").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine_id = ""
    return machine_id or socket.gethostname()


def worker_identities(count: int) -> List[Optional[str]]:
    """The machine identity each worker process is given: None (the machine's own) for one, else one each.

    A redis:// store runs one task at a time per machine identity (a GPU
    machine runs one inference at a time). Several worker processes on one
    machine stand here for several machines: each gets an identity of its own,
    so they run at once. On real hardware each GPU machine runs one worker,
    with the identity it has by default (/etc/machine-id).
    """
    if count <= 1:
        return [None] * count
    base = machine_identity()
    return [f"{base}-worker{number}" for number in range(1, count + 1)]


def _shown_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else _host_for_header(host)
    return f"http://{shown}:{port}/"


def supervise(arguments: List[str], workers: int, worker_processes: int, sockets: List[socket.socket],
              store_spec: str, settings: Settings) -> int:
    """Serves from several processes over one shared task store, and supervises them.

    Each listening socket is served by ``workers`` processes (as ``uvicorn
    --workers`` does), each this app run again with the socket's descriptor:
    one socket is one port. With ``worker_processes`` the API processes
    register no handler, and that many worker processes (the library's worker
    command) speak the narrations, each with its machine identity
    (``worker_identities``). SIGINT and SIGTERM are passed on; the supervisor
    ends when the servers have.
    """
    env = {**os.environ, STORE_ENV: store_spec}
    children: List[subprocess.Popen] = []
    worker_children: List[subprocess.Popen] = []
    identities = worker_identities(worker_processes)
    urls = [_shown_url(sock) for sock in sockets]
    if worker_processes:
        named = ", ".join(identity for identity in identities if identity) or "this machine's"
        print(f"app.py: {len(sockets) * workers} API process(es) on {', '.join(urls)} (no handler) and "
              f"{worker_processes} worker process(es) (machine identity {named}) over {store_spec}", flush=True)
    limits = settings.media_limits
    worker_env = {**env, MEDIA_DIR_ENV: str(settings.media_dir),
                  MEDIA_LIMITS_ENV: f"{limits.max_bytes},{limits.max_narration_bytes},{limits.min_free_bytes}",
                  RETENTION_ENV: f"{settings.max_retained_finished},{settings.keep_finished_seconds}"}
    for identity in identities:
        # Its own session: a Ctrl-C in the terminal must not reach it, since the worker command's
        # graceful stop cancels the running narration; the supervisor stops it last.
        own_env = worker_env if identity is None else {**worker_env, MACHINE_ENV: identity}
        worker_children.append(subprocess.Popen(
            [sys.executable, "-m", "storyflow_tasks", "worker", "--store", store_spec, "--import", "narration_worker"],
            cwd=WEB_DIR, env=own_env, start_new_session=True, preexec_fn=_die_with_parent))
    for sock in sockets:
        fd = sock.fileno()
        for _ in range(workers):
            command = [sys.executable, str(Path(__file__).resolve()), *arguments, "--workers", "1",
                       "--api-processes", "1", "--no-worker-process", "--worker-processes", "0",
                       "--store", store_spec, "--socket-fd", str(fd)]
            if worker_processes:
                command.append("--no-speak")
            children.append(subprocess.Popen(command, env=env, pass_fds=(fd,), preexec_fn=_die_with_parent))
        sock.close()

    def pass_on(signal_number: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, pass_on)
    signal.signal(signal.SIGTERM, pass_on)
    # uvicorn ends a server it stopped on a signal by raising that signal again: that is a clean stop.
    codes = [0 if code in (-signal.SIGTERM, -signal.SIGINT) else code for code in (child.wait() for child in children)]
    for worker in worker_children:
        # Killed, not stopped: the worker command's SIGTERM cancels the running narration, where a
        # restart should resume it. An interrupted narration starts again at its next sentence.
        worker.kill()
        worker.wait()
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
