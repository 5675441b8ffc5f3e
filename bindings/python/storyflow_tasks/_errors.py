"""The exceptions of storyflow_tasks: one class per C result code.

Each class also derives from the built-in exception a Python caller would
naturally catch (``ValueError`` for bad input and duplicate ids, ``LookupError``
for unknown ids, ``RuntimeError`` for a manager that cannot take the call now,
``TimeoutError`` for waits that ran out), so code written against the plain
exceptions of the original StoryFlow ``tasks.py`` design keeps working.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class StoryflowTasksError(Exception):
    """Base class of every error this package raises.

    ``code`` is the C result code (``SFT_ERR_*``) when the error came from the
    library, and ``code_name`` its name; both are ``None`` for errors found in
    Python before the library was called.
    """

    code: Optional[int] = None
    code_name: Optional[str] = None

    def __init__(self, message: str, *, code: Optional[int] = None, code_name: Optional[str] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if code_name is not None:
            self.code_name = code_name


class TaskNotFoundError(StoryflowTasksError, LookupError):
    """No task with that id is in the registry (``SFT_ERR_NOT_FOUND``)."""

    code, code_name = 1, "SFT_ERR_NOT_FOUND"


class InvalidArgumentError(StoryflowTasksError, ValueError):
    """A value the library refuses: malformed, out of range or over a limit (``SFT_ERR_INVALID_ARGUMENT``)."""

    code, code_name = 2, "SFT_ERR_INVALID_ARGUMENT"


class DuplicateTaskIdError(StoryflowTasksError, ValueError):
    """A task with that id is already in the registry (``SFT_ERR_DUPLICATE_ID``)."""

    code, code_name = 3, "SFT_ERR_DUPLICATE_ID"


class QueueFullError(StoryflowTasksError, RuntimeError):
    """The queue already holds ``max_pending_tasks`` tasks (``SFT_ERR_QUEUE_FULL``)."""

    code, code_name = 4, "SFT_ERR_QUEUE_FULL"


class ShutDownError(StoryflowTasksError, RuntimeError):
    """The manager was shut down, or the interpreter is exiting: no new tasks (``SFT_ERR_SHUT_DOWN``)."""

    code, code_name = 5, "SFT_ERR_SHUT_DOWN"


class InvalidStateError(StoryflowTasksError, RuntimeError):
    """The call does not fit the task's or the manager's state (``SFT_ERR_INVALID_STATE``)."""

    code, code_name = 6, "SFT_ERR_INVALID_STATE"


class TaskTimeoutError(StoryflowTasksError, TimeoutError):
    """A wait ended before the awaited change (``SFT_ERR_TIMEOUT``)."""

    code, code_name = 7, "SFT_ERR_TIMEOUT"


class InternalLibraryError(StoryflowTasksError, RuntimeError):
    """The library caught a bug of its own; the manager keeps working (``SFT_ERR_INTERNAL``)."""

    code, code_name = 8, "SFT_ERR_INTERNAL"


class LibraryLoadError(StoryflowTasksError, OSError):
    """The shared library could not be found or loaded; the message names every place tried."""


_BY_CODE: Dict[int, Type[StoryflowTasksError]] = {
    cls.code: cls
    for cls in (
        TaskNotFoundError,
        InvalidArgumentError,
        DuplicateTaskIdError,
        QueueFullError,
        ShutDownError,
        InvalidStateError,
        TaskTimeoutError,
        InternalLibraryError,
    )
    if cls.code is not None
}


def error_for_code(code: int, message: str, code_name: Optional[str] = None) -> StoryflowTasksError:
    """The exception for a C result code; an unknown code gives the base class carrying it."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return StoryflowTasksError(message, code=code, code_name=code_name or f"SFT_RESULT_{code}")
    return cls(message)
