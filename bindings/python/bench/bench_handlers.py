"""The handlers the load measurement runs, in the API process or in a worker (``--import bench_handlers``)."""

from __future__ import annotations

import time
from typing import Any, Dict

from storyflow_tasks import current_task_id, get_task_manager

tm = get_task_manager()


@tm.handler("noop")
def noop(payload: Any) -> None:
    """The cheapest task: what is measured is the queue, the store and the runner."""


@tm.handler("narrate")
def narrate(payload: Dict[str, Any]) -> None:
    """A chapter of ``payload["sentences"]`` sentences, each a segment after ``payload["tts_seconds"]`` of synthesis.

    The synthesis is a sleep: native TTS releases the GIL, so what slows a
    sentence down is the Python between syntheses waiting for the GIL.
    """
    me = current_task_id()
    assert me is not None
    total = payload["sentences"]
    for n in range(total):
        time.sleep(payload["tts_seconds"])
        tm.add_completed_segment(me, n, {"audio_url": f"/media/{me}/{n}.wav", "duration": 1.5})
        tm.update_task_progress(me, n + 1, total)
