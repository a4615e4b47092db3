"""``ufd validate``: the comparison of particles with the PDE, its files, its numbers
against closed forms, reuse of finished runs, and refusals."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate

from ufd_solver.config import load_config
from ufd_solver.errors import ConfigError
from ufd_solver.validate import fit_rate, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B = 0.5, 0.2
# σ = (1 + a cos θ + b sin 2θ)/2π (no symmetry shared with the uniform start: the deviation
# contains the first eigenmode), von Mises features (injective kernel), population data
CASE = ["mesh.kind='circle'", "mesh.resolution=400", f"teacher.density='1 + {A}*cos(theta) + {B}*sin(2*theta)'",
        "training.features='vonmises'", "training.data='population'", "training.lambda=1e-4",
        "training.width=256", "training.teacher_width=1024", "training.init='quantile'",
        "training.step_size=0.00390625", "training.t_end=12.0",
        "training.output_times=[0.5, 1.0, 2.0, 4.0, 8.0]", "output.progress=false"]


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = str(tmp_path_factory.mktemp("val")) if comm.rank == 0 else None
    out = os.path.join(comm.bcast(out, root=0), "v")
    summary = validate(load_config(None, CASE), out, comm)
    return out, summary


def test_distances_against_closed_forms(validated):
    out, summary = validated
    v = read_csv(os.path.join(out, "validation.csv"))
    np.testing.assert_allclose(v["t"], [0, 0.5, 1, 2, 4, 8, 12])
    # t = 0, ρ₀ uniform.  With 2|sin(t/2)| = 4/π − (8/π)Σ_n cos(nt)/(4n² − 1) and the Fourier
    # moduli |ĉ₁| = a/2, |ĉ₂| = b/2 of σ: MMD²(uniform, σ) = (8/π)Σ_n |ĉ_n|²/(4n² − 1)
    # and E|X − X'| = 4/π − (8/π)Σ_n |ĉ_n|²/(4n² − 1) under σ (= 4/π under the uniform law)
    s2 = 8 / math.pi * ((A / 2) ** 2 / 3 + (B / 2) ** 2 / 15)
    assert abs(v["mmd_pde_sigma"][0] - math.sqrt(s2)) < 1e-4
    assert abs(v["floor_pde"][0] - math.sqrt(4 / math.pi / 256)) < 1e-6
    assert abs(v["floor_sigma"][0] - math.sqrt((4 / math.pi - s2) / 256)) < 1e-6
    # M equispaced (quantile) particles against the uniform law: only the modes n = kM
    # differ, MMD² = (8/π)Σ_k 1/(4k²M² − 1) ≈ π/(3M²), far below the i.i.d. floor
    assert abs(v["mmd_particles_pde"][0] / (math.sqrt(math.pi / 3) / 256) - 1) < 0.05
    # particles and PDE both relax to σ; the particles stay much closer to the PDE than to σ
    # at early times
    assert np.all(np.diff(v["mmd_pde_sigma"]) < 0)
    assert np.all(v["mmd_particles_pde"][:3] < 0.1 * v["mmd_particles_sigma"][:3])
    # W₂ on the circle: the same ordering; L¹ between PDE and σ at t = 0 is ∫|a cos θ + b sin 2θ|/2π
    assert np.all(v["w2_particles_pde"][:3] < 0.1 * v["w2_pde_sigma"][:3])
    l1 = integrate.quad(lambda t: abs(A * np.cos(t) + B * np.sin(2 * t)), 0, 2 * np.pi, limit=200)[0]
    assert abs(v["l1_pde_sigma"][0] - l1 / (2 * np.pi)) < 1e-3
    # F(ρ_PDE) = ½∫σ²/ρ − ½ at t = 0 (ρ uniform): ½·2π∫σ² − ½ = (a² + b²)/4
    assert abs(v["energy_pde"][0] - (A * A + B * B) / 4) < 1e-4


def test_predicted_and_observed_pde_rates_agree(validated):
    """F ~ e^{−2κt}, κ the weighted Poincaré constant (SLEPc): within 3 %."""
    _, summary = validated
    assert summary["kappa"] == summary["kappas"][0] and np.all(np.diff(summary["kappas"]) >= 0)
    assert 0.5 < summary["kappa"] < 1.0  # below the uniform law's κ = 1: σ is less spread
    for name in ("F (PDE, diagnostics)", "L1(PDE, sigma) (diagnostics)"):
        r = summary["rates"][name]
        assert r["rate"] is not None and abs(r["ratio"] - 1) < 0.03, (name, r)


def test_files_and_paraview_series(validated, comm):
    out, summary = validated
    if comm.rank != 0:
        return
    for name in ("report.md", "validation.csv", "validation.npz", "config.toml", "summary.json",
                 "pictures/distances.png", "pictures/energy_rate.png", "pictures/snapshots.png",
                 "pde/rho.bp", "particles/particles.npz"):
        assert os.path.exists(os.path.join(out, name)), name
    report = open(os.path.join(out, "report.md")).read()
    assert "κ = " in report and "| t | mmd_particles_pde |" in report
    z = np.load(os.path.join(out, "validation.npz"))
    assert z["rho_pde"].shape == z["rho_particles"].shape == (7, 400)
    w = 2 * np.sin(np.pi / 400)  # the mesh: a regular 400-gon on the unit circle (P1 mass = w Σ ρ_i)
    np.testing.assert_allclose(z["rho_pde"].sum(1) * w, 1, rtol=1e-12)
    np.testing.assert_allclose(z["rho_particles"].sum(1) * w, 1, rtol=1e-12)
    import adios2

    with adios2.FileReader(os.path.join(out, "validation.bp")) as f:
        names = set(f.available_variables())
        assert {"rho_pde", "rho_particles", "sigma"} <= names
        assert f.available_variables()["rho_pde"]["AvailableStepsCount"] == "7"
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["status"] == "completed" and s["width"] == 256


def test_reuse_of_finished_runs_gives_the_same_table(validated, comm, mpi_tmp_path):
    out, _ = validated
    again = os.path.join(mpi_tmp_path, "again")
    validate(None, again, comm, pde_dir=os.path.join(out, "pde"), particles_dir=os.path.join(out, "particles"),
             pictures=False)
    a, b = read_csv(os.path.join(out, "validation.csv")), read_csv(os.path.join(again, "validation.csv"))
    # MMD = (2E|X−Y| − E|X−X'| − E|Y−Y'|)^½ cancels O(1) terms: a change in the order of the
    # parallel sums moves it by ~1e-16/MMD (1e-11 at MMD = 1e-5)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9)


def test_refusals_write_nothing(validated, comm, mpi_tmp_path):
    out, _ = validated
    target = os.path.join(mpi_tmp_path, "refused")
    cases = [
        ({"pde_dir": os.path.join(out, "particles"), "particles_dir": os.path.join(out, "particles")}, "--pde"),
        ({"pde_dir": os.path.join(out, "pde"), "particles_dir": os.path.join(out, "pde")}, "--particles"),
        ({"projection": "nearest"}, "--projection"),
        ({"bandwidth": -1.0}, "--bandwidth"),
    ]
    for kw, key in cases:
        with pytest.raises(ConfigError, match=key):
            validate(load_config(None, CASE), target, comm, **kw)
    # another σ than the reused particles were trained on
    other = load_config(None, CASE + ["teacher.density='1 + 0.3*cos(theta)'"])
    with pytest.raises(ConfigError, match="teacher.density"):
        validate(other, target, comm, pde_dir=None, particles_dir=os.path.join(out, "particles"))
    # a feature space the trainer does not support
    with pytest.raises(ConfigError, match="mesh.kind"):
        validate(load_config(None, ["mesh.kind='box'", "mesh.dim=1", "output.progress=false"]), target, comm)
    assert not os.path.exists(target)


def test_fit_rate_recovers_an_exponential():
    t = np.linspace(0, 20, 400)
    y = 3.0 * np.exp(-1.7 * t) + 1e-15  # reaches the floor 1e-12 at t ≈ 16.9: later points are noise
    r = fit_rate(t, y)
    assert abs(r["rate"] - 1.7) < 1e-3 and 16.5 < r["t_to"] < 17.0
    assert fit_rate([0, 1], [1, 1]) is None  # t > 0 leaves one point


@pytest.mark.serial
def test_cli_exit_codes(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    cmd = [sys.executable, "-m", "ufd_solver", "validate"]
    r = subprocess.run(cmd + ["--set", "mesh.kind='box'", "-o", str(tmp_path / "x"), "-q"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "mesh.kind" in r.stderr and not (tmp_path / "x").exists()
    r = subprocess.run(cmd + ["--pde", str(tmp_path), "--particles", str(tmp_path), "-o", str(tmp_path / "y")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "--pde" in r.stderr and not (tmp_path / "y").exists()
