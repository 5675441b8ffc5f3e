"""The READMEs' Python examples run as written, each in a fresh interpreter.

Every ```python block of bindings/python/README.md, and those of the
repository README's "Python quick-start" section once it has one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import REPOSITORY, assert_clean_exit, run_python

PACKAGE_README = Path(__file__).resolve().parents[1] / "README.md"
REPOSITORY_README = REPOSITORY / "README.md"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_quick_start_section(text: str) -> str:
    """The repository README's section whose heading says "Python quick-start", up to the next heading as high."""
    match = re.search(r"^(#+) [^\n]*python quick-start[^\n]*$", text, re.IGNORECASE | re.MULTILINE)
    if match is None:
        return ""
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def examples() -> List[Tuple[str, str]]:
    found = [(f"{PACKAGE_README.name}#{n}", block) for n, block in enumerate(CODE_BLOCK.findall(PACKAGE_README.read_text("utf-8")))]
    if REPOSITORY_README.exists():
        section = python_quick_start_section(REPOSITORY_README.read_text("utf-8"))
        found += [(f"README.md#python-quick-start-{n}", block) for n, block in enumerate(CODE_BLOCK.findall(section))]
    return found


EXAMPLES = examples()


def test_the_package_readme_has_python_examples():
    assert sum(1 for name, _ in EXAMPLES if name.startswith(PACKAGE_README.name)) >= 3


@pytest.mark.parametrize("name, code", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_a_readme_example_runs_as_written(name, code):
    result = run_python(code)
    assert_clean_exit(result)
    assert result.stdout.strip(), f"{name} printed nothing"
