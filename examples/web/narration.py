"""What the web app narrates and how: pasted text to sentences, and the task that speaks them.

The text is cut into sentences by the demo's story parser (``examples/story.py``),
each sentence is one segment, and one storyflow-tasks task speaks a whole
narration with the demo's espeak-ng engine (``examples/espeak_engine.py``),
one WAV file per sentence. The task runs on the library's single worker, so
the engine (libespeak-ng is not thread-safe) never runs twice at once.
Each WAV goes through the media store (``media.py``): written atomically,
within the size limits.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

EXAMPLES_DIR = Path(__file__).resolve().parent.parent
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))  # the demo's engine and story parser live one level up

from espeak_engine import DEFAULT_VOICE, EspeakEngine, SynthesisError  # noqa: E402
from media import MediaStore, StorageError  # noqa: E402
from story import VOICE_NAME, StoryFormatError, parse_story, split_sentences  # noqa: E402

from storyflow_tasks import TaskManager, TaskTimeoutError  # noqa: E402

__all__ = [
    "DEFAULT_VOICE",
    "EspeakEngine",
    "NarrationStopped",
    "Segment",
    "StoryFormatError",
    "SynthesisError",
    "VOICE_NAME",
    "narration_task",
    "segments_of",
]

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


def _rest(tm: TaskManager, task_id: str, seconds: float) -> bool:
    """Waits ``seconds`` after a sentence; True as soon as cancellation is requested.

    The wait long-polls the task's own status (``watch``), so a cancel
    request ends it at once instead of after the next sleep slice.
    """
    if seconds <= 0:
        return False  # the next sentence checks for cancellation first anyway
    try:
        for status in tm.watch(task_id, timeout=seconds):
            if status.get("cancel_requested"):
                return True
    except TaskTimeoutError:
        pass  # nothing changed for `seconds`: the pause is over
    return tm.is_cancel_requested(task_id)


class NarrationStopped(Exception):
    """The narration cannot go on: its audio cannot be stored (the status's ``error`` says why)."""


def narration_task(
    tm: TaskManager,
    engine: EspeakEngine,
    task_id: str,
    segments: List[Segment],
    voice: str,
    store: MediaStore,
    audio_url: str,
    pace_seconds: float,
) -> Callable[[], None]:
    """The function one task runs on the worker: every sentence to ``NNNN.wav`` in its folder, in order.

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
    """

    def narrate() -> None:
        total = len(segments)
        spoken = 0
        for index, segment in enumerate(segments):
            if tm.is_cancel_requested(task_id):
                return  # the library ends the task CANCELLED: its cancellation was requested
            tm.update_task_progress(task_id, index, total, current_segment_id=segment.segment_id,
                                    current_text=segment.text[:PROGRESS_TEXT_CHARS])
            file_name = f"{segment.segment_id:04d}.wav"
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
            if index + 1 < total and _rest(tm, task_id, pace_seconds):
                return
        if spoken == 0:
            raise RuntimeError(f"none of the {total} sentences could be spoken (see the segment errors)")
        if tm.is_cancel_requested(task_id):
            # The library ends it CANCELLED (it was asked to); the progress says nothing was lost.
            tm.update_task_progress(task_id, total, total, note=f"every sentence was spoken ({spoken} of {total} "
                                    "with audio) before the cancellation took effect")

    return narrate
