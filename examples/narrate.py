#!/usr/bin/env python3
"""Narrates a story with espeak-ng: one storyflow-tasks task per chapter, one WAV per sentence.

    python examples/narrate.py [--out DIR] [--report FILE] [--pace SECONDS] [--store STORE]
                               [--preview VOICE|none] [STORY]

Each chapter is a task of the named handler ``narrate-chapter``, which this
process registers; the tasks run one at a time on the library's worker
thread, and this (main) thread only polls their status to draw a live
progress bar per task, then prints a summary table. A sentence espeak-ng
cannot speak (a ``[voice:NAME]`` it does not have) becomes a segment error
and its chapter goes on.

While the second chapter is being spoken (from its first sentence on), the
main program asks for a **voice preview**: one sentence in ``--preview VOICE``
(default en+f3), submitted at priority 10 where the chapters have 0. The
chapter polls ``is_yield_requested`` between sentences and, asked, yields
(``yield_task``): it goes back to the head of the queue with its segments,
recording where it stopped in its checkpoint; the preview runs at once, then
the chapter resumes at its next sentence, before the chapters behind it. The
summary says how long the preview waited to start, beside how long a sentence
takes.

``--store sqlite:out/tasks.db`` keeps the tasks in that file: a run killed
midway (SIGKILL, a crash) is taken up by the next run with the same store,
each chapter at its next sentence, and chapters already finished are shown
as they ended (delete the file to start afresh).

Ctrl-C cancels: the pending chapters never run, the running one stops after
its current sentence (it polls ``is_cancel_requested`` between sentences).
Exit status: 0 every chapter completed (segment errors allowed), 1 a chapter
failed, 2 bad usage or story, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Optional

from espeak_engine import EspeakEngine, SynthesisError
from story import VOICE_NAME, Chapter, Sentence, StoryFormatError, load_story, slug

from storyflow_tasks import (TASK_CANCELLED, TASK_COMPLETED, TASK_FAILED, TASK_PENDING, TASK_PROCESSING,
                             DuplicateTaskIdError, InvalidStateError, StoryflowTasksError, current_task_id,
                             get_task_manager)

FINAL_STATES = (TASK_COMPLETED, TASK_FAILED, TASK_CANCELLED)
POLL_SECONDS = 0.1
NAME_WIDTH = 30  # the task id column, in the bars and the summary
WIDE_BAR, NARROW_BAR = 20, 10  # the bar's cells: the narrow one below WIDE_TERMINAL columns
WIDE_TERMINAL = 100
DEFAULT_STORY = Path(__file__).resolve().parent / "story.txt"
#: The named handler each chapter's task is submitted to.
HANDLER_NAME = "narrate-chapter"
#: The named handler of the voice preview: the same code, for a "chapter" of one sentence.
PREVIEW_HANDLER_NAME = "preview-voice"
#: The chapters' priority, and the preview's, above it: a chapter being spoken gives way to it.
CHAPTER_PRIORITY = 0
PREVIEW_PRIORITY = 10
DEFAULT_PREVIEW_VOICE = "en+f3"
PREVIEW_TEXT = "Hello, this is how the voice {voice} sounds."


def pace(tm, task_id: str, seconds: float) -> None:
    """Pauses after a sentence (``--pace``); a request to cancel or to yield cuts the pause short."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (tm.is_cancel_requested(task_id)
                                               or tm.is_yield_requested(task_id)):
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def chapter_payload(chapter: Chapter, directory: Path) -> dict:
    """What a chapter's task carries: its sentences and where their WAVs go, so any run can speak it."""
    return {"sentences": [{"text": sentence.text, "voice": sentence.voice} for sentence in chapter.sentences],
            "directory": str(directory)}


