#!/usr/bin/env python3
"""StoryFlow's audio-generation API over storyflow-tasks: a FastAPI app and its page.

    python examples/web/app.py [--port 8000] [--pace 0.3] [--media-dir DIR]

``POST /api/stories/{story_id}/narrate`` queues a narration (one task, one WAV
per sentence, spoken by the demo's espeak-ng engine); ``GET /api/tasks/{id}``
is its status in the library's wire format; ``GET /api/tasks/{id}/events``
streams one Server-Sent Event per change until it finishes;
``DELETE /api/tasks/{id}`` cancels it; ``/media/audio/...`` serves the WAVs and
``/`` the page. It listens on 127.0.0.1 only, in ONE process: the task
registry lives in the process, so several uvicorn workers would each see only
their own tasks.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import secrets
import socket
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional

from fastapi import FastAPI, Path as PathParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from narration import (DEFAULT_VOICE, VOICE_NAME, EspeakEngine, StoryFormatError, SynthesisError, narration_task,
                       segments_of)

from storyflow_tasks import (
    FINISHED_STATES,
    InvalidArgumentError,
    InvalidStateError,
    QueueFullError,
    ShutDownError,
    TaskManager,
    TaskNotFoundError,
    TaskTimeoutError,
    get_task_manager,
)

WEB_DIR = Path(__file__).resolve().parent
REPO_DIR = WEB_DIR.parent.parent
STATIC_DIR = WEB_DIR / "static"
AUDIO_URL_PREFIX = "/media/audio"
STORY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: The longest pause between sentences a request may ask for.
MAX_PACE_SECONDS = 5.0
#: Worst case of JSON's expansion of one character of text: an escaped surrogate pair, "\\ud83d\\ude00".
JSON_BYTES_PER_CHAR = 12

_logger = logging.getLogger("storyflow_web")


@dataclass(frozen=True)
class Settings:
    """What the app is started with (``main``'s options)."""

    media_dir: Path = REPO_DIR / "target" / "web" / "media"
    #: Pause after each sentence when a request names none: espeak-ng speaks a
    #: sentence in milliseconds, and a pause lets a person watch the progress.
    pace_seconds: float = 0.0
    max_text_chars: int = 20_000
    max_segments: int = 500
    #: Narrations allowed to wait behind the running one (the library's max_pending_tasks).
    max_pending: int = 16
    #: An SSE comment is sent after this long without a change, so dead clients are noticed.
    keepalive_seconds: float = 15.0
    #: Printed (with the URL) once the app is ready, for scripts that start it.
    ready_url: Optional[str] = None

    @property
    def max_body_bytes(self) -> int:
        return self.max_text_chars * JSON_BYTES_PER_CHAR + 4096


class NarrateRequest(BaseModel):
    """The body of ``POST /api/stories/{story_id}/narrate``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(description="the text to narrate: sentences, or a story with '## Chapter' headings")
    voice: Optional[str] = Field(None, max_length=64, pattern=f"^{VOICE_NAME.pattern}$",
                                 description="espeak-ng voice (default 'en'); [voice:NAME] markup overrides it")
    pace_seconds: Optional[float] = Field(None, ge=0, le=MAX_PACE_SECONDS, allow_inf_nan=False,
                                          description="pause after each sentence")


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
    """The app's side of the narrations: which story runs which task, and submitting them."""

    def __init__(self, tm: TaskManager, engine: EspeakEngine, settings: Settings) -> None:
        self.tm = tm
        self.engine = engine
        self.settings = settings
        #: story id -> its latest narration's task id
        self.latest: Dict[str, str] = {}

    def running_task(self, story_id: str) -> Optional[dict]:
        """The status of the story's narration if it is still pending or running."""
        task_id = self.latest.get(story_id)
        if task_id is None:
            return None
        status = self.tm.get_task_status(task_id)
        if status is None:
            del self.latest[story_id]  # removed from the registry by the library's cleanup
            return None
        return None if status["status"] in FINISHED_STATES else status

    def start(self, story_id: str, request: NarrateRequest) -> dict:
        """Queues a narration of ``request.text`` for ``story_id``; returns the POST's answer.

        Runs on the event loop with no await between the duplicate check and
        the submission, so two requests for one story cannot both pass it.
        """
        if len(request.text) > self.settings.max_text_chars:
            raise ApiError(413, f"the text is {len(request.text)} characters long; "
                                f"the limit is {self.settings.max_text_chars}")
        if not request.text.strip():
            raise ApiError(422, "body.text: the text is empty: paste something to narrate")
        try:
            segments = segments_of(request.text)
        except StoryFormatError as error:
            raise ApiError(422, f"body.text: {error}") from None
        if len(segments) > self.settings.max_segments:
            raise ApiError(413, f"the text has {len(segments)} sentences; the limit is {self.settings.max_segments}")
        running = self.running_task(story_id)
        if running is not None:
            raise ApiError(409, f"story {story_id!r} is already being narrated by task {running['task_id']!r} "
                                f"({running['status']}): cancel it or wait for it to finish",
                           task_id=running["task_id"])
        task_id = f"{story_id}-{secrets.token_hex(6)}"
        pace = self.settings.pace_seconds if request.pace_seconds is None else request.pace_seconds
        task = narration_task(self.tm, self.engine, task_id, segments, request.voice or DEFAULT_VOICE,
                              self.settings.media_dir / task_id, f"{AUDIO_URL_PREFIX}/{task_id}", pace)
        try:
            self.tm.submit_task(task, task_id=task_id)
        except QueueFullError:
            raise ApiError(503, f"{self.settings.max_pending} narrations are already waiting: try again later",
                           headers={"Retry-After": "5"}) from None
        except ShutDownError:
            raise ApiError(503, "the server is shutting down") from None
        self.latest[story_id] = task_id
        return {
            "task_id": task_id,
            "story_id": story_id,
            "status_url": f"/api/tasks/{task_id}",
            "events_url": f"/api/tasks/{task_id}/events",
            "segments": [segment.to_json() for segment in segments],
        }

    def cancel_all(self) -> None:
        """Cancels every narration still pending or running (the process is about to end)."""
        for task_id in list(self.latest.values()):
            try:
                self.tm.cancel(task_id)
            except (InvalidStateError, TaskNotFoundError):
                pass  # finished already

    def stop(self, timeout: float) -> None:
        """At shutdown: cancels the app's narrations, waits for the running one, releases the engine."""
        self.cancel_all()
        try:
            self.tm.shutdown(timeout=timeout)
        except TaskTimeoutError:
            _logger.warning("a narration did not stop within %s s; the engine is left open", timeout)
            return
        self.engine.close()


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
    """Where an event stream resumes: the SSE ``Last-Event-ID`` (a revision) or ``?after=``; else -1."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value is not None and value.strip().isdigit():
            return int(value.strip())
    return -1


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app; the task manager and the engine are set up when it starts (lifespan)."""
    settings.media_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tm = get_task_manager()
        tm.configure(max_pending_tasks=settings.max_pending)
        try:
            engine = EspeakEngine()
        except SynthesisError as error:
            print(f"app.py: cannot start the espeak-ng engine: {error}", file=sys.stderr, flush=True)
            raise
        narrator = Narrator(tm, engine, settings)
        app.state.narrator = narrator
        if settings.ready_url:
            print(f"storyflow-web: ready on {settings.ready_url}", flush=True)
        yield
        narrator.stop(timeout=5.0)

    app = FastAPI(title="StoryFlow narration (storyflow-tasks)", lifespan=lifespan)

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

    @app.get("/api/tasks/{task_id}")
    async def task_status(task_id: str) -> Response:
        return _status_response(known_status(task_id))

    @app.delete("/api/tasks/{task_id}")
    async def cancel_task(task_id: str) -> Response:
        """Cancels: 200 with the CANCELLED status if it had not started, else 202 (it stops after its sentence)."""
        tm = narrator().tm
        known_status(task_id)
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

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(AUDIO_URL_PREFIX, StaticFiles(directory=settings.media_dir), name="audio")
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


def _loopback_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: any free one), bound before uvicorn starts so the port is known.

    Its protocol is named (IPPROTO_TCP, not 0): asyncio sets TCP_NODELAY only
    on such sockets, and without it a response on a kept-alive connection
    waits some 40 ms for the client's delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as error:
        sock.close()
        raise SystemExit(f"app.py: cannot listen on 127.0.0.1:{port}: {error.strerror} "
                         f"(pass --port N, or --port 0 for any free port)") from None
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text}")
    return value


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=_port, default=8000, help="port on 127.0.0.1 (0: any free one); default 8000")
    parser.add_argument("--pace", type=_seconds, default=0.0, metavar="SECONDS",
                        help="default pause after each sentence, so the progress can be watched; default 0")
    parser.add_argument("--media-dir", type=Path, default=Settings.media_dir,
                        help="where the WAV files go; default target/web/media")
    parser.add_argument("--max-text-chars", type=_positive, default=Settings.max_text_chars,
                        help=f"longest text a request may send (then 413); default {Settings.max_text_chars}")
    parser.add_argument("--max-pending", type=_positive, default=Settings.max_pending,
                        help="narrations that may wait behind the running one (then 503)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    import uvicorn  # here: importing the module for its app factory needs no server

    sock = _loopback_socket(args.port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    settings = Settings(media_dir=args.media_dir.resolve(), pace_seconds=args.pace,
                        max_text_chars=args.max_text_chars, max_pending=args.max_pending, ready_url=url)
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Before uvicorn waits for open connections: cancelled narrations end their
            # event streams (with the final status), so no connection holds the exit up.
            narrator: Optional[Narrator] = getattr(app.state, "narrator", None)
            if narrator is not None:
                narrator.cancel_all()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="info" if args.access_log else "warning", access_log=args.access_log,
                            timeout_graceful_shutdown=5)
    server = Server(config)
    server.run(sockets=[sock])  # uvloop and httptools when installed (uvicorn[standard]), else asyncio and h11
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
