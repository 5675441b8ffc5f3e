"""The demo narrators, Python (examples/narrate.py) and C (examples/c/narrate.c), run for real.

Each narrates tests/two_chapters.txt with libespeak-ng through storyflow-tasks;
the tests read the WAV files back and check them against the status every task
reported: real audio, one file per sentence, a segment error for the sentence
that asks for a voice espeak-ng does not have.
"""

from __future__ import annotations

import array
import json
import functools
import math
import shutil
import signal
import subprocess
import sys
import threading
import wave
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1]
TWO_CHAPTERS = EXAMPLES / "tests" / "two_chapters.txt"
RUN_TIMEOUT = 300  # a safety net against a hang, not a timing assertion

# What two_chapters.txt holds, counted by hand (the format: examples/story.py).
CHAPTERS = {
    "01-the-short-one": {"sentences": 3, "bad": set()},
    "02-the-broken-voice": {"sentences": 4, "bad": {3}},
}
LONG_AND_SHORT = ("01-the-short-one", 2, 3)  # sentence 2 says far more than sentence 3


@functools.lru_cache(maxsize=None)
def built_c_narrator() -> str:
    """Builds examples/c/narrate.c once per session; skips where it cannot be built."""
    build = subprocess.run([str(EXAMPLES / "c" / "build.sh")], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
    if build.returncode == 77:
        pytest.skip(build.stderr.strip())
    assert build.returncode == 0, f"the C example did not build:\n{build.stderr}"
    return build.stdout.strip().splitlines()[-1]


def build_c_narrator() -> list[str]:
    """The command that runs the C narrator; skips the C tests where its libraries cannot be had."""
    return [built_c_narrator()]


@pytest.fixture(scope="module", params=["python", "c"])
def narrator(request) -> list[str]:
    """The command that runs one narrator, without its arguments (the Python one without its voice preview,
    which the C one has not: test_a_voice_preview_jumps_the_second_chapter checks it)."""
    if request.param == "python":
        return [sys.executable, str(EXAMPLES / "narrate.py"), "--preview", "none"]
    return build_c_narrator()


@pytest.fixture(scope="module")
def narration(narrator, tmp_path_factory):
    """One complete run over two_chapters.txt: (completed process, report, output directory)."""
    out = tmp_path_factory.mktemp("narration")
    report = out / "report.json"
    run = subprocess.run([*narrator, "--out", str(out / "wav"), "--report", str(report),
                          str(TWO_CHAPTERS)], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    statuses = {status["task_id"]: status for status in json.loads(report.read_text())}
    return run, statuses, out / "wav"


def read_wav(path: Path) -> tuple[wave._wave_params, array.array]:
    """The WAV's parameters and its 16-bit samples (checking the RIFF header on the way)."""
    head = path.read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE", f"{path} is not a RIFF/WAVE file"
    with wave.open(str(path), "rb") as audio:
        params = audio.getparams()
        frames = audio.readframes(params.nframes)
    samples = array.array("h", frames)
    if sys.byteorder == "big":
        samples.byteswap()
    return params, samples


def test_every_chapter_completes_as_a_task(narration):
    run, statuses, _ = narration
    assert sorted(statuses) == sorted(CHAPTERS)
    for task_id, status in statuses.items():
        total = CHAPTERS[task_id]["sentences"]
        assert status["status"] == "COMPLETED", status
        assert status["error"] is None
        assert status["progress"]["current"] == status["progress"]["total"] == total
        assert status["progress"]["percentage"] == 100
        assert status["started_at"] <= status["completed_at"]
    # The summary table names every task and the totals line.
    assert all(task_id in run.stdout for task_id in CHAPTERS)
    assert "total" in run.stdout and "Narrated" in run.stdout


def test_one_wav_file_per_spoken_sentence(narration):
    _, statuses, out = narration
    for task_id, expected in CHAPTERS.items():
        spoken = [n for n in range(1, expected["sentences"] + 1) if n not in expected["bad"]]
        segments = statuses[task_id]["completed_segments"]
        assert [segment["segment_id"] for segment in segments] == spoken
        files = sorted(path.name for path in (out / task_id).iterdir())
        assert files == [f"{n:03d}.wav" for n in spoken]
        assert [Path(segment["audio_url"]) for segment in segments] == \
            [out / task_id / name for name in files]


def test_every_wav_is_real_speech_as_long_as_reported(narration):
    _, statuses, _ = narration
    for status in statuses.values():
        for segment in status["completed_segments"]:
            params, samples = read_wav(Path(segment["audio_url"]))
            assert (params.nchannels, params.sampwidth) == (1, 2)
            assert params.framerate >= 8000
            duration = params.nframes / params.framerate
            assert duration > 0
            assert duration == pytest.approx(segment["duration"], abs=1e-6)
            peak = max(abs(sample) for sample in samples)
            rms = math.sqrt(sum(sample * sample for sample in samples) / len(samples))
            # Speech, not silence or a click: loud peaks and real energy throughout.
            assert peak > 2000, f"{segment['audio_url']}: peak {peak}"
            assert rms > 200, f"{segment['audio_url']}: rms {rms:.1f}"


def test_a_longer_sentence_makes_longer_audio(narration):
    _, statuses, _ = narration
    task_id, long_id, short_id = LONG_AND_SHORT
    durations = {segment["segment_id"]: segment["duration"]
                 for segment in statuses[task_id]["completed_segments"]}
    assert durations[long_id] > 2 * durations[short_id]


def test_the_unknown_voice_is_a_segment_error_and_the_chapter_goes_on(narration):
    _, statuses, _ = narration
    for task_id, expected in CHAPTERS.items():
        errors = statuses[task_id]["errors"]
        assert [entry["segment_id"] for entry in errors] == sorted(expected["bad"])
        for entry in errors:
            # libespeak-ng's own reason, naming the voice asked for.
            assert "xx-nonexistent" in entry["error"]
            assert "does not exist" in entry["error"]
    broken = statuses["02-the-broken-voice"]
    assert broken["completed_segments"][-1]["segment_id"] == 4  # spoken after the error


def test_ctrl_c_cancels_pending_chapters_and_stops_the_running_one(narrator, tmp_path):
    report = tmp_path / "report.json"
    # --pace 600 keeps the first chapter running until the cancellation cuts its pause short.
    process = subprocess.Popen([*narrator, "--out", str(tmp_path / "wav"), "--report",
                                str(report), "--pace", "600", str(TWO_CHAPTERS)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(RUN_TIMEOUT, process.kill)  # a safety net against a hang
    watchdog.start()
    try:
        for line in process.stdout:
            if line.startswith("01-the-short-one") and "sentence 1/" in line:
                break
        else:
            pytest.fail(f"the first chapter never started: {process.stderr.read()}")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, f"{stdout}\n{stderr}"
    assert "Ctrl-C" in stderr
    statuses = {status["task_id"]: status for status in json.loads(report.read_text())}
    running, pending = statuses["01-the-short-one"], statuses["02-the-broken-voice"]
    assert running["status"] == "CANCELLED" and running["cancel_requested"] is True
    assert running["started_at"] is not None
    assert len(running["completed_segments"]) < CHAPTERS["01-the-short-one"]["sentences"]
    assert pending["status"] == "CANCELLED"
    assert pending["started_at"] is None and pending["completed_segments"] == []
    assert not (tmp_path / "wav" / "02-the-broken-voice").exists()


def _status_in_the_store(store: str, task_id: str) -> dict:
    """A task's status as read by another process that opens the store (and runs nothing)."""
    script = ("import json, sys\n"
              "from storyflow_tasks import get_task_manager\n"
              "tm = get_task_manager()\n"
              "tm.configure(store=sys.argv[1])\n"
              "print(json.dumps(tm.get_task_status(sys.argv[2])))\n")
    result = subprocess.run([sys.executable, "-c", script, store, task_id], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, check=True)
    return json.loads(result.stdout)


def test_a_killed_run_is_taken_up_by_the_next_run_over_the_same_store(tmp_path):
    store = f"sqlite:{tmp_path / 'tasks.db'}"
    command = [sys.executable, str(EXAMPLES / "narrate.py"), "--out", str(tmp_path / "wav"), "--store", store,
               "--preview", "none"]
    # --pace 600: the first chapter waits after its first sentence until the kill.
    first = subprocess.Popen([*command, "--pace", "600", str(TWO_CHAPTERS)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is None
        while True:
            status = _status_in_the_store(store, "01-the-short-one")
            if status is not None and status["completed_segments"]:
                break
            assert first.poll() is None, first.stderr.read()
            threading.Event().wait(0.1)  # polling the store, no assertion on how long it takes
    finally:
        first.kill()
        first.wait()
    first_wav = tmp_path / "wav" / "01-the-short-one" / "001.wav"
    spoken_once = (first_wav.stat().st_ino, first_wav.stat().st_mtime_ns)

    report = tmp_path / "report.json"
    second = subprocess.run([*command, "--report", str(report), str(TWO_CHAPTERS)], capture_output=True,
                            text=True, timeout=RUN_TIMEOUT)
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr}"
    statuses = {status["task_id"]: status for status in json.loads(report.read_text())}
    resumed, after = statuses["01-the-short-one"], statuses["02-the-broken-voice"]
    assert resumed["status"] == after["status"] == "COMPLETED"
    assert resumed["attempt"] == 2 and after["attempt"] == 1
    assert [segment["segment_id"] for segment in resumed["completed_segments"]] == [1, 2, 3]
    assert (first_wav.stat().st_ino, first_wav.stat().st_mtime_ns) == spoken_once, "sentence 1 was spoken again"

    third = subprocess.run([*command, "--report", str(report), str(TWO_CHAPTERS)], capture_output=True,
                           text=True, timeout=RUN_TIMEOUT)
    assert third.returncode == 0, f"{third.stdout}\n{third.stderr}"
    assert {status["task_id"]: status for status in json.loads(report.read_text())} == statuses, \
        "a finished chapter is shown as it ended, not narrated again"


def test_a_voice_preview_jumps_the_second_chapter(tmp_path):
    """The preview (priority 10) asked for while the second chapter is spoken runs after that chapter's
    sentence; the chapter yields, keeps its segments, and resumes at its next sentence."""
    report = tmp_path / "report.json"
    # --pace 0.2: the chapter is still being spoken when the preview, submitted during its first sentence, comes.
    run = subprocess.run([sys.executable, str(EXAMPLES / "narrate.py"), "--out", str(tmp_path / "wav"), "--report",
                          str(report), "--pace", "0.2", "--preview", "en+f3", str(TWO_CHAPTERS)],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    statuses = {status["task_id"]: status for status in json.loads(report.read_text())}
    assert sorted(statuses) == sorted([*CHAPTERS, "preview-en-f3"])
    preview, first, second = statuses["preview-en-f3"], statuses["01-the-short-one"], statuses["02-the-broken-voice"]
    assert preview["status"] == "COMPLETED" and preview["handler"] == "preview-voice"
    assert preview["priority"] == 10 and first["priority"] == second["priority"] == 0
    assert preview["started_at"] < preview["completed_at"] < second["completed_at"]
    assert first["completed_at"] <= second["started_at"] and first["yields"] == 0
    assert second["status"] == "COMPLETED" and second["yields"] == 1 and second["attempt"] == 1
    assert [segment["segment_id"] for segment in second["completed_segments"]] == [1, 2, 4]
    assert [entry["segment_id"] for entry in second["errors"]] == [3]
    # Submitted while the first sentence was spoken: the chapter gave way before its second (or, at the
    # latest, its third: the preview's submission and the chapter race over one sentence).
    assert second["checkpoint"]["resume_at"] in (2, 3)
    wav = tmp_path / "wav" / "preview-en-f3" / "001.wav"
    params, samples = read_wav(wav)
    assert params.nframes > 0 and max(abs(sample) for sample in samples) > 2000
    assert "Voice preview (en+f3, priority 10" in run.stdout
    assert f"gave way before its sentence {second['checkpoint']['resume_at']} and resumed" in \
        " ".join(run.stdout.split())


@pytest.mark.parametrize("story, message", [
    ("## One\n[speed:3] Fast words.\n", "markup must be [voice:NAME]"),
    ("## One\n[voice:en Unclosed.\n", "markup must be [voice:NAME]"),
    ("## One\n[voice:en]\n", "with no text after it"),
    ("Some words before any heading.\n## One\nText.\n", "before the first chapter heading"),
    ("# Only a title\n", "no chapter found"),
    ("## Empty\n## Full\nText.\n", "the chapter has no text"),
])
def test_a_malformed_story_is_refused_with_a_clear_message(narrator, tmp_path, story, message):
    path = tmp_path / "bad.txt"
    path.write_text(story)
    run = subprocess.run([*narrator, "--out", str(tmp_path / "wav"), str(path)],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 2
    assert message in run.stderr
    assert not (tmp_path / "wav").exists()


def test_a_missing_story_file_is_refused(narrator, tmp_path):
    run = subprocess.run([*narrator, str(tmp_path / "absent.txt")], capture_output=True,
                         text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 2
    assert "cannot read" in run.stderr and "absent.txt" in run.stderr


@pytest.mark.parametrize("pace", ["-1", "soon", "7200"])
def test_a_bad_pace_is_refused(narrator, tmp_path, pace):
    run = subprocess.run([*narrator, "--pace", pace, str(TWO_CHAPTERS)], capture_output=True,
                         text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 2
    assert "--pace" in run.stderr


def test_both_narrators_read_the_demo_story_alike(tmp_path):
    """The story format has two parsers (story.py and narrate.c): on story.txt they agree."""
    commands = {"python": [sys.executable, str(EXAMPLES / "narrate.py"), "--preview", "none"]}
    try:
        commands["c"] = build_c_narrator()
    except pytest.skip.Exception:
        pytest.skip("the C example cannot be built here")
    shapes = {}
    for name, command in commands.items():
        report = tmp_path / f"{name}.json"
        run = subprocess.run([*command, "--out", str(tmp_path / name), "--report", str(report),
                              str(EXAMPLES / "story.txt")], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT)
        assert run.returncode == 0, f"{name}: exit {run.returncode}\n{run.stderr}"
        shapes[name] = [(status["task_id"], status["status"],
                         [segment["segment_id"] for segment in status["completed_segments"]],
                         [entry["segment_id"] for entry in status["errors"]])
                        for status in json.loads(report.read_text())]
    assert shapes["python"] == shapes["c"]
    errors = [(task_id, ids) for task_id, _, _, ids in shapes["python"] if ids]
    assert errors == [("04-the-lion-and-the-mouse", [3])]  # the Mouse's squeak


def test_the_c_example_runs_clean_under_valgrind(tmp_path):
    """No memory error and no definite leak in narrate.c, the library or their use of each other."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed (`make deps` installs it)")
    command = build_c_narrator()
    run = subprocess.run([valgrind, "--error-exitcode=99", "--leak-check=full",
                          "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", "-q",
                          *command, "--out", str(tmp_path / "wav"), str(TWO_CHAPTERS)],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "wav").glob("*/*.wav"))) == 6
