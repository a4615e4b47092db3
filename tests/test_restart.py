"""Checkpoint/restart of ``ufd run``: SIGKILL at a random moment, SIGTERM,
restart on another number of ranks, injected numerical faults."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.serial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE = ["--set", "mesh.kind='sphere'", "--set", "mesh.resolution=4",
        "--set", "teacher.density={mixture='vonmises', centers=[[0,0,1],[1,0,0]], kappa=[12,5]}",
        "--set", "solver.t_end=3", "--set", "solver.output_times=[0.1, 0.5, 1.0, 2.0]",
        "--set", "checkpoint.every_steps=4", "-q"]


def ufd_cmd(*args, ranks=1):
    cmd = [sys.executable, "-m", "ufd_solver", *args]
    return ["mpirun", "-n", str(ranks), *cmd] if ranks > 1 else cmd


def env(**extra):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def run(*args, ranks=1, **extra):
    return subprocess.run(ufd_cmd(*args, ranks=ranks), capture_output=True, text=True,
                          env=env(**extra), timeout=600)


def table(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = ["t", "dt", "mass", "energy", "l1_to_sigma", "min_rho", "newton_its"]
    return np.array([[float(r[k]) for k in keys] for r in rows])


def assert_same_run(a, b, exact_counts=True):
    """Rows equal to 1e-10 (1e-9, see below), Newton counts equal.  A run rebuilds its preconditioner at
    every scheduled checkpoint, so a restart from one repeats the iterations exactly on
    the same rank count.  Otherwise (another rank count: another BoomerAMG; a restart
    from a signal's checkpoint: a fresh preconditioner where the run reused one) each
    inexact Krylov solve differs, and a Newton iteration that lands at the stopping
    threshold may go either way: counts within one."""
    ta, tb = table(os.path.join(a, "diagnostics.csv")), table(os.path.join(b, "diagnostics.csv"))
    assert ta.shape == tb.shape  # no duplicated or missing rows
    # Newton stops at a residual of 1e-11 of the mass scale; other Krylov iterates (another
    # rank count) land elsewhere within it, and the differences accumulate over the steps:
    # 2e-10 relative was seen once in the small values (min_rho) of a 1 → 2 rank restart
    tol = 1e-10 if exact_counts else 1e-9
    np.testing.assert_allclose(ta[:, :-1], tb[:, :-1], rtol=tol, atol=tol * 1e-2)
    if exact_counts:
        np.testing.assert_array_equal(ta[:, -1], tb[:, -1])
    else:
        assert np.abs(ta[:, -1] - tb[:, -1]).max() <= 1
    za, zb = np.load(os.path.join(a, "snapshots.npz")), np.load(os.path.join(b, "snapshots.npz"))
    np.testing.assert_array_equal(za["times"], zb["times"])
    np.testing.assert_allclose(za["rho"], zb["rho"], rtol=1e-10, atol=1e-14)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    r = run("run", *CASE, "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def _start_and_wait_for_checkpoint(out, ranks=1):
    proc = subprocess.Popen(ufd_cmd("run", *CASE, "-o", out, ranks=ranks), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not os.path.isfile(os.path.join(out, "checkpoint", "state.json")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_moment_then_restart(tmp_path, reference, seed):
    out = str(tmp_path / "run")
    proc = _start_and_wait_for_checkpoint(out)
    time.sleep(np.random.default_rng(seed).uniform(0.0, 1.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    restart_ranks = 2 if seed == 1 else 1  # the second restart changes the rank count
    r = run("run", "--restart", out, "-q", ranks=restart_ranks)
    assert r.returncode == 0, r.stderr
    s = json.loads(open(os.path.join(out, "summary.json")).read())
    assert s["status"] == "completed" and s["restarts"] == 1
    assert_same_run(reference, out, exact_counts=restart_ranks == 1)


def test_sigterm_writes_checkpoint_and_exits_cleanly(tmp_path, reference):
    out = str(tmp_path / "run")
    proc = _start_and_wait_for_checkpoint(out)
    os.killpg(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    s = json.loads(open(os.path.join(out, "summary.json")).read())
    assert s["status"] == "interrupted" and "--restart" in s["message"]
    r = run("run", "--restart", out, "-q")
    assert r.returncode == 0, r.stderr
    assert_same_run(reference, out, exact_counts=False)


def test_restart_refuses_bad_directories(tmp_path):
    r = run("run", "--restart", str(tmp_path))
    assert r.returncode == 2 and "config.toml" in r.stderr
    out = str(tmp_path / "done")
    assert run("run", "--set", "mesh.resolution=50", "--set", "solver.t_end=0.5",
               "--set", "checkpoint.every_seconds=0", "-q", "-o", out).returncode == 0
    r = run("run", "--restart", out)
    assert r.returncode == 2 and "no checkpoint" in r.stderr
    r = run("run", "--restart", out, "--set", "solver.t_end=9")
    assert r.returncode == 2 and "--restart" in r.stderr


def test_injected_faults_are_retried(tmp_path, reference):
    """A Newton failure and a NaN are caught; dt is cut and the run still completes."""
    out = str(tmp_path / "run")
    r = run("run", *CASE, "-o", out, UFD_INJECT_FAULTS="newton@3,nan@6")
    assert r.returncode == 0, r.stderr
    s = json.loads(open(os.path.join(out, "summary.json")).read())
    assert s["status"] == "completed" and s["failed_solves"] == 2
    z = np.load(os.path.join(out, "snapshots.npz"))
    assert np.all(np.isfinite(z["rho"]))
    zr = np.load(os.path.join(reference, "snapshots.npz"))
    assert np.abs(z["rho"][-1] - zr["rho"][-1]).max() < 1e-3 * zr["rho"][-1].max()


def test_persistent_fault_fails_cleanly_keeping_last_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    r = run("run", *CASE, "--set", "solver.max_retries=3", "-o", out, UFD_INJECT_FAULTS="newton@9+")
    assert r.returncode == 3, r.stderr
    s = json.loads(open(os.path.join(out, "summary.json")).read())
    assert s["status"] == "failed" and "Newton failed 4 times" in s["message"]
    meta = json.loads(open(os.path.join(out, "checkpoint", "state.json")).read())
    assert meta["steps"] == 8  # the last good checkpoint (every 4 steps) survives
    assert s["failed_solves"] == 4
