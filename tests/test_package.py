"""The package builds as a wheel with the ``ufd`` console script (offline)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.serial
def test_wheel_has_console_script(tmp_path):
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ into the tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "src"):
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        copy(os.path.join(ROOT, name), src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(tmp_path), str(src)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    assert len(wheels) == 1
    with zipfile.ZipFile(tmp_path / wheels[0]) as z:
        names = z.namelist()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ufd = ufd_solver.cli:main" in z.read(entry).decode()
        assert "ufd_solver/problem.py" in names and "ufd_solver/training/__init__.py" in names
