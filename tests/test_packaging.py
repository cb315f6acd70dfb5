"""The wheel a plain ``pip install .`` builds holds every module and data file of the package.

The test suite runs against an editable install, which reads the source folders directly and so
hides a package left out of ``pyproject.toml``; a wheel built from the tree does not.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_wheel_holds_every_module_and_data_file(tmp_path):
    # built from a copy: setuptools keeps a build/ folder in the source tree, whose leftovers from an earlier
    # build would be packed too (hiding a package left out) and which two test passes at once would share
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("connect_service", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("connect_service-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "connect_service").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    expected |= {"connect_plugins/" + str(p.relative_to(ROOT / "plugins")) for p in (ROOT / "plugins").rglob("*.py")
                 if "__pycache__" not in p.parts}
    missing = sorted(expected - packed)
    assert not missing, f"left out of the wheel: {missing}"
