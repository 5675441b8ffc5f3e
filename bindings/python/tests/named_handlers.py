"""Named handlers that worker processes of the tests import: ``python -m storyflow_tasks worker --import named_handlers``.

Each handler leaves evidence in files of the directory its payload names,
written with plain appends and ``O_EXCL`` creations, so that what a test
asserts was measured by the handlers themselves in the process that ran them,
and survives that process being killed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Set

from storyflow_tasks import current_task_id, get_task_manager

tm = get_task_manager()

if os.environ.get("NAMED_HANDLERS_MAX_ATTEMPTS"):
    # Before the first handler registers, which opens the store and freezes the configuration.
    tm.configure(max_attempts=int(os.environ["NAMED_HANDLERS_MAX_ATTEMPTS"]))


def _append(path: str, line: str) -> None:
    """One line, in one write(2) to a file opened O_APPEND: whole even if the process dies right after."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, (line + "\n").encode())
    finally:
        os.close(descriptor)


def _me() -> str:
    task_id = current_task_id()
    assert task_id is not None
    return task_id


@tm.handler("where")
def where(payload: Dict[str, Any]) -> None:
    """Says which process ran it, and echoes the payload as progress extras."""
    tm.update_task_progress(_me(), 1, 1, pid=os.getpid(), echo=payload)


@tm.handler("fail")
def fail(payload: Dict[str, Any]) -> None:
    raise RuntimeError(payload["message"])


@tm.handler("steps")
def steps(payload: Dict[str, Any]) -> None:
    """Reports ``payload["count"]`` segments, each a change a watcher in another process sees."""
    me = _me()
    for n in range(payload["count"]):
        tm.add_completed_segment(me, n, {"audio_url": f"/media/{me}/{n}.wav", "duration": 0.5})


@tm.handler("exclusive")
def exclusive(payload: Dict[str, Any]) -> None:
    """Holds a marker file created with O_EXCL while it runs: a second task running anywhere at once cannot create it."""
    marker = os.path.join(payload["dir"], "running")
    try:
        descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        _append(os.path.join(payload["dir"], "overlaps"), f"{_me()} {os.getpid()}")
        raise RuntimeError("another task was running at the same time") from None
    try:
        os.write(descriptor, f"{_me()} {os.getpid()}".encode())
        _append(os.path.join(payload["dir"], "ran"), f"{_me()} {os.getpid()}")
        # Long enough for another worker to try to start a task meanwhile, if it could.
        time.sleep(payload.get("hold", 0.02))
    finally:
        os.close(descriptor)
        os.unlink(marker)


@tm.handler("narrate")
def narrate(payload: Dict[str, Any]) -> None:
    """A chapter: one segment per sentence, skipping those a killed attempt already recorded.

    A sentence counts as done when it is in the status's ``completed_segments``
    or below the checkpoint; each acknowledged append (``True`` returned) is
    logged to ``acked`` right after, so a test can check that every one
    survived however the process was killed.
    """
    me = _me()
    status = tm.get_task_status(me)
    assert status is not None
    done: Set[str] = {str(segment["segment_id"]) for segment in status["completed_segments"]}
    checkpoint = status["checkpoint"] or {"next": 0}
    chapter = payload["chapter"]
    directory = payload["dir"]
    _append(os.path.join(directory, "attempts"), f"{me} {status['attempt']} {os.getpid()}")
    for sentence in range(payload["sentences"]):
        segment_id = f"{chapter}-{sentence}"
        if segment_id in done or sentence < checkpoint["next"]:
            continue
        audio = os.path.join(directory, f"{segment_id}.wav")
        with open(audio, "wb") as wav:  # the synthesis stands in for TTS: a file per sentence
            wav.write(b"RIFF" + segment_id.encode())
        time.sleep(payload.get("sentence_seconds", 0.002))
        if tm.add_completed_segment(me, segment_id, {"audio_url": audio, "duration": 1.0}):
            _append(os.path.join(directory, "acked"), segment_id)
        tm.set_checkpoint(me, {"next": sentence + 1})
        tm.update_task_progress(me, sentence + 1, payload["sentences"])
    _append(os.path.join(directory, "returned"), me)


@tm.handler("patient")
def patient(payload: Dict[str, Any]) -> None:
    """A chapter that polls ``is_yield_requested`` between sentences and yields when a task of a higher priority waits.

    On its first run it stops at sentence ``pause_at``, says so in ``paused``
    and polls until it is asked to yield, so that the test can submit the
    urgent task at that moment. Each run appends to ``runs`` what it started
    from and which handlers' tasks had completed by then.
    """
    me = _me()
    status = tm.get_task_status(me)
    assert status is not None
    directory = payload["dir"]
    start = (status["checkpoint"] or {"next": 0})["next"]
    completed = sorted(str(other["handler"]) for other in tm.list_tasks("COMPLETED"))
    run = {"from": start, "yields": status["yields"], "attempt": status["attempt"], "completed": completed}
    _append(os.path.join(directory, "runs"), json.dumps(run))
    for sentence in range(start, payload["sentences"]):
        if sentence == payload["pause_at"] and status["yields"] == 0:
            _append(os.path.join(directory, "paused"), me)
            give_up = time.monotonic() + 60
            while not tm.is_yield_requested():
                if time.monotonic() > give_up:
                    raise TimeoutError("never asked to yield")
                time.sleep(0.005)
        if tm.is_yield_requested():
            _append(os.path.join(directory, "runs"), json.dumps({"yielded_before": sentence}))
            tm.yield_task()
            return
        tm.add_completed_segment(me, sentence, {"audio_url": f"/media/{me}/{sentence}.wav", "duration": 0.2})
        tm.set_checkpoint(me, {"next": sentence + 1})
