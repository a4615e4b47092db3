"""The ``ufd`` command line as a user meets it (subprocesses, serial)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.serial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ufd(*args, cwd=None, np_ranks=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "ufd_solver", *args]
    if np_ranks:
        cmd = ["mpirun", "-n", str(np_ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("args,fragment", [
    (["--set", "solver.t_end=-1"], "solver.t_end: must be > 0"),
    (["--set", "mesh.kind=\"cube\""], "mesh.kind"),
    (["--set", "solver.bogus=1"], "solver.bogus: unknown key"),
    (["--set", "teacher.density=\"__import__('os')\""], "teacher.density"),
    (["--set", "teacher.density=\"cos(theta)\""], "σ must be strictly positive"),
    (["--set", "initial.density=\"0*theta\""], "ρ₀ has no mass"),
    (["--set", "initial.density=\"cos(theta)\""], "ρ₀ must be non-negative"),
    (["--set", "solver.output_times=[99.0]"], "outside [0, t_end"),
    (["--set", "mesh.kind=\"file\"", "--set", "mesh.file=\"missing.msh\""], "mesh.file"),
])
def test_bad_input_exit_2_and_nothing_written(tmp_path, args, fragment):
    out = tmp_path / "out"
    r = ufd("run", *args, "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_malformed_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[solver]\nt_end = = 3\n")
    r = ufd("run", str(cfg), "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "malformed TOML" in r.stderr


def test_run_then_plot_and_rerun_in_same_dir(tmp_path):
    out = tmp_path / "o"
    args = ["run", "--set", "mesh.resolution=100", "--set", "solver.t_end=2", "-o", str(out), "-q"]
    r = ufd(*args)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["ranks"] == 1
    assert ufd(*args).returncode == 0  # a directory holding the same kind of run is reused
    r = ufd("plot", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "pictures" / "rho_all.png").stat().st_size > 10_000
    assert ufd("plot", str(tmp_path)).returncode == 2


def test_solver_failure_exit_3_keeps_summary(tmp_path):
    out = tmp_path / "o"
    r = ufd("run", "--set", "mesh.resolution=100", "--set", "solver.newton_max_it=1",
            "--set", "solver.max_retries=2", "--set", "solver.dt0=1.0", "-o", str(out), "-q")
    assert r.returncode == 3, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and "Newton failed" in s["message"]
    z = np.load(out / "snapshots.npz")
    assert np.all(np.isfinite(z["rho"]))


def test_two_ranks_cli(tmp_path):
    out = tmp_path / "o"
    r = ufd("run", "--set", "mesh.resolution=200", "--set", "solver.t_end=3", "-o", str(out), "-q",
            np_ranks=2)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["ranks"] == 2
    r = ufd("run", "--set", "solver.t_end=-3", "-o", str(tmp_path / "bad"), np_ranks=2)
    assert r.returncode != 0 and r.stderr.count("solver.t_end") == 1


def test_info_and_mesh(tmp_path):
    r = ufd("info")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["dolfinx"] == "0.9.0" and info["mpi_size"] == 1
    path = tmp_path / "s.xdmf"
    r = ufd("mesh", "--kind", "sphere", "--resolution", "2", "-o", str(path))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "o"
    r = ufd("run", "--set", "mesh.kind=\"file\"", "--set", f"mesh.file=\"{path}\"", "--set", "mesh.dim=3",
            "--set", "teacher.density=\"1.5 + z\"", "--set", "solver.t_end=1", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    z = np.load(out / "snapshots.npz")
    assert z["points"].shape == (162, 3)


def test_help_lists_defaults():
    r = ufd("run", "--help")
    assert r.returncode == 0 and "t_end=31.25" in r.stdout
