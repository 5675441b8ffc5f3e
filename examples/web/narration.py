"""What the web app narrates and how: pasted text to sentences, and the handler that speaks them.

The text is cut into sentences by the demo's story parser (``examples/story.py``),
each sentence is one segment, and one storyflow-tasks task speaks a whole
narration with the demo's espeak-ng engine (``examples/espeak_engine.py``),
one WAV file per sentence. The task is a named one: the app submits
``submit_named("narrate", payload)`` and whichever process registered the
``narrate`` handler speaks it (``register_narration``): the API process
itself, or a worker process of its own (``narration_worker.py``). Every
process of one task store shares one queue and runs one task at a time, so
the engine (libespeak-ng is not thread-safe, and speech wants the CPU) never
runs twice at once. Each WAV goes through the media store (``media.py``):
written atomically, within the size limits.

A narration interrupted by the end of its process (a crash, SIGKILL, a
restart) starts again in a durable store with its completed segments and
errors kept: the handler skips those sentences and goes on with the next one.

A voice preview is one sentence submitted to the ``preview-voice`` handler
(the same speaking code) at a higher priority than narrations. Between two
sentences, and during the pause after one, a narration asks the library
whether a task of a higher priority waits for the worker
(``is_yield_requested``); if so it yields (``yield_task``) and returns: the
library puts it back at the head of the queue of its priority with its
segments and errors, the preview runs, and the narration resumes at its next
sentence, as after an interruption. So a preview is heard within one sentence
of a long narration, not after it.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

EXAMPLES_DIR = Path(__file__).resolve().parent.parent
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))  # the demo's engine and story parser live one level up

from espeak_engine import DEFAULT_VOICE, EspeakEngine, SynthesisError  # noqa: E402
from media import WAV_NAME, MediaStore, StorageError  # noqa: E402
from story import VOICE_NAME, StoryFormatError, parse_story, split_sentences  # noqa: E402

from storyflow_tasks import TaskManager, TaskTimeoutError, current_task_id  # noqa: E402

__all__ = [
    "AUDIO_URL_PREFIX",
    "DEFAULT_VOICE",
    "EspeakEngine",
    "HANDLER_NAME",
    "NARRATION_PRIORITY",
    "NarrationStopped",
    "PREVIEW_HANDLER_NAME",
    "PREVIEW_PRIORITY",
    "Segment",
    "StoryFormatError",
    "SynthesisError",
    "VOICE_NAME",
    "narration_payload",
    "register_narration",
    "segments_of",
]

#: The named handler every narration is submitted to.
HANDLER_NAME = "narrate"
#: The named handler a voice preview (one sentence) is submitted to; the same code speaks it.
PREVIEW_HANDLER_NAME = "preview-voice"
#: Narrations run in the order they came, at this priority.
NARRATION_PRIORITY = 0
#: A preview goes ahead of every narration, and a running narration yields to it between sentences.
PREVIEW_PRIORITY = 10
#: How often the pause after a sentence asks whether a higher-priority task waits (the call is cheap).
YIELD_POLL_SECONDS = 0.05
#: What app.py tells the worker process it starts (narration_worker.py): the media directory, its
#: limits (max_bytes,max_narration_bytes,min_free_bytes) and the retention
#: (max_retained_finished,cleanup_threshold_secs), which the process that finishes a task applies.
MEDIA_DIR_ENV = "STORYFLOW_WEB_MEDIA_DIR"
MEDIA_LIMITS_ENV = "STORYFLOW_WEB_MEDIA_LIMITS"
RETENTION_ENV = "STORYFLOW_WEB_RETENTION"
#: Where the app serves a narration's WAVs: AUDIO_URL_PREFIX/<task id>/NNNN.wav.
AUDIO_URL_PREFIX = "/media/audio"
#: How much of the sentence being spoken the progress carries (``current_text``).
PROGRESS_TEXT_CHARS = 160


@dataclass(frozen=True)
class Segment:
    """One sentence of a narration: its id (1, 2, ...), its text and its voice (None: the request's)."""

    segment_id: int
    text: str
    voice: Optional[str]

    def to_json(self) -> dict:
        return {"segment_id": self.segment_id, "text": self.text, "voice": self.voice}


def segments_of(text: str) -> List[Segment]:
    """The sentences of pasted text; raises StoryFormatError (a ValueError) saying what is wrong.

    Text in the demo's story format (``# Title``, ``## Chapter`` lines, as
    ``examples/story.txt``) is read as a story, its chapters one after the
    other, so that the headings are not spoken; any other text is one run of
    sentences. ``[voice:NAME]`` before a sentence picks its voice in both.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise StoryFormatError("the text is empty: paste something to narrate")
    if any(line.startswith("#") for line in lines):
        _title, chapters = parse_story(text, "the text")
        sentences = [sentence for chapter in chapters for sentence in chapter.sentences]
    else:
        sentences = split_sentences(" ".join(lines), "the text")
    return [Segment(number, sentence.text, sentence.voice) for number, sentence in enumerate(sentences, start=1)]


#: Why a pause after a sentence ended early.
CANCEL = "cancel"
YIELD = "yield"


def _rest(tm: TaskManager, task_id: str, seconds: float) -> Optional[str]:
    """Waits ``seconds`` after a sentence; returns early with CANCEL or YIELD when either is asked for, else None.

    The wait long-polls the task's own status (``watch``), so a cancel
    request ends it at once; a task of a higher priority does not change this
    task's status, so ``is_yield_requested`` is asked every YIELD_POLL_SECONDS.
    """
    if seconds <= 0:
        return None  # the next sentence asks about both first anyway
    end = time.monotonic() + seconds
    while True:
        if tm.is_yield_requested(task_id):
            return YIELD
        left = end - time.monotonic()
        if left <= 0:
            return CANCEL if tm.is_cancel_requested(task_id) else None
        try:
            for status in tm.watch(task_id, timeout=min(left, YIELD_POLL_SECONDS)):
                if status.get("cancel_requested"):
                    return CANCEL
        except TaskTimeoutError:
            pass  # nothing changed for this slice: ask about yielding again


class NarrationStopped(Exception):
    """The narration cannot go on: its audio cannot be stored (the status's ``error`` says why)."""


def narration_payload(story_id: str, segments: List[Segment], voice: str, pace_seconds: float) -> Dict[str, Any]:
    """What a narration task carries: everything its handler needs, in whichever process it runs."""
    return {"story_id": story_id, "voice": voice, "pace_seconds": pace_seconds,
            "sentences": [segment.to_json() for segment in segments]}


class Pause:
    """Asked by a process that is stopping but must not cancel: the narration stops between sentences unfinished.

    A durable store starts an unfinished narration again once its process has
    ended, at its next sentence; ``wait_paused`` lets the process end after the
    sentence being spoken rather than in the middle of it.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._idle = threading.Event()
        self._idle.set()

    def running(self) -> None:
        self._idle.clear()

    def idle(self) -> None:
        self._idle.set()

    def wait_paused(self, timeout: float) -> bool:
        """Asks the narration to pause; True once no sentence of this process is being spoken."""
        self.requested.set()
        return self._idle.wait(timeout)


def _recorded_wav(path: Path) -> Optional[float]:
    """The duration of a whole WAV left by an interrupted attempt (renamed into place, not yet recorded)."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (OSError, EOFError, wave.Error):
        return None


def register_narration(tm: TaskManager, engine: EspeakEngine, store: MediaStore,
                       before_each: Callable[[], None] = lambda: None, pause: Optional[Pause] = None) -> None:
    """Registers the ``narrate`` and ``preview-voice`` handlers: this process becomes a worker of the store's queue.

    ``before_each`` runs as each narration starts (the app's media sweep).
    """

    def narrate(payload: Dict[str, Any]) -> None:
        task_id = current_task_id()
        assert task_id is not None, "a handler runs inside its task"
        if pause is not None:
            pause.running()
        try:
            before_each()
            segments = [Segment(item["segment_id"], item["text"], item.get("voice")) for item in payload["sentences"]]
            speak_narration(tm, engine, task_id, segments, payload["voice"], store,
                            f"{AUDIO_URL_PREFIX}/{task_id}", float(payload["pace_seconds"]), pause)
        finally:
            if pause is not None:
                pause.idle()

    tm.register_handler(HANDLER_NAME, narrate)
    tm.register_handler(PREVIEW_HANDLER_NAME, narrate)


def speak_narration(
    tm: TaskManager,
    engine: EspeakEngine,
    task_id: str,
    segments: List[Segment],
    voice: str,
    store: MediaStore,
    audio_url: str,
    pace_seconds: float,
    pause: Optional[Pause] = None,
) -> None:
    """Speaks every sentence to ``NNNN.wav`` in the task's folder, in order, skipping those already done.

    A sentence is done when the task's status has it as a completed segment
    or a segment error: a resumed attempt (``attempt`` > 1) goes on with the
    next sentence, and a WAV an interrupted attempt renamed into place but did
    not record yet is recorded as it is, not spoken again.

    While a sentence is synthesised, the progress names it
    (``current_segment_id``, ``current_text``); once it is playable (a
    completed segment whose ``audio_url`` is ``audio_url/NNNN.wav``) the
    progress counts it and names no sentence until the next one starts, so
    no status calls a playable sentence "being spoken". A sentence
    espeak-ng cannot speak (an unknown voice) is a segment error and the
    narration goes on; one whose audio cannot be stored (a full or read-only
    disk, a size limit) is a segment error and the narration stops, FAILED,
    its spoken sentences still playable. It stops between sentences when
    cancelled, and fails if no sentence could be spoken. There is no pause
    after the last sentence: a cancellation then would call a fully spoken
    narration cancelled.

    Before each sentence and during each pause it asks whether a task of a
    higher priority waits; if so it yields and returns, and its next attempt
    (same ``attempt``, ``yields`` + 1) goes on at the next sentence.
    """
    status = tm.get_task_status(task_id)
    assert status is not None, "a running task has a status"
    spoken_ids = {segment["segment_id"] for segment in status["completed_segments"]}
    done = spoken_ids | {error["segment_id"] for error in status["errors"]}
    total = len(segments)
    spoken = len(spoken_ids)
    folder = store.folder(task_id)
    if done:
        store.recount()  # the folder's bytes count towards this narration's limit, whoever wrote them
    for index, segment in enumerate(segments):
        if segment.segment_id in done:
            continue
        if tm.is_cancel_requested(task_id):
            return  # the library ends the task CANCELLED: its cancellation was requested
        if pause is not None and pause.requested.is_set():
            _hold_until_the_process_ends(pause)
        if tm.is_yield_requested(task_id):
            _give_way(tm, task_id, segment.segment_id)
            return  # back in the queue, ahead of the narrations behind it; resumed at this sentence
        file_name = f"{segment.segment_id:04d}.wav"
        assert WAV_NAME.match(file_name)
        left_over = _recorded_wav(folder / file_name) if status["attempt"] > 1 else None
        if left_over is not None:
            tm.update_task_progress(task_id, index + 1, total)
            tm.add_completed_segment(task_id, segment.segment_id, {
                "audio_url": f"{audio_url}/{file_name}", "duration": round(left_over, 3)})
            spoken += 1
            continue
        tm.update_task_progress(task_id, index, total, current_segment_id=segment.segment_id,
                                current_text=segment.text[:PROGRESS_TEXT_CHARS])
        try:
            _size, utterance = store.store(task_id, file_name, functools.partial(
                engine.synthesize, segment.text, voice=segment.voice or voice))
        # The progress stops naming the sentence before its outcome is recorded: a status
        # read in between must not call a playable (or failed) sentence "being spoken".
        except SynthesisError as error:
            tm.update_task_progress(task_id, index + 1, total)
            tm.add_error(task_id, segment.segment_id, str(error))
        except StorageError as error:
            tm.update_task_progress(task_id, index + 1, total)
            tm.add_error(task_id, segment.segment_id, str(error))
            raise NarrationStopped(f"sentence {segment.segment_id}: {error}; the narration stopped "
                                   f"with {spoken} of {total} sentences spoken") from None
        else:
            tm.update_task_progress(task_id, index + 1, total)
            tm.add_completed_segment(task_id, segment.segment_id, {
                "audio_url": f"{audio_url}/{file_name}", "duration": round(utterance.duration, 3)})
            spoken += 1
        if index + 1 < total:
            interrupted = _rest(tm, task_id, pace_seconds)
            if interrupted == CANCEL:
                return
            if interrupted == YIELD:
                _give_way(tm, task_id, segments[index + 1].segment_id)
                return
    tm.update_task_progress(task_id, total, total)
    if spoken == 0:
        raise RuntimeError(f"none of the {total} sentences could be spoken (see the segment errors)")
    if tm.is_cancel_requested(task_id):
        # The library ends it CANCELLED (it was asked to); the progress says nothing was lost.
        tm.update_task_progress(task_id, total, total, note=f"every sentence was spoken ({spoken} of {total} "
                                "with audio) before the cancellation took effect")


def _give_way(tm: TaskManager, task_id: str, resume_at: int) -> None:
    """Yields to a task of a higher priority; the checkpoint records the sentence the narration goes on at.

    The next attempt skips what the status has anyway; the checkpoint is for
    the reader (the page says where a waiting narration resumes).
    """
    tm.set_checkpoint(task_id, {"resume_at": resume_at})
    tm.yield_task(task_id)


def _hold_until_the_process_ends(pause: Pause) -> None:
    # Returning would finish the task; a durable store starts it again, at this sentence, once
    # this process has ended. The process is stopping: it ends without waiting for this thread.
    pause.idle()
    threading.Event().wait()
