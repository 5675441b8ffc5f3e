"""Finding, loading and calling the storyflow-tasks shared library through ctypes.

Two handles share the one loaded library. Calls that can block (the waits,
the change feed, shutdown, listing a large registry) go through
``ctypes.CDLL``, which releases the GIL for the duration of the call, so other
Python threads, the task runner among them, keep running. Calls that only take
a short-lived library lock go through ``ctypes.PyDLL``, which keeps the GIL:
that is safe because the library never calls back into Python, so it never
waits for the GIL while holding a lock of its own, and it saves a GIL hand-off
on every status read.

Every string the library allocates comes back as a raw pointer (``c_void_p``,
never ``c_char_p``, which would copy the text and lose the pointer), is copied
into a Python ``str`` and freed with ``sft_string_free`` at once.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, NoReturn, Optional, Tuple

from ._errors import InvalidArgumentError, LibraryLoadError, error_for_code

__all__ = ["LIBRARY_ENV", "Native", "native", "library_file_name", "candidate_paths", "SFT_OK", "SFT_WAIT_FOREVER"]

#: The environment variable naming the library file to load, ahead of every other place.
LIBRARY_ENV = "STORYFLOW_TASKS_LIB"

#: The library's SONAME, which C engines linked against it record (the major version is 0).
SONAME = "libstoryflow_tasks.so.0"

SFT_OK = 0
SFT_ERR_NOT_FOUND = 1
SFT_ERR_INVALID_ARGUMENT = 2
SFT_ERR_SHUT_DOWN = 5
SFT_ERR_INVALID_STATE = 6
SFT_ERR_TIMEOUT = 7
SFT_WAIT_FOREVER = -1
SFT_MAX_TIMEOUT_MS = 31_536_000_000

_c_char_pp = ctypes.POINTER(ctypes.c_void_p)
_c_bool_p = ctypes.POINTER(ctypes.c_bool)
_c_uint64_p = ctypes.POINTER(ctypes.c_uint64)

# name: (restype, argtypes, blocks). `blocks` picks the GIL-releasing handle.
_SIGNATURES = {
    "sft_runner_register": (ctypes.c_int32, [_c_uint64_p], False),
    "sft_submit_runner_task_with_options": (ctypes.c_int32, [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p, _c_char_pp], False),
    "sft_runner_finish": (ctypes.c_int32, [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_int32, ctypes.c_char_p], False),
    "sft_get_task_status": (ctypes.c_void_p, [ctypes.c_char_p], False),
    "sft_string_free": (None, [ctypes.c_void_p], False),
    "sft_update_task_progress": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_char_p], False),
    "sft_add_completed_segment_from_json": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_char_p], False),
    "sft_add_error_from_json": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_char_p], False),
    "sft_last_error_message": (ctypes.c_void_p, [], False),
    "sft_version": (ctypes.c_char_p, [], False),
    "sft_result_name": (ctypes.c_char_p, [ctypes.c_int32], False),
    "sft_cancel_task": (ctypes.c_int32, [ctypes.c_char_p], False),
    "sft_is_cancel_requested": (ctypes.c_int32, [ctypes.c_char_p, _c_bool_p], False),
    "sft_is_yield_requested": (ctypes.c_int32, [ctypes.c_char_p, _c_bool_p], False),
    "sft_yield_task": (ctypes.c_int32, [ctypes.c_char_p], False),
    "sft_last_event_seq": (ctypes.c_uint64, [], False),
    "sft_get_stats": (ctypes.c_void_p, [], False),
    "sft_configure": (ctypes.c_int32, [ctypes.c_char_p], False),
    "sft_get_config": (ctypes.c_void_p, [], False),
    "sft_wait_task": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_int64, _c_char_pp], True),
    "sft_wait_task_change": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int64, _c_char_pp], True),
    "sft_wait_events": (ctypes.c_int32, [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int64, _c_char_pp], True),
    "sft_list_tasks": (ctypes.c_int32, [ctypes.c_char_p, _c_char_pp], True),
    "sft_shutdown": (ctypes.c_int32, [ctypes.c_int64], True),
    "sft_runner_next": (ctypes.c_int32, [ctypes.c_uint64, ctypes.c_int64, _c_char_pp], True),
    "sft_runner_close": (ctypes.c_int32, [ctypes.c_uint64, ctypes.c_int64], True),
    "sft_runner_add_handler": (ctypes.c_int32, [ctypes.c_uint64, ctypes.c_char_p], True),
    # A durable store commits these before they return: a disk wait, with the GIL released.
    "sft_submit_named_with_options": (
        ctypes.c_int32,
        [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, _c_char_pp],
        True,
    ),
    "sft_set_checkpoint": (ctypes.c_int32, [ctypes.c_char_p, ctypes.c_char_p], True),
}


def library_file_name() -> str:
    """The shared library's file name on this platform."""
    if sys.platform == "darwin":
        return "libstoryflow_tasks.dylib"
    if sys.platform == "win32":
        return "storyflow_tasks.dll"
    return "libstoryflow_tasks.so"


def candidate_paths() -> List[Tuple[str, str]]:
    """The files the library is looked for in, in order, each as (description, path).

    These come after a copy already loaded in the process (a C engine linked
    against the library and loaded first), which always wins: one process, one
    manager. Then: ``STORYFLOW_TASKS_LIB`` when set (and then only it: a wrong explicit choice
    is an error, not a reason to load some other copy); otherwise the copy
    inside this package (what ``pip install`` puts there), then the
    repository's ``target/release`` (a source checkout after ``make build``).
    """
    explicit = os.environ.get(LIBRARY_ENV, "")
    if explicit:
        return [(f"${LIBRARY_ENV}", explicit)]
    package_dir = Path(__file__).resolve().parent
    repository = package_dir.parents[2]
    return [
        ("the copy inside the package", str(package_dir / library_file_name())),
        ("the repository's target/release", str(repository / "target" / "release" / library_file_name())),
    ]


