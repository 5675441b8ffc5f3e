"""The cross-language scheduling table, tests/cases/scheduling.json, run in Python on both stores.

Every case listing "python" runs here on the memory store (this process's
manager) and on an SQLite file (one interpreter of its own runs them all);
``scheduling_table.py`` says how each step maps onto the package. Each case's
answer is written to ``target/scheduling_python.txt`` as
``case <name> (<store>): ok`` (or the step that differed), beside the C runner's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from scheduling_table import Table, python_cases

from conftest import HANG_GUARD, REPOSITORY, assert_clean_exit, python_env, run_python

CASES = python_cases()
ANSWERS_FILE = REPOSITORY / "target" / "scheduling_python.txt"
_answers: Dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def answers_file() -> Iterator[None]:
    """Writes every case's answer, in table order, once the module's cases have run."""
    yield
    ANSWERS_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [_answers[key] for case in CASES for key in (f"{case['name']} (memory)", f"{case['name']} (sqlite)") if key in _answers]
    ANSWERS_FILE.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Optional[str]]:
    """Every case's outcome in an interpreter whose store is a fresh SQLite file."""
    store = f"sqlite:{Path(tmp_path_factory.mktemp('scheduling')) / 'tasks.db'}"
    result = run_python(
        "import scheduling_table\nscheduling_table.main()\n",
        env=python_env(STORYFLOW_TASKS_STORE=store),
        timeout=HANG_GUARD * 4,
    )
    assert_clean_exit(result)
    outcomes: Dict[str, Optional[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcomes


def _record(case: Dict[str, Any], store: str, problem: Optional[str]) -> None:
    _answers[f"{case['name']} ({store})"] = f"case {case['name']} ({store}): " + ("ok" if problem is None else f"FAILED {problem}")


def test_the_table_has_python_cases() -> None:
    assert len(CASES) >= 5
    assert len({case["name"] for case in CASES}) == len(CASES), "case names are unique"


@pytest.mark.parametrize("case", [pytest.param(case, id=case["name"]) for case in CASES])
def test_scheduling_case_on_the_memory_store(tm: Any, case: Dict[str, Any]) -> None:
    problem = Table(tm).run_case(case)
    _record(case, "memory", problem)
    assert problem is None, problem


@pytest.mark.parametrize("case", [pytest.param(case, id=case["name"]) for case in CASES])
def test_scheduling_case_on_the_sqlite_store(on_sqlite: Dict[str, Optional[str]], case: Dict[str, Any]) -> None:
    assert case["name"] in on_sqlite, "the SQLite run did not reach this case"
    problem = on_sqlite[case["name"]]
    _record(case, "sqlite", problem)
    assert problem is None, problem
