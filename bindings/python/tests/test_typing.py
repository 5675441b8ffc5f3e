"""The package's types hold where users meet them: the README's examples pass ``mypy --strict``.

The package ships ``py.typed``; a ``TaskStatus`` is a ``TypedDict`` of the wire
keys, so a misspelt key or a wrong type in user code is a type error. Each
```python block of the package README, and of the repository README's Python
quick-start, is checked as a user's module would be.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG_GUARD, PACKAGE_PARENT
from test_readme import EXAMPLES


def mypy_env() -> dict:
    env = dict(os.environ)
    # An installed package is found in site-packages; a source checkout through MYPYPATH
    # (mypy refuses site-packages there).
    if "site-packages" not in PACKAGE_PARENT.parts:
        env["MYPYPATH"] = str(PACKAGE_PARENT)
    return env


def test_the_repository_quick_start_is_among_the_checked_examples() -> None:
    assert any(name.startswith("README.md#python-quick-start") for name, _ in EXAMPLES)


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (`make venv` installs it)")
@pytest.mark.parametrize("code", [code for _, code in EXAMPLES], ids=[name for name, _ in EXAMPLES])
def test_a_readme_example_passes_mypy_strict(tmp_path: Path, code: str) -> None:
    module = tmp_path / "readme_example.py"
    module.write_text(code, encoding="utf-8")
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
    assert optional == set()
    assert {"handler", "attempt", "checkpoint"} <= required
