"""Where the narrations' WAV files live, and the bounds on them.

Each narration has its own folder, ``media_dir/<task_id>/``, with one
``NNNN.wav`` per sentence. A file is written under a temporary name in that
folder, flushed to the disk (fsync) and renamed into place, so a reader only
ever finds whole files: a failed write (a full or read-only disk) leaves
nothing behind. The store counts the bytes it holds so that the total stays
under ``max_bytes``, and deletes a narration's folder when its task leaves the
library's registry: a file is kept exactly as long as a status names it.

The directory may be shared by several processes over one durable task store
(``sqlite:``): a narration may be spoken by any of them, and read by all. So
the byte count is what the disk holds, counted again (``recount``) whenever
the app sweeps, rather than what this process wrote.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

Written = TypeVar("Written")

#: The names the store writes; nothing else in the media directory is ever deleted.
WAV_NAME = re.compile(r"^[0-9]{4}\.wav$")
TEMPORARY_NAME = re.compile(r"^\.[0-9]{4}\.wav\.[0-9a-f]{16}\.partial$")
NARRATION_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}-[0-9a-f]{12}$")

#: After a write failed for lack of space, the free space must grow by at least this much
#: (or by min_free_bytes if larger) before a new narration is taken.
RECOVERY_BYTES = 1024 * 1024

#: The errors that mean "the storage cannot take the file", as opposed to a bug.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


class StorageError(Exception):
    """A WAV could not be stored: the disk is full or read-only, or a limit is reached."""


class UnwritableMediaDir(Exception):
    """The media directory cannot be used at all (raised at startup)."""


@dataclass(frozen=True)
class Limits:
    """The bounds on the audio kept on disk."""

    #: All narrations' WAVs together; past it, new narrations get 507.
    max_bytes: int
    #: One narration's WAVs; past it, the narration stops (FAILED).
    max_narration_bytes: int
    #: New narrations get 507 while the disk holding the media has less free space than this.
    min_free_bytes: int


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB"


class MediaStore:
    """The media directory: atomic writes, the byte count, and deleting what no status names any more."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self._lock = threading.Lock()
        self._used = 0
        #: task id -> bytes its folder holds
        self._narrations: Dict[str, int] = {}
        #: Set when a write failed for lack of space: the free bytes needed before admitting again.
        #: Free space above min_free_bytes alone does not say a WAV fits: the one that failed did not.
        self._needed_free: Optional[int] = None

    # ----- startup ------------------------------------------------------------------

    def open(self) -> None:
        """Makes the directory and checks that a file can be written there.

        Raises UnwritableMediaDir with a one-line reason. What an earlier run
        left is counted by the first ``recount`` and deleted by the app's first
        sweep if no status names it any more.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            with open(probe, "wb") as handle:
                handle.write(b"ok")
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as error:
            raise UnwritableMediaDir(f"the media directory {self.root} is not writable: "
                                     f"{error.strerror or error}") from None
        self.recount()

    def narration_folders(self) -> List[str]:
        """The task ids that have a folder here (only names this store makes)."""
        try:
            return sorted(entry.name for entry in os.scandir(self.root)
                          if NARRATION_DIR.match(entry.name) and entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def recount(self) -> None:
        """Counts the bytes every narration folder holds on the disk now, whichever process wrote them."""
        counts = {task_id: _folder_bytes(self.folder(task_id)) for task_id in self.narration_folders()}
        with self._lock:
            self._narrations = counts
            self._used = sum(counts.values())

    # ----- admission ----------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    def refusal(self) -> Optional[str]:
        """Why a new narration cannot be stored now (the 507 answer), or None."""
        used = self.used_bytes
        if used >= self.limits.max_bytes:
            return (f"the media storage is full: the narrations kept hold {_megabytes(used)} of audio, "
                    f"the limit is {_megabytes(self.limits.max_bytes)}; finished narrations are deleted "
                    f"as they are cleaned up, try again later")
        try:
            disk = os.statvfs(self.root)
        except OSError as error:
            return f"the media directory cannot be read: {error.strerror}"
        if disk.f_flag & os.ST_RDONLY:
            return "the media directory is on a read-only file system"
        if not os.access(self.root, os.W_OK):
            return "the media directory is not writable"
        free = disk.f_bavail * disk.f_frsize
        with self._lock:
            needed = max(self.limits.min_free_bytes, self._needed_free or 0)
            if free >= needed:
                self._needed_free = None  # space is back
        if free < needed:
            return (f"the disk holding the media is full: {_megabytes(free)} free, "
                    f"{_megabytes(needed)} needed; try again later")
        return None

    def _note_out_of_space(self) -> None:
        try:
            disk = os.statvfs(self.root)
        except OSError:
            return
        free = disk.f_bavail * disk.f_frsize
        with self._lock:
            self._needed_free = free + max(self.limits.min_free_bytes, RECOVERY_BYTES)

    # ----- writing --------------------------------------------------------------------

    def folder(self, task_id: str) -> Path:
        return self.root / task_id

    def store(self, task_id: str, name: str, write: Callable[[Path], Written]) -> Tuple[int, Written]:
        """Writes one WAV atomically: ``write(temporary_path)``, fsync, rename to ``name``.

        Returns the file's size and what ``write`` returned.

        Raises StorageError (the temporary file removed) when the disk refuses
        it or a limit would be passed; other errors of ``write`` propagate,
        also with the temporary file removed.
        """
        folder = self.folder(task_id)
        temporary = folder / f".{name}.{os.urandom(8).hex()}.partial"
        try:
            folder.mkdir(exist_ok=True)
            written = write(temporary)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            size = temporary.stat().st_size
            # Reserved and renamed under one lock: a recount in between would count the file twice or not at all.
            with self._lock:
                self._reserve(task_id, size)
                try:
                    os.replace(temporary, folder / name)
                except BaseException:
                    self._release(task_id, size)
                    raise
                self._needed_free = None  # a whole WAV fitted
            _fsync_directory(folder)
            return size, written
        except OSError as error:
            _remove_quietly(temporary)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                self._note_out_of_space()
            if error.errno in STORAGE_ERRNOS:
                raise StorageError(f"cannot write its audio: {error.strerror}") from None
            raise
        except BaseException:
            _remove_quietly(temporary)
            raise

    def _reserve(self, task_id: str, size: int) -> None:
        """Counts ``size`` more bytes for the narration, or raises StorageError; the caller holds the lock."""
        # A file replaced in place (a resumed narration speaking its sentence again) is counted anew:
        # its old size leaves the count at the next recount.
        narration = self._narrations.get(task_id, 0)
        if narration + size > self.limits.max_narration_bytes:
            raise StorageError(f"the narration's audio would pass its limit of "
                               f"{_megabytes(self.limits.max_narration_bytes)}")
        if self._used + size > self.limits.max_bytes:
            raise StorageError(f"the media storage is full: {_megabytes(self._used)} of "
                               f"{_megabytes(self.limits.max_bytes)} in use")
        self._narrations[task_id] = narration + size
        self._used += size

    def _release(self, task_id: str, size: int) -> None:
        """Takes back a reservation whose file never arrived; the caller holds the lock."""
        self._narrations[task_id] = self._narrations.get(task_id, 0) - size
        self._used -= size

    # ----- deleting ---------------------------------------------------------------------

    def sweep(self, is_known: Callable[[str], bool]) -> None:
        """Deletes the folders of the narrations ``is_known`` no longer knows, then counts what is left."""
        for task_id in self.narration_folders():
            if not is_known(task_id):
                self.delete(task_id)
        self.recount()

    def delete(self, task_id: str) -> None:
        """Deletes a narration's files (its task has left the registry) and forgets its bytes."""
        with self._lock:
            self._used -= self._narrations.pop(task_id, 0)
        self._delete_folder(self.folder(task_id))

    @staticmethod
    def _delete_folder(folder: Path) -> None:
        # Only the names this store writes: a media directory pointed at a folder
        # that holds anything else never loses it.
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            if WAV_NAME.match(entry.name) or TEMPORARY_NAME.match(entry.name):
                _remove_quietly(entry)
        try:
            folder.rmdir()
        except OSError:
            pass  # something else is in it: left alone


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(entry.stat().st_size for entry in os.scandir(folder) if WAV_NAME.match(entry.name))
    except FileNotFoundError:
        return 0  # deleted meanwhile by another process's sweep


def _fsync_directory(folder: Path) -> None:
    # The rename is durable only once the directory entry is on the disk too.
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
