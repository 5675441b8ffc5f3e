"""Builds the storyflow-tasks shared library with cargo and puts it inside the wheel.

`pip install ./bindings/python` runs this from the repository checkout: the
Rust sources are two levels up (or wherever STORYFLOW_TASKS_SOURCE_DIR
points). The wheel holds the library next to the Python modules, where the
package looks for it after $STORYFLOW_TASKS_LIB, so an installed package needs
nothing else at run time.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def library_file_name() -> str:
    if sys.platform == "darwin":
        return "libstoryflow_tasks.dylib"
    if sys.platform == "win32":
        return "storyflow_tasks.dll"
    return "libstoryflow_tasks.so"


def source_dir() -> Path:
    """The storyflow-tasks crate: $STORYFLOW_TASKS_SOURCE_DIR, else the repository around this package."""
    explicit = os.environ.get("STORYFLOW_TASKS_SOURCE_DIR")
    candidates = [Path(explicit)] if explicit else [HERE.parents[1]]
    for candidate in candidates:
        manifest = candidate / "Cargo.toml"
        if manifest.is_file() and 'name = "storyflow-tasks"' in manifest.read_text(encoding="utf-8"):
            return candidate
    raise SystemExit(
        f"storyflow-tasks: cannot find the Rust crate (looked in {', '.join(map(str, candidates))}); "
        "build from the repository checkout or set STORYFLOW_TASKS_SOURCE_DIR"
    )


def crate_version() -> str:
    manifest = (source_dir() / "Cargo.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.MULTILINE)
    if not match:
        raise SystemExit("storyflow-tasks: no version in Cargo.toml")
    return match.group(1)


class BuildWithLibrary(build_py):
    """build_py, plus `cargo build --release` and a copy of the library into the package."""

    def run(self) -> None:
        super().run()
        crate = source_dir()
        cargo = shutil.which(os.environ.get("CARGO", "cargo"))
        if cargo is None:
            raise SystemExit("storyflow-tasks: cargo is needed to build the library (https://rustup.rs or apt-get install cargo)")
        self.announce(f"building the storyflow-tasks library in {crate}", level=2)
        subprocess.run([cargo, "build", "--release", "--locked"], cwd=crate, check=True)
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR", crate / "target"))
        built = target_dir / "release" / library_file_name()
        if not built.is_file():
            raise SystemExit(f"storyflow-tasks: cargo finished but {built} does not exist")
        destination = Path(self.build_lib) / "storyflow_tasks" / library_file_name()
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, destination)
        os.chmod(destination, 0o755)


class PlatformWheel(bdist_wheel):
    """The wheel holds a native library, so it is tied to the platform, not to a Python ABI (ctypes)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(version=crate_version(), cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel})
