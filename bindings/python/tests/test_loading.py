"""Where the library is loaded from: $STORYFLOW_TASKS_LIB, the copy in the package, the repository's build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import storyflow_tasks
from storyflow_tasks._native import library_file_name

from conftest import REPOSITORY, assert_clean_exit, python_env, run_python

PACKAGE_DIR = Path(storyflow_tasks.__file__).resolve().parent
PACKAGED_COPY = PACKAGE_DIR / library_file_name()
REPOSITORY_BUILD = REPOSITORY / "target" / "release" / library_file_name()
SOURCE_PACKAGE_PARENT = REPOSITORY / "bindings" / "python"

PRINT_LOADED = """
import storyflow_tasks
print(storyflow_tasks.library_path())
"""


def env_without_library_variable(**extra: str) -> dict:
    env = python_env(**extra)
    env.pop(storyflow_tasks.LIBRARY_ENV, None)
    return env


def test_the_variable_names_the_file_to_load():
    target = PACKAGED_COPY if PACKAGED_COPY.exists() else REPOSITORY_BUILD
    if not target.exists():
        pytest.skip("no built library to point at")
    result = run_python(PRINT_LOADED, env=python_env(STORYFLOW_TASKS_LIB=str(target)))
    assert_clean_exit(result)
    assert result.stdout.strip() == str(target)


def test_a_wrong_variable_is_an_error_naming_it_not_a_silent_fallback(tmp_path):
    missing = tmp_path / "nowhere" / library_file_name()
    result = run_python(
        """
        from storyflow_tasks import TaskManager, LibraryLoadError
        try:
            TaskManager()
        except LibraryLoadError as error:
            assert isinstance(error, OSError)
            print(error)
        """,
        env=python_env(STORYFLOW_TASKS_LIB=str(missing)),
    )
    assert_clean_exit(result)
    assert "$STORYFLOW_TASKS_LIB" in result.stdout and str(missing) in result.stdout


def test_without_a_library_anywhere_the_error_lists_every_place_tried(tmp_path):
    # A copy of the package with no library inside, in a tree with no build where a repository would keep it.
    lonely = tmp_path / "a" / "b" / "site"
    shutil.copytree(PACKAGE_DIR, lonely / "storyflow_tasks", ignore=shutil.ignore_patterns(library_file_name(), "__pycache__"))
    env = env_without_library_variable(PYTHONPATH=str(lonely))
    result = run_python(
        """
        import storyflow_tasks
        assert storyflow_tasks.__file__.startswith(%r)
        try:
            storyflow_tasks.get_task_manager()
        except storyflow_tasks.LibraryLoadError as error:
            print(error)
        """
        % str(lonely),
        env=env,
    )
    assert_clean_exit(result)
    assert str(lonely / "storyflow_tasks" / library_file_name()) in result.stdout
    assert str(tmp_path / "a" / "target" / "release" / library_file_name()) in result.stdout
    assert "STORYFLOW_TASKS_LIB" in result.stdout and "make build" in result.stdout


def test_an_installed_package_loads_the_copy_inside_it():
    if not PACKAGED_COPY.exists():
        pytest.skip("running from the source tree: this package has no library inside (pip install puts one there)")
    result = run_python(PRINT_LOADED, env=env_without_library_variable())
    assert_clean_exit(result)
    assert result.stdout.strip() == str(PACKAGED_COPY)


def test_a_source_checkout_loads_the_repositorys_build():
    if not REPOSITORY_BUILD.exists() or (SOURCE_PACKAGE_PARENT / "storyflow_tasks" / library_file_name()).exists():
        pytest.skip("needs `make build` and a source package without a library copy")
    env = env_without_library_variable(PYTHONPATH=str(SOURCE_PACKAGE_PARENT))
    result = run_python(PRINT_LOADED, env=env, cwd=os.fspath(REPOSITORY))
    assert_clean_exit(result)
    assert result.stdout.strip() == str(REPOSITORY_BUILD)


def test_the_package_ships_its_type_information():
    assert (PACKAGE_DIR / "py.typed").exists()


def test_the_soname_looked_for_in_the_process_matches_the_library():
    """The name used to find a copy a C engine loaded first must follow the library's major version."""
    from storyflow_tasks._native import SONAME, native

    assert f"libstoryflow_tasks.so.{native().version().split('.')[0]}" == SONAME
