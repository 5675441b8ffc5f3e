"""Builds the storyflow-tasks shared library with cargo and puts it inside the wheel.

`pip install ./bindings/python` runs this from the repository checkout: the
Rust sources are two levels up (or wherever STORYFLOW_TASKS_SOURCE_DIR
points). The wheel holds the library next to the Python modules, where the
package looks for it after $STORYFLOW_TASKS_LIB, so an installed package needs
nothing else at run time. The copy in the wheel has its debug information
stripped (about a tenth of the size), and the wheel's platform tag says which
glibc the library really needs, read from its symbol versions.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

from setuptools import Distribution, setup
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


#: The libraries a manylinux wheel may need from the system (PEP 600: they come with every glibc).
MANYLINUX_SYSTEM_LIBRARIES = {
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld-linux.so.2",
}


def _terminal() -> Optional[TextIO]:
    """The user's terminal when pip hides this build's output (it does unless -v), else None."""
    if sys.stderr.isatty():
        return None  # our output is shown already
    try:
        return open("/dev/tty", "w", encoding="utf-8")  # the caller closes it
    except OSError:
        return None  # no terminal (CI, a service): pip's log is all there is


def _tell(message: str) -> None:
    """Says what the build is doing, where the user sees it even under pip's quiet build output."""
    print(f"storyflow-tasks: {message}", file=sys.stderr, flush=True)
    terminal = _terminal()
    if terminal is not None:
        with terminal:
            print(f"storyflow-tasks: {message}", file=terminal, flush=True)


def manylinux_tag(library: Path) -> Optional[str]:
    """``manylinux_X_Y_<arch>`` for the highest GLIBC_X.Y symbol version the library needs, if it is a manylinux library.

    None when it cannot be told (not Linux, no objdump/readelf) or the library
    needs a system library beyond those PEP 600 allows.
    """
    if not sys.platform.startswith("linux"):
        return None
    objdump, readelf = shutil.which("objdump"), shutil.which("readelf")
    if objdump is None or readelf is None:
        return None
    dynamic = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\).*\[(.+?)\]", dynamic))
    if not needed <= MANYLINUX_SYSTEM_LIBRARIES:
        _tell(f"the library needs {sorted(needed - MANYLINUX_SYSTEM_LIBRARIES)}: the wheel keeps a plain linux tag")
        return None
    symbols = subprocess.run([objdump, "-T", str(library)], capture_output=True, text=True, check=True).stdout
    versions = [tuple(int(part) for part in found.split(".")) for found in re.findall(r"\bGLIBC_(\d+\.\d+)\b", symbols)]
    if not versions:
        return None
    major, minor = max(versions)[:2]
    machine = os.uname().machine
    return f"manylinux_{major}_{minor}_{machine}"


class BuildWithLibrary(build_py):
    """build_py, plus `cargo build --release` and a stripped copy of the library in the package."""

    def run(self) -> None:
        super().run()
        crate = source_dir()
        cargo = shutil.which(os.environ.get("CARGO", "cargo"))
        if cargo is None:
            raise SystemExit("storyflow-tasks: cargo is needed to build the library (https://rustup.rs or apt-get install cargo)")
        _tell(f"building the Rust library with cargo in {crate} (a first build takes a minute or so; pip install -v shows each step)")
        started = time.monotonic()
        subprocess.run([cargo, "build", "--release", "--locked"], cwd=crate, check=True)
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR", crate / "target"))
        built = target_dir / "release" / library_file_name()
        if not built.is_file():
            raise SystemExit(f"storyflow-tasks: cargo finished but {built} does not exist")
        destination = Path(self.build_lib) / "storyflow_tasks" / library_file_name()
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, destination)
        os.chmod(destination, 0o755)
        strip = shutil.which("strip")
        if strip is not None and sys.platform.startswith("linux"):
            subprocess.run([strip, "--strip-debug", str(destination)], check=True)
        else:
            _tell("no `strip` here: the library goes into the wheel with its debug information")
        _tell(f"library built in {time.monotonic() - started:.0f} s; packing the wheel")


class DistributionWithLibrary(Distribution):
    """A distribution with a native library: its files go to platlib, where tools such as auditwheel look for them."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """The wheel holds a native library, so it is tied to the platform, not to a Python ABI (ctypes)."""

    def get_tag(self):
        _, _, platform = super().get_tag()
        build_py_command = self.get_finalized_command("build_py")
        library = Path(build_py_command.build_lib) / "storyflow_tasks" / library_file_name()
        if platform.startswith("linux_") and library.is_file():
            platform = manylinux_tag(library) or platform
        return "py3", "none", platform


setup(
    version=crate_version(),
    distclass=DistributionWithLibrary,
    cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel},
)
