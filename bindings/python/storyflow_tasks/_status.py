"""The types of what the library returns: a task's status in the wire format, and its parts.

These describe the JSON that every binding reads (the same keys from C, Python
and Node), so a type checker catches a misspelt key or a wrong type where a
status is used. They are ``TypedDict``: at run time a status is a plain ``dict``.
"""

from __future__ import annotations

from typing import Any, Dict, Final, List, Literal, Optional, TypedDict, Union

__all__ = [
    "TASK_PENDING",
    "TASK_PROCESSING",
    "TASK_COMPLETED",
    "TASK_FAILED",
    "TASK_CANCELLED",
    "TaskState",
    "SegmentId",
    "CompletedSegment",
    "SegmentError",
    "TaskStatus",
    "PriorityPending",
]

TASK_PENDING: Final = "PENDING"
TASK_PROCESSING: Final = "PROCESSING"
TASK_COMPLETED: Final = "COMPLETED"
TASK_FAILED: Final = "FAILED"
TASK_CANCELLED: Final = "CANCELLED"

#: The five states of a task.
TaskState = Literal["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]

#: A segment id keeps the type it was given: an ``int`` comes back an ``int``, a ``str`` a ``str``.
SegmentId = Union[int, str]


class CompletedSegment(TypedDict):
    """One entry of ``completed_segments``."""

    segment_id: SegmentId
    audio_url: str
    duration: float


class SegmentError(TypedDict):
    """One entry of ``errors``: a segment that failed."""

    segment_id: SegmentId
    error: str


class TaskStatus(TypedDict):
    """A task's status as ``get_task_status``, ``wait`` and ``watch`` return it (a fresh ``dict``).

    Every key of the wire format is always there, in every store.
    """

    task_id: str
    status: TaskState
    #: ``{}`` until the first update; then ``current``, ``total``, ``percentage`` and the extras given.
    progress: Dict[str, Any]
    completed_segments: List[CompletedSegment]
    errors: List[SegmentError]
    created_at: float
    started_at: Optional[float]
    completed_at: Optional[float]
    error: Optional[str]
    revision: int
    queue_position: Optional[int]
    cancel_requested: bool
    #: The handler's name for a named task, ``None`` for a function task.
    handler: Optional[str]
    #: 0 before the first start, then 1, 2, ... (one more after each interruption).
    attempt: int
    #: The last value given to ``set_checkpoint``, or ``None``.
    checkpoint: Any
    #: Higher runs first; FIFO within one priority (0 unless given at submit).
    priority: int
    #: Unix epoch seconds, or ``None`` for no deadline.
    deadline: Optional[float]
    #: Whether the task should yield now (``is_yield_requested``); ``False`` unless ``PROCESSING``.
    yield_requested: bool
    #: How often the task yielded.
    yields: int


class PriorityPending(TypedDict):
    """One entry of ``stats()["pending_by_priority"]``: how many tasks of one priority are pending."""

    priority: int
    pending: int
