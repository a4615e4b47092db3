"""Checkpoint/restart of ``ufd train``: SIGKILL at a random moment, SIGTERM,
restart on another number of ranks, refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.serial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--set", "mesh.kind='circle'", "--set", "training.features='vonmises'",
          "--set", "teacher.density={mixture='vonmises', centers=[0.0, 2.0], kappa=1.0, weights=[1.0, 0.5]}",
          "--set", "training.width=256", "--set", "training.teacher_width=2048",
          "--set", "training.step_size=0.00390625", "--set", "training.t_end=2.5",
          "--set", "training.output_times=[0.5, 1.25, 2.0]", "--set", "checkpoint.every_steps=50", "-q"]
# population data, VarPro, ReLU features with the pcg solver (warm starts carried across
# steps); long enough (5120 steps) that a signal 0.3 s after the first checkpoint lands mid-run
CASES = {"varpro": [*COMMON, "--set", "training.data='population'", "--set", "training.solver='pcg'",
                    "--set", "training.features='relu'", "--set", "training.t_end=20.0"],
         # sampled data, two-timescale (c is part of the state)
         "2ts": [*COMMON, "--set", "training.data='sampled'", "--set", "training.samples=2048",
                 "--set", "training.method='2ts'", "--set", "training.outer_step=0.1",
                 "--set", "training.lambda=0.01"]}
TINY = ["--set", "training.width=24", "--set", "training.samples=300", "--set", "training.teacher_width=200",
        "--set", "training.t_end=0.05", "--set", "training.step_size=0.00390625", "-q"]


def ufd_cmd(*args, ranks=1):
    cmd = [sys.executable, "-m", "ufd_solver", *args]
    return ["mpirun", "-n", str(ranks), *cmd] if ranks > 1 else cmd


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(*args, ranks=1):
    return subprocess.run(ufd_cmd(*args, ranks=ranks), capture_output=True, text=True, env=env(),
                          timeout=300)


def table(path):
    with open(path) as fh:
        lines = fh.read().splitlines()
    assert lines[0].split(",")[-1] == "wall_s"
    return np.array([[float(v) for v in ln.split(",")[:-1]] for ln in lines[1:]])  # all but wall_s


def summary(out):
    with open(os.path.join(out, "summary.json")) as fh:
        return json.load(fh)


def checkpoint_meta(out):
    with open(os.path.join(out, "checkpoint", "state.json")) as fh:
        return json.load(fh)


def assert_same_run(ref, out):
    ta, tb = table(os.path.join(ref, "training.csv")), table(os.path.join(out, "training.csv"))
    assert ta.shape == tb.shape  # no duplicated or missing rows
    assert np.all(np.diff(tb[:, 0]) > 0)
    np.testing.assert_allclose(tb, ta, rtol=1e-10, atol=1e-14)
    with np.load(os.path.join(ref, "particles.npz")) as za, np.load(os.path.join(out, "particles.npz")) as zb:
        np.testing.assert_array_equal(zb["times"], za["times"])
        for key in ("theta", "c", "loss"):
            np.testing.assert_allclose(zb[key], za[key], rtol=1e-10, atol=1e-14)
    ma, mb = checkpoint_meta(ref), checkpoint_meta(out)
    if ma["k"] == mb["k"]:  # the same preconditioner history (refactorisations, iterations)
        assert ma["solver"] == mb["solver"]
    sa, sb = summary(ref), summary(out)
    assert sb["status"] == "completed" and sb["steps"] == sa["steps"]
    np.testing.assert_allclose(sb["mmd_to_teacher"], sa["mmd_to_teacher"], rtol=1e-9)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    outs = {}
    for name, case in CASES.items():
        outs[name] = str(tmp_path_factory.mktemp("ref") / name)
        r = run("train", *case, "-o", outs[name])
        assert r.returncode == 0, r.stderr
    return outs


def _start_and_wait_for_checkpoint(case, out, ranks=1):
    proc = subprocess.Popen(ufd_cmd("train", *CASES[case], "-o", out, ranks=ranks), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not os.path.isfile(os.path.join(out, "checkpoint", "state.json")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("case,ranks", [("varpro", 1), ("2ts", 2)])
def test_sigkill_at_random_moment_then_restart(tmp_path, references, case, ranks):
    out = str(tmp_path / "run")
    proc = _start_and_wait_for_checkpoint(case, out)
    time.sleep(np.random.default_rng(ranks).uniform(0.0, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    r = run("train", "--restart", out, "-q", ranks=ranks)  # the second one restarts on 2 ranks
    assert r.returncode == 0, r.stderr
    s = summary(out)
    assert s["restarts"] == 1 and s["ranks"] == ranks
    assert_same_run(references[case], out)


def test_sigterm_writes_checkpoint_and_exits_cleanly(tmp_path, references):
    out = str(tmp_path / "run")
    proc = _start_and_wait_for_checkpoint("varpro", out)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    s = summary(out)
    assert s["status"] == "interrupted" and "--restart" in s["message"]
    assert checkpoint_meta(out)["k"] == s["steps"]  # the final checkpoint is where it stopped
    with np.load(os.path.join(out, "particles.npz")) as z:  # the outputs reached so far
        assert z["times"].size == len(s["output_times"]) >= 1
    r = run("train", "--restart", out, "-q")
    assert r.returncode == 0, r.stderr
    assert_same_run(references["varpro"], out)


def test_restart_refuses_bad_directories(tmp_path):
    r = run("train", "--restart", str(tmp_path))
    assert r.returncode == 2 and "config.toml" in r.stderr
    out = str(tmp_path / "done")
    assert run("train", *TINY, "--set", "checkpoint.every_seconds=0", "-o", out).returncode == 0
    r = run("train", "--restart", out)
    assert r.returncode == 2 and "no checkpoint" in r.stderr
    ck = str(tmp_path / "ck")
    assert run("train", *TINY, "--set", "checkpoint.every_steps=4", "-o", ck).returncode == 0
    r = run("train", "--restart", ck, "--set", "training.t_end=9")
    assert r.returncode == 2 and "--restart" in r.stderr
    r = run("train", "--restart", ck, "-o", str(tmp_path / "elsewhere"))
    assert r.returncode == 2 and "--restart" in r.stderr
    # a checkpoint that does not belong to the directory's config.toml
    edited = str(tmp_path / "edited")
    shutil.copytree(ck, edited)
    with open(os.path.join(edited, "config.toml")) as fh:
        text = fh.read()
    assert "width = 24\n" in text
    with open(os.path.join(edited, "config.toml"), "w") as fh:
        fh.write(text.replace("width = 24\n", "width = 25\n"))
    r = run("train", "--restart", edited)
    assert r.returncode == 2 and "does not belong" in r.stderr
    # not a 'ufd train' directory
    foreign = str(tmp_path / "foreign")
    shutil.copytree(ck, foreign)
    s = summary(foreign)
    s["command"] = "run"
    with open(os.path.join(foreign, "summary.json"), "w") as fh:
        json.dump(s, fh)
    r = run("train", "--restart", foreign)
    assert r.returncode == 2 and "'ufd train'" in r.stderr
    # a restart of a finished run from its last checkpoint reproduces it
    before = table(os.path.join(ck, "training.csv"))
    r = run("train", "--restart", ck, "-q")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(table(os.path.join(ck, "training.csv")), before)
