"""The wheel that `make python-package` built (target/python-wheel): licences, a stripped library, a true platform tag."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPOSITORY

WHEELS = sorted((REPOSITORY / "target" / "python-wheel").glob("storyflow_tasks-*.whl"))

pytestmark = pytest.mark.skipif(not WHEELS, reason="no wheel in target/python-wheel (`make python-package` builds it)")


@pytest.fixture(scope="module")
def wheel() -> Path:
    assert len(WHEELS) == 1, WHEELS
    return WHEELS[0]


@pytest.fixture(scope="module")
def library(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if name.startswith("storyflow_tasks/libstoryflow_tasks.")]
        assert len(names) == 1, "the library sits next to the modules, at the wheel's root (platlib)"
        return Path(archive.extract(names[0], tmp_path_factory.mktemp("wheel")))


def test_the_wheel_carries_both_licences(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        licences = {Path(name).name: archive.read(name) for name in archive.namelist() if "/licenses/" in name}
        metadata = archive.read(next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))).decode()
    assert licences == {name: (REPOSITORY / name).read_bytes() for name in ("LICENSE-MIT", "LICENSE-APACHE")}
    assert "License-Expression: MIT OR Apache-2.0" in metadata


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf")
def test_the_library_in_the_wheel_has_no_debug_information(library: Path) -> None:
    sections = subprocess.run(["readelf", "-S", "-W", str(library)], capture_output=True, text=True, check=True).stdout
    assert ".debug_info" not in sections
    assert ".dynsym" in sections  # stripped of debug information only: the exports are all there


@pytest.mark.skipif(shutil.which("objdump") is None or not sys.platform.startswith("linux"), reason="needs objdump on Linux")
def test_the_platform_tag_names_the_glibc_the_library_needs(wheel: Path, library: Path) -> None:
    symbols = subprocess.run(["objdump", "-T", str(library)], capture_output=True, text=True, check=True).stdout
    newest = max(tuple(int(part) for part in v.split(".")) for v in re.findall(r"\bGLIBC_(\d+\.\d+)\b", symbols))
    tag = wheel.name[: -len(".whl")].split("-")[-1]
    assert re.fullmatch(rf"manylinux_{newest[0]}_{newest[1]}_\w+", tag), f"{tag} for a library that needs glibc {newest}"


@pytest.mark.skipif(
    shutil.which("auditwheel") is None and not (Path(sys.executable).parent / "auditwheel").exists(),
    reason="auditwheel is not installed (`make venv` installs it)",
)
def test_auditwheel_agrees_with_the_tag(wheel: Path) -> None:
    auditwheel = shutil.which("auditwheel") or str(Path(sys.executable).parent / "auditwheel")
    report = subprocess.run([auditwheel, "show", str(wheel)], capture_output=True, text=True, check=True).stdout
    tag = wheel.name[: -len(".whl")].split("-")[-1]
    assert "is consistent" in report and f'"{tag}"' in " ".join(report.split()), report
