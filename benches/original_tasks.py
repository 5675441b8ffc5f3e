"""The original StoryFlow `tasks.py` design: a pure-Python TaskManager exactly as it specifies it.

Written for the benchmarks as their baseline (``benches/python_compare.py``):
a double-checked-locking singleton over a ``ThreadPoolExecutor(max_workers=1)``,
a dict registry behind one ``threading.Lock``, and the cleanup of old tasks
triggered on every submission, as a scan of the whole registry. Nothing here
is used by the library or its bindings.
"""

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

TASK_PENDING = "PENDING"
TASK_PROCESSING = "PROCESSING"
TASK_COMPLETED = "COMPLETED"
TASK_FAILED = "FAILED"

logger = logging.getLogger(__name__)


class TaskManager:
    """The original design's singleton: one executor with one worker, one registry, one lock."""

    _instance = None
    _lock = threading.Lock()

    def __new__(cls):
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    instance = super().__new__(cls)
                    instance._init()
                    cls._instance = instance
        return cls._instance

    def _init(self):
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._tasks = {}
        self._tasks_lock = threading.Lock()
        self._cleanup_threshold = 3600

    def submit_task(self, task_fn, task_id=None):
        """Registers a PENDING task, queues its wrapper, triggers cleanup, returns the id."""
        if task_id is None:
            task_id = str(uuid.uuid4())
        with self._tasks_lock:
            self._tasks[task_id] = {
                "status": TASK_PENDING,
                "progress": {},
                "completed_segments": [],
                "errors": [],
                "created_at": time.time(),
                "completed_at": None,
            }

        def wrapper():
            with self._tasks_lock:
                self._tasks[task_id]["status"] = TASK_PROCESSING
            try:
                task_fn()
                with self._tasks_lock:
                    self._tasks[task_id]["status"] = TASK_COMPLETED
            except Exception as error:  # the original design: every exception fails the task, none escapes
                logger.exception("Task %s failed", task_id)
                with self._tasks_lock:
                    self._tasks[task_id]["status"] = TASK_FAILED
                    self._tasks[task_id]["error"] = str(error)
            finally:
                with self._tasks_lock:
                    self._tasks[task_id]["completed_at"] = time.time()

        self._executor.submit(wrapper)
        self._cleanup_old_tasks()
        return task_id

    def _cleanup_old_tasks(self):
        """Removes tasks finished longer ago than the threshold: a scan of every task."""
        now = time.time()
        with self._tasks_lock:
            expired = [
                task_id
                for task_id, task in self._tasks.items()
                if task["completed_at"] is not None and now - task["completed_at"] > self._cleanup_threshold
            ]
            for task_id in expired:
                del self._tasks[task_id]

    def get_task_status(self, task_id):
        """A shallow copy of the task's state, or None."""
        with self._tasks_lock:
            task = self._tasks.get(task_id)
            return dict(task) if task is not None else None

    def update_task_progress(self, task_id, current, total, **kwargs):
        with self._tasks_lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            percentage = int(current * 100 / total) if total > 0 else 0
            task["progress"] = {"current": current, "total": total, "percentage": max(0, min(100, percentage)), **kwargs}

    def add_completed_segment(self, task_id, segment_id, result):
        with self._tasks_lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            task["completed_segments"].append(
                {"segment_id": segment_id, "audio_url": result.get("audio_url"), "duration": result.get("duration")}
            )

    def add_error(self, task_id, segment_id, error_message):
        with self._tasks_lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            task["errors"].append({"segment_id": segment_id, "error": error_message})


def get_task_manager():
    """The original design's convenience accessor."""
    return TaskManager()
