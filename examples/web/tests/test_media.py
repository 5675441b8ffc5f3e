"""The disk the app writes is bounded, and a full, read-only or unwritable one is met with clean answers.

The full-disk test mounts a real 4 MB tmpfs (it needs root, as `make test-web` runs in CI);
everything else runs as any user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from helpers import Narrations, read_wav, sentences

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_process import WEB_DIR, running_app  # noqa: E402

#: A sentence of some six seconds: its WAV (about 260 KB) cannot fit in the little space left below.
LONG_SENTENCE = ("This sentence is long on purpose, so that its audio takes far more room on the disk than the "
                 "few bytes that are left there once the filler has taken nearly all of it.")


def _files(folder: Path) -> list:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def _check_served_audio(http: httpx.Client, status: dict) -> None:
    """Every completed segment's WAV is whole: its frames are all there and match its duration."""
    for segment in status["completed_segments"]:
        audio = http.get(segment["audio_url"])
        assert audio.status_code == 200, segment
        with read_wav(audio.content) as wav:
            frames = wav.readframes(wav.getnframes())
            assert len(frames) == 2 * wav.getnframes(), "a truncated WAV was served"
            assert segment["duration"] == pytest.approx(wav.getnframes() / wav.getframerate(), abs=0.001)


def test_a_narration_s_files_go_when_its_task_is_cleaned_up(tmp_path: Path) -> None:
    media = tmp_path / "media"
    # 400K of audio in all, 200K per narration: one finished narration is kept beside the running one.
    with running_app(media, ["--max-media", "400K", "--max-narration-audio", "200K"]) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        narrations = Narrations(http)
        first = narrations.start("first", "One.")
        done = narrations.follow(first["task_id"])[-1]
        assert done["status"] == "COMPLETED" and _files(media / first["task_id"]) == ["0001.wav"]
        second = narrations.follow(narrations.start("second", "Two.")["task_id"])[-1]
        assert second["status"] == "COMPLETED"
        assert http.get(first["status_url"]).status_code == 404, "the library keeps one finished narration"
        _check_served_audio(http, second)
        narrations.start("third", "Three.")  # files of cleaned-up narrations are deleted as one is admitted
        assert not (media / first["task_id"]).exists()
        assert http.get(done["completed_segments"][0]["audio_url"]).status_code == 404
        narrations.finish_all()


def test_a_narration_stops_at_its_audio_limit(tmp_path: Path) -> None:
    with running_app(tmp_path / "media", ["--max-media", "400K", "--max-narration-audio", "200K"]) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        narrations = Narrations(http)
        answer = narrations.start("long", sentences(20, "A rather longer sentence"))
        final = narrations.follow(answer["task_id"])[-1]
        assert final["status"] == "FAILED", final
        assert 1 <= len(final["completed_segments"]) < 20
        assert "would pass its limit of 0.2 MiB" in final["errors"][-1]["error"]
        assert "the narration stopped" in final["error"]
        _check_served_audio(http, final)
        written = sum(path.stat().st_size for path in (tmp_path / "media" / answer["task_id"]).iterdir())
        assert written <= 200 * 1024


def test_an_unwritable_media_directory_stops_the_start_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = subprocess.run([sys.executable, str(WEB_DIR / "app.py"), "--port", "0", "--media-dir",
                             str(blocker / "media")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not writable" in lines[0] and "--media-dir" in lines[0], result.stderr


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mounting a tmpfs needs root (make test-web runs as root in CI)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _free(path: Path) -> int:
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def _fill(path: Path, leave: int) -> None:
    """A file that takes all of the disk's free space but ``leave`` bytes."""
    size = _free(path.parent) - leave
    with open(path, "wb") as filler:
        filler.write(b"\0" * size)  # tmpfs: zeros take real pages
        filler.flush()
        os.fsync(filler.fileno())


@needs_root
def test_a_full_disk_gives_clean_errors_507_and_recovers(small_disk: Path) -> None:
    media = small_disk / "media"
    with running_app(media, ["--min-free", "64K"]) as url, httpx.Client(base_url=url, timeout=30) as http:
        narrations = Narrations(http)
        spoken = narrations.follow(narrations.start("before", "The disk has room.")["task_id"])[-1]
        assert spoken["status"] == "COMPLETED"

        filler = small_disk / "filler"
        _fill(filler, leave=100 * 1024)  # above --min-free: the narration is taken, and its WAV cannot fit
        answer = narrations.start("full", f"{LONG_SENTENCE} And another sentence after it.")
        failed = narrations.follow(answer["task_id"])[-1]
        assert failed["status"] == "FAILED", failed
        assert [error["segment_id"] for error in failed["errors"]] == [1]
        assert failed["errors"][0]["error"] == "cannot write its audio: No space left on device"
        assert failed["error"].startswith("NarrationStopped: sentence 1: cannot write its audio: "
                                          "No space left on device; the narration stopped")
        assert _files(media / answer["task_id"]) == [], "no file, whole or partial, is left behind"
        assert http.get(f"/media/audio/{answer['task_id']}/0001.wav").status_code == 404

        refused = http.post("/api/stories/while-full/narrate", json={"text": "No room."})
        assert refused.status_code == 507, refused.text
        assert "disk holding the media is full" in refused.json()["detail"]
        _check_served_audio(http, spoken)  # what was written before is whole and still served

        filler.unlink()
        recovered = narrations.follow(narrations.start("after", LONG_SENTENCE)["task_id"])[-1]
        assert recovered["status"] == "COMPLETED", recovered
        _check_served_audio(http, recovered)
        narrations.finish_all()


@needs_root
def test_a_read_only_media_directory(small_disk: Path) -> None:
    media = small_disk / "media"
    with running_app(media, ["--min-free", "64K"]) as url, httpx.Client(base_url=url, timeout=30) as http:
        narrations = Narrations(http)
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        try:
            refused = http.post("/api/stories/read-only/narrate", json={"text": "No."})
            assert refused.status_code == 507 and "read-only" in refused.json()["detail"], refused.text
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        assert narrations.follow(narrations.start("writable", "Yes.")["task_id"])[-1]["status"] == "COMPLETED"

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = subprocess.run([sys.executable, str(WEB_DIR / "app.py"), "--port", "0", "--media-dir", str(media)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"app.py: the media directory {media} is not writable: Read-only file system (pass --media-dir DIR)"]


def test_wave_module_reads_what_the_store_writes(tmp_path: Path) -> None:
    """The store's atomic write keeps the engine's WAV byte for byte (a unit check of media.py)."""
    sys.path.insert(0, str(WEB_DIR))
    from media import Limits, MediaStore

    store = MediaStore(tmp_path, Limits(max_bytes=10**6, max_narration_bytes=10**6, min_free_bytes=0))
    store.open()

    def write(path: Path) -> None:
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(b"\1\0" * 800)

    size, _ = store.store("story-0123456789ab", "0001.wav", write)
    assert _files(tmp_path / "story-0123456789ab") == ["0001.wav"]
    assert size == (tmp_path / "story-0123456789ab" / "0001.wav").stat().st_size == store.used_bytes
    store.delete("story-0123456789ab")
    assert not (tmp_path / "story-0123456789ab").exists() and store.used_bytes == 0