def encode_text(value: object, what: str) -> bytes:
    """``value`` as NUL-terminated UTF-8 for the library; a clear error for anything it could not take."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        # Ids are C strings in every function: a NUL would cut the id short, so it is refused, never truncated.
        raise InvalidArgumentError(f"{what} contains a NUL character, which a task id cannot hold")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as error:
        unit = ord(value[error.start])
        raise InvalidArgumentError(f"{what} holds a lone surrogate (\\u{unit:04x}), which UTF-8 cannot carry") from None


class Native:
    """The loaded library with its signatures declared, and the string and error plumbing."""

    def __init__(self, name: str, path: Optional[str] = None) -> None:
        #: The file that was loaded.
        self.path = path or name
        releasing_gil = ctypes.CDLL(name)
        keeping_gil = ctypes.PyDLL(name)
        for name, (restype, argtypes, blocks) in _SIGNATURES.items():
            handle = releasing_gil if blocks else keeping_gil
            try:
                function = getattr(handle, name)
            except AttributeError:
                raise LibraryLoadError(f"{path} has no function {name}: it is not a compatible storyflow-tasks library") from None
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)

    if TYPE_CHECKING:
        # The sft_* functions are bound in __init__ from _SIGNATURES.
        def __getattr__(self, name: str) -> Any: ...

    # ----- strings and errors ------------------------------------------------------

    def take_string(self, pointer: Optional[int]) -> Optional[str]:
        """Copies a library-allocated string and frees it; ``None`` for NULL."""
        if not pointer:
            return None
        try:
            return ctypes.string_at(pointer).decode("utf-8")
        finally:
            self.sft_string_free(pointer)

    def take_json(self, pointer: Optional[int]) -> Any:
        """Parses and frees a library-allocated JSON string; ``None`` for NULL."""
        text = self.take_string(pointer)
        return None if text is None else json.loads(text)

    def last_error_message(self) -> Optional[str]:
        """The message of this thread's last failed call."""
        return self.take_string(self.sft_last_error_message())

    def result_name(self, code: int) -> str:
        """The name of a result code, e.g. ``SFT_ERR_NOT_FOUND``."""
        name = self.sft_result_name(code)
        return name.decode("ascii") if name else f"SFT_RESULT_{code}"

    def raise_for(self, code: int, action: str) -> NoReturn:
        """Raises the exception for a failed call; must run on the thread that made the call."""
        detail = self.last_error_message() or "no detail given"
        name = self.result_name(code)
        raise error_for_code(code, f"{action}: {detail} ({name})", name)

    def check(self, code: int, action: str) -> None:
        """Raises unless ``code`` is ``SFT_OK``."""
        if code != SFT_OK:
            self.raise_for(code, action)

    def call_with_out_string(self, function: Any, *args: Any) -> Tuple[int, Optional[str]]:
        """Calls a function whose last parameter is a ``char **`` out-string; returns (code, text)."""
        out = ctypes.c_void_p()
        code = function(*args, ctypes.byref(out))
        pointer = out.value
        if not pointer:
            return code, None
        try:
            return code, ctypes.string_at(pointer).decode("utf-8")
        finally:
            self.sft_string_free(pointer)

    def version(self) -> str:
        """The library's version string."""
        version: bytes = self.sft_version()
        return version.decode("ascii")


_loaded: Optional[Native] = None
_loading = threading.Lock()


def native() -> Native:
    """The process's loaded library, loading it on first use."""
    loaded = _loaded
    if loaded is not None:
        return loaded
    return _load()


def _load() -> Native:
    global _loaded
    with _loading:
        if _loaded is not None:
            return _loaded
        in_process = _already_in_process()
        if in_process is not None:
            _loaded = in_process
            return _loaded
        tried = []
        for description, path in candidate_paths():
            explicit = description.startswith("$")
            if not explicit and not os.path.exists(path):
                tried.append(f"  {description}: {path} (no such file)")
                continue
            try:
                _loaded = Native(path)
                return _loaded
            except OSError as error:
                tried.append(f"  {description}: {path} ({error})")
        places = "\n".join(tried)
        raise LibraryLoadError(
            f"cannot load the storyflow-tasks library {library_file_name()}; tried:\n{places}\n"
            f"Install the package with pip (it builds and bundles the library), build it with "
            f"`make build` in the repository, or set {LIBRARY_ENV} to the library file."
        )


def _already_in_process() -> Optional[Native]:
    """The copy of the library that other code of this process (a C engine) loaded already, if any.

    Loading a second copy from another file would make a second manager, with
    its own worker and registry, which nobody wants: the copy already there wins
    over every other place.
    """
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None or not sys.platform.startswith("linux"):
        return None
    try:
        ctypes.CDLL(SONAME, mode=no_load)  # finds a loaded library by its SONAME, never loads one
    except OSError:
        return None
    return Native(SONAME, _mapped_path() or SONAME)


def _mapped_path() -> Optional[str]:
    """The file of the loaded library, from the process's memory map."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith("libstoryflow_tasks.so"):
                    return path
    except OSError:
        pass
    return None


def _forget_loader_lock_after_fork() -> None:
    # Another thread may have held the lock at fork(); the child has no such thread.
    global _loading
    _loading = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loader_lock_after_fork)
