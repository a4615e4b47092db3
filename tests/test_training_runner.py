"""``train(config, outdir, comm)``: outputs, reproducibility, ranks, input errors."""

import json
import os

import numpy as np
import pytest
from mpi4py import MPI

from ufd_solver.config import load_config
from ufd_solver.errors import ConfigError
from ufd_solver.training.runner import train

COMM = MPI.COMM_WORLD

SMALL = ["training.width=24", "training.samples=300", "training.teacher_width=200",
         "training.t_end=0.05", "training.step_size=0.00390625", "training.num_outputs=3",
         "output.progress=false"]


@pytest.fixture
def shared_tmp(tmp_path):
    """One directory for all ranks (rank 0's tmp_path)."""
    return COMM.bcast(str(tmp_path), root=0)


def run(path, overrides=(), comm=COMM, data=None):
    cfg = load_config(None, [*SMALL, *overrides], data=data)
    return train(cfg, path, comm)


def test_outputs_written(shared_tmp):
    out = os.path.join(shared_tmp, "run")
    summary = run(out, ["training.output_times=[0.0123]"])
    assert summary["status"] == "completed" and summary["command"] == "train"
    assert set(os.listdir(out)) >= {"particles.npz", "teacher.npz", "config.toml", "summary.json", "training.csv"}
    with np.load(os.path.join(out, "particles.npz")) as z:
        times, theta, c, loss = z["times"], z["theta"], z["c"], z["loss"]
    np.testing.assert_array_equal(times, [0.0, 0.0123, 0.05])  # hit exactly
    assert theta.shape == (3, 24, 2) and c.shape == (3, 24) and loss.shape == (3,)
    assert np.abs(np.linalg.norm(theta, axis=-1) - 1).max() < 1e-14
    with np.load(os.path.join(out, "teacher.npz")) as z:
        assert z["theta"].shape == (200, 2)
    with open(os.path.join(out, "training.csv")) as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "step,t,loss,risk,c_min,c_max,c_mean,c_abs_mean,wall_s"
    rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])
    assert rows[0, 1] == 0.0 and rows[-1, 1] == 0.05 and rows.shape[0] >= 3
    np.testing.assert_allclose(rows[-1, 2], loss[-1], rtol=1e-9)
    with open(os.path.join(out, "summary.json")) as fh:
        assert json.load(fh)["steps"] == summary["steps"] == 14  # 12 grid steps + 0.0123 inserted
    again = load_config(os.path.join(out, "config.toml"))
    assert again.training == load_config(None, [*SMALL, "training.output_times=[0.0123]"]).training


def test_same_seed_same_numbers_any_rank_count(shared_tmp):
    a = run(os.path.join(shared_tmp, "a"), ["training.seed=7"])
    own = os.path.join(shared_tmp, f"self{COMM.rank}")
    b = run(own, ["training.seed=7"], comm=MPI.COMM_SELF)  # every rank alone
    c = run(os.path.join(shared_tmp, "c"), ["training.seed=8"])
    za, zb = np.load(os.path.join(shared_tmp, "a", "particles.npz")), np.load(os.path.join(own, "particles.npz"))
    for key in ("theta", "c", "loss"):
        np.testing.assert_allclose(za[key], zb[key], rtol=1e-12, atol=1e-12)
    assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-12)
    assert abs(c["final_loss"] - a["final_loss"]) > 1e-6
    assert a["ranks"] == COMM.size


@pytest.mark.parametrize("overrides,key", [
    (["training.features=relu", "mesh.kind=torus"], "training.features"),
    (["training.features=vonmises", "mesh.kind=box"], "training.features"),
    (["training.features=radial", "mesh.kind=torus", "training.data=population"], "training.data"),
    (["training.features=no_such_module_xyz:f"], "training.features"),
    (["teacher.density='cos(theta)'"], "teacher.density"),
    (["training.width=100000", "training.samples=100000"], "training.width"),
])
def test_bad_input_raises_before_any_output(shared_tmp, overrides, key):
    out = os.path.join(shared_tmp, "never")
    with pytest.raises(ConfigError) as err:
        run(out, overrides)
    assert err.value.key == key
    assert not os.path.exists(out)


def test_refuses_foreign_output_directory(shared_tmp):
    out = os.path.join(shared_tmp, "foreign")
    if COMM.rank == 0:
        os.makedirs(out)
        open(os.path.join(out, "notes.txt"), "w").close()
    COMM.barrier()
    with pytest.raises(ConfigError):
        run(out)


USER_SOURCE = '''
import numpy as np

def feature(theta, x):
    z = x @ theta.T
    return np.tanh(z), (1 - np.tanh(z) ** 2)[:, :, None] * x[:, None, :]
'''


@pytest.mark.parametrize("overrides", [
    ["mesh.kind=sphere", "training.data=population", "training.method=2ts"],
    ["mesh.kind=sphere", "training.features=vonmises", "training.init=quantile"],
    ["mesh.kind=torus", "training.features=gaussian", "training.data=population",
     "teacher.density={preset='paper-torus'}", "training.regularization=unbiased"],
    ["mesh.kind=torus", "training.features=radial", "teacher.density={preset='paper-torus'}", "training.lambda=0.1"],
    ["training.features=ufd_user_feature_mod:feature", "training.samples=20"],  # dual system (N < M)
], ids=["relu-sphere-pop-2ts", "vonmises-sphere", "gaussian-torus-pop", "radial-torus", "user"])
def test_every_family_trains(shared_tmp, overrides, monkeypatch):
    if COMM.rank == 0:
        with open(os.path.join(shared_tmp, "ufd_user_feature_mod.py"), "w") as fh:
            fh.write(USER_SOURCE)
    COMM.barrier()
    monkeypatch.syspath_prepend(shared_tmp)
    out = os.path.join(shared_tmp, "fam")
    s = run(out, overrides)
    assert s["status"] == "completed"
    assert s["loss"][-1] < s["loss"][0]
    assert all(np.isfinite(s["mmd_to_sigma"]))
