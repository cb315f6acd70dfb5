"""The wheel a plain ``pip install .`` builds holds every module and data file of the package.

The test suite runs against an editable install, which reads the source folders directly and so
hides a package left out of ``pyproject.toml``; a wheel built from the tree does not.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_wheel_holds_every_module_and_data_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("connect_service-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "connect_service").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    expected |= {"connect_plugins/" + str(p.relative_to(ROOT / "plugins")) for p in (ROOT / "plugins").rglob("*.py")
                 if "__pycache__" not in p.parts}
    missing = sorted(expected - packed)
    assert not missing, f"left out of the wheel: {missing}"
