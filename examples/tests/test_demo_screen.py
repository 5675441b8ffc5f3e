"""`make demo` in a real 80-column terminal: what a newcomer sees first.

examples/demo.sh (what `make demo` runs once the library is built) runs inside
tmux, a terminal emulator, 80 columns by 24 lines. Its live progress bars are
redrawn in place; a line wider than the terminal would wrap, the redraw would
land one line low each time, and the screen would fill with copies of the bars.
The test reads tmux's screen and scrollback back and checks that no line
wrapped, that each bar was drawn once, and that the output ends as
examples/README.md shows.

It writes the demo's WAV files under out/, as `make demo` does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1]
README = EXAMPLES / "README.md"
SCREEN_MARKER = "<!-- the final screen of `make demo`"
COLUMNS, LINES = 80, 24
CHAPTERS = ["01-the-fox-and-the-grapes", "02-the-hare-and-the-tortoise",
            "03-the-crow-and-the-pitcher", "04-the-lion-and-the-mouse"]
RUN_TIMEOUT = 300  # a safety net against a hang, not a timing assertion

# Wall-clock times differ from run to run, and so does the sentence at which the chapter gave way to
# the preview; everything else on the screen is the same every time.
WALL_TIMES = [
    (re.compile(r" +\d+\.\d+$"), " <wall s>"),  # the summary's last column
    (re.compile(r"in \d+\.\d+ s of wall time"), "in <wall s> s of wall time"),
    (re.compile(r"done in \d+\.\d+ s"), "done in <wall s> s"),
    (re.compile(r"started \d+\.\d+ s later"), "started <wall s> s later"),
    (re.compile(r"takes \d+\.\d+ s here"), "takes <wall s> s here"),
    (re.compile(r"sentence \d+ and resumed"), "sentence <n> and resumed"),
]


def without_wall_times(lines: list[str]) -> list[str]:
    normalised = []
    for line in lines:
        line = line.rstrip()
        for pattern, replacement in WALL_TIMES:
            line = pattern.sub(replacement, line)
        normalised.append(line)
    return normalised


def readme_final_screen() -> list[str]:
    """The text block that follows the marker comment in examples/README.md."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SCREEN_MARKER)
    block = re.search(r"```text\n(.*?)\n```", text[start:], re.DOTALL)
    assert block, f"{README.name}: no ```text block after the final-screen marker"
    return block.group(1).split("\n")


def trimmed(lines: list[str]) -> list[str]:
    """The lines without the blank ones at the end (the rest of the screen)."""
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.fixture(scope="module")
def demo_in_a_terminal(tmp_path_factory):
    """Runs examples/demo.sh in an 80x24 tmux terminal: (exit status, screen, scrollback)."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (`make deps` installs it)")
    work = tmp_path_factory.mktemp("terminal")
    socket, exit_file = work / "tmux.socket", work / "exit-status"
    channel = f"demo-done-{os.getpid()}"
    # After the demo the pane stays open (sleep), so that its screen can be read.
    demo, exit_to, tmux_, socket_ = (shlex.quote(str(path)) for path in
                                     (EXAMPLES / "demo.sh", exit_file, tmux, socket))
    command = (f"{demo}; echo $? > {exit_to}; "
               f"{tmux_} -S {socket_} wait-for -S {channel}; sleep {RUN_TIMEOUT}")
    # COLUMNS or LINES from outside would override the size of the terminal the demo is in.
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("TMUX", "COLUMNS", "LINES")}
    base = [tmux, "-S", str(socket), "-f", "/dev/null"]
    subprocess.run([*base, "new-session", "-d", "-x", str(COLUMNS), "-y", str(LINES), command],
                   check=True, env=environment, timeout=RUN_TIMEOUT)
    try:
        # wait-for returns at once if the demo signalled before it was called.
        subprocess.run([*base, "wait-for", channel], check=True, timeout=RUN_TIMEOUT)
        screen = subprocess.run([*base, "capture-pane", "-p"], check=True, capture_output=True,
                                text=True, timeout=RUN_TIMEOUT).stdout.split("\n")
        # -J joins the lines the terminal wrapped: a line longer than COLUMNS is one that did.
        scrollback = subprocess.run([*base, "capture-pane", "-p", "-J", "-S", "-"], check=True,
                                    capture_output=True, text=True,
                                    timeout=RUN_TIMEOUT).stdout.split("\n")
    finally:
        subprocess.run([*base, "kill-server"], check=False, capture_output=True, timeout=RUN_TIMEOUT)
    return int(exit_file.read_text()), screen, scrollback


def test_the_demo_succeeds_in_the_terminal(demo_in_a_terminal):
    status, screen, _ = demo_in_a_terminal
    assert status == 0, "\n".join(screen)


def test_no_line_is_wider_than_the_terminal(demo_in_a_terminal):
    _, _, scrollback = demo_in_a_terminal
    wide = [line for line in trimmed(scrollback) if len(line) > COLUMNS]
    assert not wide, f"lines wider than {COLUMNS} columns (wrapped):\n" + "\n".join(wide)


def test_each_progress_bar_is_drawn_once_and_redrawn_in_place(demo_in_a_terminal):
    _, _, scrollback = demo_in_a_terminal
    for chapter in CHAPTERS:
        bars = [line for line in scrollback if line.startswith(chapter) and "%" in line]
        assert len(bars) == 1, f"{chapter}: {len(bars)} bar lines on the screen:\n" + "\n".join(bars)
        assert bars[0].rstrip().endswith("100%  COMPLETED")


def test_a_warm_demo_does_not_reinstall_the_python_package(demo_in_a_terminal):
    # run_tests.sh made the virtualenv before pytest started: nothing is left to install.
    _, _, scrollback = demo_in_a_terminal
    assert not [line for line in scrollback if line.startswith("venv.sh:")], "\n".join(scrollback)


def test_the_output_ends_as_the_readme_shows(demo_in_a_terminal):
    # The output is longer than the terminal: its scrollback holds what scrolled off the top.
    _, _, scrollback = demo_in_a_terminal
    expected = without_wall_times(readme_final_screen())
    shown = without_wall_times(trimmed(scrollback))
    assert len(shown) >= len(expected), "\n".join(shown)
    assert shown[-len(expected):] == expected, "\n".join(shown)


def test_a_warm_venv_sh_leaves_the_installed_package_alone():
    """examples/venv.sh (the demo's setup step) reinstalls nothing when the sources are unchanged."""
    venv = Path(sys.prefix)  # the virtualenv this pytest runs in: run_tests.sh made it
    spec = subprocess.run([str(venv / "bin" / "python"), "-I", "-c",
                           "import importlib.util; print(importlib.util.find_spec('storyflow_tasks').origin)"],
                          check=True, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    installed = Path(spec.stdout.strip())
    before = installed.stat().st_mtime_ns
    run = subprocess.run([str(EXAMPLES / "venv.sh")], check=False, capture_output=True, text=True,
                         env={**os.environ, "VENV": str(venv)}, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr
    assert installed.stat().st_mtime_ns == before, f"{installed} was rewritten: reinstalled"