def register_chapter_handler(tm, engine: EspeakEngine, pace_seconds: float) -> None:
    """The handler one chapter's task runs on the worker thread: the chapter, sentence by sentence.

    Sentences the task already has (as a completed segment or an error) are
    skipped: in a durable store, a chapter interrupted by the end of its
    process goes on at its next sentence in the next run, and a chapter that
    yielded goes on there when it runs again. Before each sentence it asks
    whether a task of a higher priority waits (the preview); if so it records
    the sentence it stopped at as its checkpoint and yields. The pause is this
    run's ``--pace``, whichever run submitted the chapter. The preview's
    handler is the same function, registered under its own name.
    """

    def narrate_chapter(payload: dict) -> None:
        task_id = current_task_id()
        sentences = payload["sentences"]
        directory = Path(payload["directory"])
        directory.mkdir(parents=True, exist_ok=True)
        status = tm.get_task_status(task_id)
        done = ({segment["segment_id"] for segment in status["completed_segments"]}
                | {error["segment_id"] for error in status["errors"]})
        total = len(sentences)
        spoken = len(status["completed_segments"])
        for number, sentence in enumerate(sentences, start=1):
            if number in done:
                continue
            if tm.is_cancel_requested(task_id):
                return  # the task ends CANCELLED: its cancellation was requested
            if tm.is_yield_requested(task_id):
                tm.set_checkpoint(task_id, {"resume_at": number})
                tm.yield_task(task_id)
                return  # back at the head of the queue: the next run of this task starts here
            tm.update_task_progress(task_id, number - 1, total, current_segment_id=number)
            path = directory / f"{number:03d}.wav"
            try:
                utterance = engine.synthesize(sentence["text"], path, sentence["voice"])
            except SynthesisError as error:
                tm.add_error(task_id, number, str(error))
            else:
                tm.add_completed_segment(task_id, number, {"audio_url": str(path),
                                                           "duration": utterance.duration})
                spoken += 1
            pace(tm, task_id, pace_seconds)
        tm.update_task_progress(task_id, total, total)
        if spoken == 0:
            raise RuntimeError("no sentence of the chapter could be synthesised")

    tm.register_handler(HANDLER_NAME, narrate_chapter)
    tm.register_handler(PREVIEW_HANDLER_NAME, narrate_chapter)


