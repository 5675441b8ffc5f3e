"""storyflow_tasks: the StoryFlow background task manager, backed by the storyflow-tasks library.

A drop-in for the original StoryFlow ``tasks.py`` design, a pure-Python module::

    from storyflow_tasks import get_task_manager, TASK_COMPLETED

    tm = get_task_manager()
    task_id = tm.submit_task(lambda: render_chapter())
    tm.get_task_status(task_id)      # a fresh dict, or None for an unknown id

One worker runs tasks one at a time in submission order, shared with every C,
C++ and Node user of the library in the same process. Only the standard
library is needed at run time (ctypes).
"""

from __future__ import annotations

from ._errors import (
    DuplicateTaskIdError,
    InternalLibraryError,
    InvalidArgumentError,
    InvalidStateError,
    LibraryLoadError,
    QueueFullError,
    ShutDownError,
    StoryflowTasksError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from ._manager import FINISHED_STATES, Deadline, HandlerFunction, TaskFunction, TaskManager, current_task_id, get_task_manager
from ._native import LIBRARY_ENV, candidate_paths
from ._status import (
    TASK_CANCELLED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_PROCESSING,
    CompletedSegment,
    PriorityPending,
    SegmentError,
    SegmentId,
    TaskState,
    TaskStatus,
)


def library_path() -> str:
    """The shared library file this process loaded (loading it now if it was not yet)."""
    return TaskManager().library_path


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "unknown"
    try:
        return version("storyflow-tasks")
    except PackageNotFoundError:
        return "unknown"  # run from a source checkout, not installed


__version__ = _package_version()

__all__ = [
    "TaskManager",
    "get_task_manager",
    "current_task_id",
    "library_path",
    "candidate_paths",
    "LIBRARY_ENV",
    "TASK_PENDING",
    "TASK_PROCESSING",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_CANCELLED",
    "FINISHED_STATES",
    "TaskStatus",
    "TaskState",
    "CompletedSegment",
    "PriorityPending",
    "SegmentError",
    "SegmentId",
    "TaskFunction",
    "HandlerFunction",
    "Deadline",
    "StoryflowTasksError",
    "TaskNotFoundError",
    "InvalidArgumentError",
    "DuplicateTaskIdError",
    "QueueFullError",
    "ShutDownError",
    "InvalidStateError",
    "TaskTimeoutError",
    "InternalLibraryError",
    "LibraryLoadError",
    "__version__",
]
