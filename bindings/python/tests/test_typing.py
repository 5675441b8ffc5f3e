"""The package's types hold where users meet them: the README's examples pass ``mypy --strict``.

The package ships ``py.typed``; a ``TaskStatus`` is a ``TypedDict`` of the wire
keys, so a misspelt key or a wrong type in user code is a type error. Each
```python block of the package README is checked as a user's module would be.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG_GUARD, PACKAGE_PARENT
from test_readme import CODE_BLOCK, PACKAGE_README

BLOCKS = CODE_BLOCK.findall(PACKAGE_README.read_text("utf-8"))


def mypy_env() -> dict:
    env = dict(os.environ)
    # An installed package is found in site-packages; a source checkout through MYPYPATH
    # (mypy refuses site-packages there).
    if "site-packages" not in PACKAGE_PARENT.parts:
        env["MYPYPATH"] = str(PACKAGE_PARENT)
    return env


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (`make venv` installs it)")
@pytest.mark.parametrize("number", range(len(BLOCKS)), ids=[f"README.md#{n}" for n in range(len(BLOCKS))])
def test_a_readme_example_passes_mypy_strict(tmp_path: Path, number: int) -> None:
    module = tmp_path / f"readme_example_{number}.py"
    module.write_text(BLOCKS[number], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, str(module)],
        capture_output=True,
        text=True,
        env=mypy_env(),
        cwd=tmp_path,
        timeout=HANG_GUARD * 4,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_status_is_typed_with_the_wire_keys(tm) -> None:
    from storyflow_tasks import TaskStatus

    task_id = tm.submit_task(lambda: None)
    status = tm.wait(task_id, timeout=HANG_GUARD)
    required = TaskStatus.__required_keys__
    optional = TaskStatus.__optional_keys__
    assert set(status) == set(required), "every wire key is declared, and nothing else is always there"
    assert optional == {"handler", "attempt", "checkpoint"}