class Preview:
    """The voice preview the demo asks for while a chapter is being spoken, as a listener would.

    A thread follows that chapter's status through the change feed and
    submits the preview as soon as the chapter is speaking a sentence, unless
    it finished or was cancelled first; ``submitted_at`` is when (epoch
    seconds, as the statuses' times).
    """

    def __init__(self, tm, voice: str, during: str, directory: Path) -> None:
        self.tm = tm
        self.voice = voice
        self.during = during
        self.task_id = f"preview-{slug(voice)}"
        self.chapter = Chapter(f"voice preview {voice}", [Sentence(PREVIEW_TEXT.format(voice=voice), voice)])
        self.directory = directory
        self.submitted_at: Optional[float] = None
        self.error: Optional[str] = None
        self.submitted = threading.Event()
        self._thread = threading.Thread(target=self._submit_during_the_chapter, name="preview", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _submit_during_the_chapter(self) -> None:
        try:
            for status in self.tm.watch(self.during):
                if status["status"] in FINAL_STATES or status.get("cancel_requested"):
                    return  # nothing to jump any more (a run that takes up an earlier one, or Ctrl-C)
                progress = status.get("progress") or {}
                speaking = progress.get("current_segment_id") is not None or progress.get("current")
                if status["status"] == TASK_PROCESSING and speaking:
                    break
            self.submitted_at = time.time()
            self.tm.submit_named(PREVIEW_HANDLER_NAME, chapter_payload(self.chapter, self.directory),
                                 task_id=self.task_id, priority=PREVIEW_PRIORITY)
        except DuplicateTaskIdError:
            self.submitted_at = None  # a durable store has it from an earlier run: it is shown as it is
        except StoryflowTasksError as error:
            self.error = str(error)
            return
        self.submitted.set()

    def summary(self, rows: list[tuple[str, dict, Chapter]], width: int) -> list[str]:
        """What the summary says about the preview: how soon it started, and how the chapter went on."""
        statuses = {task_id: status for task_id, status, _ in rows}
        preview, chapter = statuses.get(self.task_id), statuses.get(self.during)
        if self.error is not None:
            return ["", note(f"Voice preview: could not be submitted: {self.error}", width)]
        if preview is None or chapter is None or self.submitted_at is None:
            return []
        if preview.get("started_at") is None:
            return ["", note(f"Voice preview ({self.voice}, priority {PREVIEW_PRIORITY}): "
                             f"{preview['status']}, never started", width)]
        waited = preview["started_at"] - self.submitted_at
        spoken = [segment["segment_id"] for segment in chapter["completed_segments"]]
        spoken += [entry["segment_id"] for entry in chapter["errors"]]
        once = sorted(spoken) == list(range(1, len(spoken) + 1))
        walls = [status["completed_at"] - status["started_at"] for status in statuses.values()
                 if status.get("started_at") is not None and status.get("completed_at") is not None]
        sentences = sum(len(status["completed_segments"]) + len(status["errors"])
                        for status in statuses.values())
        per_sentence = sum(walls) / sentences if sentences else 0.0
        resume_at = (chapter.get("checkpoint") or {}).get("resume_at")
        if chapter.get("yields") and resume_at is not None:
            outcome = "every sentence spoken once" if once else "BUT a sentence was spoken twice or not at all"
            went_on = f"{self.during} gave way before its sentence {resume_at} and resumed there, {outcome}."
        else:
            went_on = f"{self.during} did not give way (it had no sentence left)."
        text = (f"Voice preview ({self.voice}, priority {PREVIEW_PRIORITY} over the chapters' "
                f"{CHAPTER_PRIORITY}), asked for while {self.during} was being spoken: it started "
                f"{waited:.3f} s later (a sentence takes {per_sentence:.3f} s here); {went_on}")
        return ["", textwrap.fill(text, width=width, subsequent_indent="  ", break_on_hyphens=False)]


def fit(text: str, width: int) -> str:
    """The text cut to ``width`` columns, ending in "..." when it was cut."""
    if len(text) <= width:
        return text
    return text[:max(0, width - 3)] + "..." if width > 3 else text[:width]


def bar_line(task_id: str, status: dict, chapter: Chapter, width: int,
             name_width: int = NAME_WIDTH) -> str:
    """One task's progress bar in at most ``width`` columns: the percentage, then the
    sentence being spoken (as much of it as fits) or the state."""
    progress = status.get("progress") or {}
    percentage = int(progress.get("percentage", 0))
    bar_width = WIDE_BAR if width >= WIDE_TERMINAL else NARROW_BAR
    filled = percentage * bar_width // 100
    line = (f"{task_id[:name_width]:<{name_width}} "
            f"[{'#' * filled}{'-' * (bar_width - filled)}] {percentage:3d}%  ")
    number = progress.get("current_segment_id")
    if status["status"] == TASK_PROCESSING and isinstance(number, int) \
            and 1 <= number <= len(chapter.sentences):
        head = f"sentence {number}/{len(chapter.sentences)}"
        stopping = "  (stopping)" if status.get("cancel_requested") else ""
        room = width - len(line) - len(head) - len(stopping) - 2
        text = chapter.sentences[number - 1].text
        # The sentence is what gives way to a narrow terminal; "(stopping)" stays visible.
        snippet = f": {fit(text, room)}" if room >= 8 else ""
        return fit(line + head + snippet + stopping, width)
    if status["status"] == TASK_PENDING and status.get("yields"):
        resume_at = (status.get("checkpoint") or {}).get("resume_at")
        where = f", resumes at sentence {resume_at}" if resume_at is not None else ""
        return fit(f"{line}PENDING (gave way to a higher priority{where})", width)
    return fit(line + status["status"], width)


def terminal_width() -> int:
    """The terminal's width in columns, read again at each redraw so that a resize is followed
    ($COLUMNS, else 80, where the output is not a terminal)."""
    return max(20, shutil.get_terminal_size().columns)


class Display:
    """Live bars redrawn in place on a terminal; elsewhere (a log, a test) a line per change.

    Each bar fits the terminal's width: a line that wrapped would break the redraw in place
    (the cursor goes back one line per bar), and the screen would fill with copies."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.live = stream.isatty()
        self.drawn_lines = 0
        self.shown: dict[str, tuple] = {}

    def show(self, rows: list[tuple[str, dict, Chapter]]) -> None:
        if self.live:
            # One column spare: a line ending in the last column leaves some terminals
            # waiting to wrap, and the next line's redraw would start one line low.
            width = terminal_width() - 1
            if self.drawn_lines:
                self.stream.write(f"\033[{self.drawn_lines}A")
            for task_id, status, chapter in rows:
                self.stream.write("\r\033[2K" + bar_line(task_id, status, chapter, width) + "\n")
            self.drawn_lines = len(rows)
        else:
            width = terminal_width()
            for task_id, status, chapter in rows:
                # The sentence too: a task may be seen PROCESSING before it names its first one.
                progress = status.get("progress") or {}
                state = (status["status"], progress.get("current"), progress.get("current_segment_id"),
                         status.get("cancel_requested"))
                if self.shown.get(task_id) != state:
                    self.shown[task_id] = state
                    self.stream.write(bar_line(task_id, status, chapter, width) + "\n")
        self.stream.flush()

    def interrupted(self) -> None:
        """A message broke the live block: draw it afresh below."""
        self.drawn_lines = 0


def summary(rows: list[tuple[str, dict, Chapter]], wall_seconds: float, out_dir: Path,
            width: int, preview: Optional[Preview] = None) -> str:
    """The closing table (task, status, segments, errors, audio and wall seconds; 78 columns)
    and its notes, each wrapped to ``width`` columns."""
    lines = [f"\n{'task':<30} {'status':<10} {'segments':>9} {'errors':>7} {'audio s':>9} "
             f"{'wall s':>8}"]
    spoken = sentences = errors = 0
    audio = 0.0
    unfinished, segment_errors = [], []
    for task_id, status, chapter in rows:
        segments = status["completed_segments"]
        seconds = sum(segment["duration"] for segment in segments)
        started, completed = status.get("started_at"), status.get("completed_at")
        run = f"{completed - started:.2f}" if started is not None and completed is not None else "-"
        lines.append(f"{task_id[:30]:<30} {status['status']:<10} "
                     f"{f'{len(segments)}/{len(chapter.sentences)}':>9} "
                     f"{len(status['errors']):>7} {seconds:>9.2f} {run:>8}")
        spoken += len(segments)
        sentences += len(chapter.sentences)
        errors += len(status["errors"])
        audio += seconds
        if status.get("error"):
            unfinished.append(note(f"{task_id}: {status['error']}", width))
        segment_errors.extend(note(f"{task_id} sentence {entry['segment_id']}: {entry['error']}",
                                   width) for entry in status["errors"])
    lines.append(f"{'total':<30} {'':<10} {f'{spoken}/{sentences}':>9} {errors:>7} "
                 f"{audio:>9.2f} {wall_seconds:>8.2f}")
    if unfinished:
        lines += ["", "Chapters not completed:", *unfinished]
    if segment_errors:
        lines += ["", "Segment errors (the chapter went on):", *segment_errors]
    if preview is not None:
        lines += preview.summary(rows, width)
    lines += ["", f"WAV files: {out_dir}/<chapter>/<sentence>.wav",
              f"Narrated {audio:.1f} s of audio in {wall_seconds:.2f} s of wall time."]
    return "\n".join(lines)


def note(text: str, width: int) -> str:
    """A note under the summary, indented and wrapped to ``width`` columns."""
    return textwrap.fill(text, width=width, initial_indent="  ", subsequent_indent="    ",
                         break_long_words=True, break_on_hyphens=False)


class Interrupts:
    """Counts Ctrl-C presses instead of raising KeyboardInterrupt mid-call; a second one quits."""

    def __init__(self):
        self.count = 0

    def __call__(self, _signal_number, _frame) -> None:
        self.count += 1
        if self.count > 1:
            os._exit(130)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("story", nargs="?", type=Path, default=DEFAULT_STORY,
                        help="the story file (default: examples/story.txt)")
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="where the WAV files go (default: out)")
    parser.add_argument("--report", type=Path,
                        help="write the final status of every task there, as JSON")
    parser.add_argument("--pace", type=float, default=0.0, metavar="SECONDS",
                        help="pause after each sentence (to watch, or to try Ctrl-C)")
    parser.add_argument("--store", default="memory", metavar="STORE",
                        help="where the tasks live: memory (default), or sqlite:PATH, which a later run "
                             "with the same file takes up where a killed one stopped")
    parser.add_argument("--preview", default=DEFAULT_PREVIEW_VOICE, metavar="VOICE",
                        help=f"the voice previewed, at a higher priority, while the second chapter is spoken "
                             f"(default {DEFAULT_PREVIEW_VOICE}; none: no preview)")
    args = parser.parse_args(argv)
    if not 0 <= args.pace <= 3600:
        parser.error(f"--pace takes seconds between 0 and 3600, got {args.pace}")
    if args.preview != "none" and not VOICE_NAME.fullmatch(args.preview):
        parser.error(f"--preview takes an espeak-ng voice name (letters, digits, _ + -) or none, "
                     f"not {args.preview!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        title, chapters = load_story(args.story)
    except StoryFormatError as error:
        print(f"narrate: {error}", file=sys.stderr)
        return 2
    try:
        engine = EspeakEngine()
    except SynthesisError as error:
        print(f"narrate: {error}", file=sys.stderr)
        return 1

    interrupts = Interrupts()
    signal.signal(signal.SIGINT, interrupts)
    task_ids = [f"{number:02d}-{slug(chapter.title)}" for number, chapter in
                enumerate(chapters, start=1)]
    print(fit(f'Narrating "{title or args.story}" ({len(chapters)} chapters) with libespeak-ng',
              terminal_width()))
    wall_start = time.monotonic()
    try:
        tm = get_task_manager()
        if args.store.startswith("sqlite:"):
            # The store's folder (out/, by default) may not exist yet on a first run.
            Path(args.store[len("sqlite:"):]).parent.mkdir(parents=True, exist_ok=True)
        tm.configure(store=args.store)
        register_chapter_handler(tm, engine, args.pace)
    except StoryflowTasksError as error:
        print(f"narrate: cannot use the task store {args.store}: {error}", file=sys.stderr)
        return 1
    preview = None
    if args.preview != "none":
        during = task_ids[1 if len(task_ids) > 1 else 0]
        preview = Preview(tm, args.preview, during, args.out / f"preview-{slug(args.preview)}")
    try:
        for task_id, chapter in zip(task_ids, chapters):
            try:
                tm.submit_named(HANDLER_NAME, chapter_payload(chapter, args.out / task_id), task_id=task_id,
                                priority=CHAPTER_PRIORITY)
            except DuplicateTaskIdError:
                pass  # a durable store has it from an earlier run: it is followed as it is
    except StoryflowTasksError as error:
        print(f"narrate: cannot submit the chapters: {error}", file=sys.stderr)
        return 1
    if preview is not None:
        preview.start()  # its first status says where the chapter is: nothing is missed

    display = Display()
    cancelled = False
    while True:
        tasks = list(zip(task_ids, chapters))
        if preview is not None and preview.submitted.is_set():
            tasks.append((preview.task_id, preview.chapter))
        rows = [(task_id, tm.get_task_status(task_id), chapter) for task_id, chapter in tasks]
        if interrupts.count:
            if not cancelled:
                print("\nCtrl-C: cancelling the pending chapters, stopping the running one\n"
                      "(Ctrl-C again to quit at once)", file=sys.stderr)
                display.interrupted()
            cancelled = True
            # Again at each round: a preview submitted just before the Ctrl-C is cancelled too.
            for task_id, status, _ in rows:
                if status["status"] not in FINAL_STATES and not status["cancel_requested"]:
                    try:
                        tm.cancel(task_id)
                    except InvalidStateError:
                        pass  # it finished meanwhile: nothing to cancel
        display.show(rows)
        if all(status["status"] in FINAL_STATES for _, status, _ in rows):
            break
        time.sleep(POLL_SECONDS)
    wall_seconds = time.monotonic() - wall_start

    print(summary(rows, wall_seconds, args.out, terminal_width(), preview))
    exit_code = 130 if interrupts.count else 0
    if exit_code == 0 and any(status["status"] == TASK_FAILED for _, status, _ in rows):
        exit_code = 1
    if args.report:
        args.report.write_text(json.dumps([status for _, status, _ in rows], indent=1))
    tm.shutdown()
    engine.close()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
