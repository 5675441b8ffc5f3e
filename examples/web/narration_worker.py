"""The narration handler in a worker process of its own, so the API processes keep their GIL for requests:

    cd examples/web && python -m storyflow_tasks worker --store sqlite:/abs/tasks.db --import narration_worker

``app.py --worker-process`` (or ``--worker-processes N``) starts it so, over
any shared store (``--store redis://HOST:PORT`` too). Importing this module
registers the ``narrate`` and ``preview-voice`` handlers
(``narration.register_narration``) over the media directory, limits and
retention that app.py passes in the environment (``narration.MEDIA_DIR_ENV``
and the others; the defaults are the app's). Over a redis:// store, the
worker's machine identity (``STORYFLOW_TASKS_MACHINE``, else /etc/machine-id)
says which tasks may run at once: one per identity.
"""

from __future__ import annotations

import os
from pathlib import Path

from media import Limits, MediaStore
from narration import MEDIA_DIR_ENV, MEDIA_LIMITS_ENV, RETENTION_ENV, EspeakEngine, register_narration

from storyflow_tasks import get_task_manager

REPO_DIR = Path(__file__).resolve().parent.parent.parent


def _register() -> None:
    max_bytes, max_narration, min_free = (int(part) for part in os.environ.get(
        MEDIA_LIMITS_ENV, f"{1024 ** 3},{32 * 1024 ** 2},{64 * 1024 ** 2}").split(","))
    retained, keep_seconds = os.environ.get(RETENTION_ENV, "31,3600").split(",")
    tm = get_task_manager()
    tm.configure(max_retained_finished=int(retained), cleanup_threshold_secs=float(keep_seconds))
    store = MediaStore(Path(os.environ.get(MEDIA_DIR_ENV, REPO_DIR / "target" / "web" / "media")),
                       Limits(max_bytes=max_bytes, max_narration_bytes=max_narration, min_free_bytes=min_free))
    store.open()
    register_narration(tm, EspeakEngine(), store,
                       before_each=lambda: store.sweep(lambda task_id: tm.get_task_status(task_id) is not None))


_register()
