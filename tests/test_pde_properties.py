"""Conservation, positivity, energy decay, equilibrium and linear decay rates.

Expectations are independent of the code:
* mass ∫ρ is conserved (no boundary / periodic / no-flux wall);
* ρ > 0 for t > 0, even from ρ₀ vanishing on half the circle;
* F(ρ) = ½∫σ²/ρ − ½ never increases;
* ρ = σ is stationary;
* near equilibrium ε = ρ/σ − 1 decays like e^{−κt} with κ the first non-zero
  eigenvalue of −Δ for uniform σ: k² on the unit circle, l(l+1) = 2 on the
  unit sphere, (2π/L)² on the flat torus of side L.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from ufd_solver.config import load_config
from ufd_solver.run import build_problem
from ufd_solver.timestepping import TimeIntegrator


def integrate(overrides, comm, record=True):
    cfg = load_config(data={}, overrides=overrides)
    problem = build_problem(cfg, comm)
    rows, outputs = [], {}

    def on_step(rec):
        rows.append(rec.row())

    def on_output(t):
        outputs[t] = problem.rho().copy()

    stats = TimeIntegrator(problem, cfg.solver).run(on_step=on_step, on_output=on_output)
    return problem, rows, outputs, stats


def amplitude(problem, rho, mode):
    """Global Σ m_i (ρ_i/σ_i − 1) mode_i / Σ m_i mode_i² over owned dofs."""
    n = problem.n_owned
    m = problem._weights
    eps = rho[:n] / problem.sigma.x.array[:n] - 1.0
    num = float(np.sum(m * eps * mode[:n]))
    den = float(np.sum(m * mode[:n] ** 2))
    num, den = problem.comm.allreduce(np.array([num, den]), op=MPI.SUM)
    return num / den


def test_mass_positivity_energy_from_vanishing_start(comm):
    problem, rows, _, _ = integrate([
        "mesh.resolution=400", "teacher.density={preset='paper-circle', gamma=100}",
        "initial.density='maximum(cos(theta), 0)'", "solver.t_end=10"], comm)
    mass = np.array([r["mass"] for r in rows])
    energy = np.array([r["energy"] for r in rows])
    assert np.max(np.abs(mass - 1.0)) < 1e-12
    assert min(r["min_rho"] for r in rows) > 0.0
    # BDF2 is not provably energy-stable: monotone while F is above the level
    # that the local error tolerance (rtol = 1e-3 on ρ) resolves
    resolved = energy[:-1] > 1e-6
    assert np.all(np.diff(energy)[resolved] <= 0.0)
    assert energy[-1] < 1e-6 * energy[0]
    problem.destroy()


@pytest.mark.parametrize("scheme", ["be", "bdf2"])
def test_energy_monotone_and_dissipation_sign(comm, scheme):
    problem, rows, _, _ = integrate([
        "mesh.resolution=300", "teacher.density={preset='paper-circle', gamma=10}",
        f"solver.scheme='{scheme}'", "solver.t_end=5"], comm)
    energy = np.array([r["energy"] for r in rows])
    if scheme == "be":  # provably monotone on meshes without obtuse angles
        assert np.all(np.diff(energy) <= 1e-14)
    else:
        assert np.all(np.diff(energy)[energy[:-1] > 1e-6] <= 0.0)
    assert all(r["dissipation"] >= 0 for r in rows)
    # dF/dt = −D: the energy drop over a step matches ∫D dt (trapezoid) to O(dt²)
    t = np.array([r["t"] for r in rows])
    diss = np.array([r["dissipation"] for r in rows])
    late = t > 0.5
    dF = -np.diff(energy)[late[1:]]
    dD = (0.5 * (diss[1:] + diss[:-1]) * np.diff(t))[late[1:]]
    assert np.allclose(dF.sum(), dD.sum(), rtol=0.05)
    problem.destroy()


def test_equilibrium_is_stationary(comm):
    sigma = "{mixture='vonmises', centers=[0.0, 2.0], kappa=[4.0, 1.0], weights=[2.0, 1.0]}"
    problem, rows, _, stats = integrate([
        "mesh.resolution=200", f"teacher.density={sigma}", f"initial.density={sigma}",
        "solver.t_end=100"], comm)
    # round-off only: Δt·K p with Δt up to ~10² and K's row sums zero to ε‖K‖
    assert max(r["l1_to_sigma"] for r in rows) < 5e-12
    assert stats["steps"] < 40  # dt grows geometrically when nothing moves
    problem.destroy()


@pytest.mark.parametrize("k", [1, 2])
def test_circle_linear_decay_rate(comm, k):
    problem, _, out, _ = integrate([
        "mesh.resolution=400", "teacher.density='uniform'",
        f"initial.density='1 + 1e-4*cos({k}*theta)'", "solver.t_end=1.0",
        "solver.output_times=[0.5]", "solver.rtol=1e-10", "solver.atol=1e-14"], comm)
    theta = np.arctan2(problem.points[:, 1], problem.points[:, 0])
    mode = np.cos(k * theta)
    a1, a2 = amplitude(problem, out[0.5], mode), amplitude(problem, out[1.0], mode)
    rate = np.log(a1 / a2) / 0.5
    assert rate == pytest.approx(k**2, rel=5e-3)
    problem.destroy()


def test_sphere_linear_decay_rate(comm):
    problem, rows, out, _ = integrate([
        "mesh.kind='sphere'", "mesh.resolution=4", "teacher.density='uniform'",
        "initial.density='1 + 1e-4*z'", "solver.t_end=0.5", "solver.output_times=[0.25]",
        "solver.rtol=1e-10", "solver.atol=1e-14"], comm)
    mode = problem.points[:, 2]
    rate = np.log(amplitude(problem, out[0.25], mode) / amplitude(problem, out[0.5], mode)) / 0.25
    assert rate == pytest.approx(2.0, rel=1e-2)
    problem.destroy()


def test_torus_linear_decay_rate_and_energy_rate(comm):
    L = 4.0
    problem, rows, out, _ = integrate([
        "mesh.kind='torus'", "mesh.dim=2", "mesh.resolution=32", f"mesh.length={L}",
        "teacher.density='uniform'", "initial.density='1 + 1e-3*cos(pi*x/2)*cos(pi*y/2)'",
        "solver.t_end=0.4", "solver.output_times=[0.2]", "solver.rtol=1e-10", "solver.atol=1e-14"], comm)
    kappa = 2 * (2 * np.pi / L) ** 2  # |k|² with k = (2π/L)(1, 1)
    mode = np.cos(np.pi * problem.points[:, 0] / 2) * np.cos(np.pi * problem.points[:, 1] / 2)
    rate = np.log(amplitude(problem, out[0.2], mode) / amplitude(problem, out[0.4], mode)) / 0.2
    assert rate == pytest.approx(kappa, rel=2e-2)
    # F ~ e^{−2κt} in the linear regime
    t = np.array([r["t"] for r in rows])
    F = np.array([r["energy"] for r in rows])
    sel = t > 0.05
    slope = np.polyfit(t[sel], np.log(F[sel]), 1)[0]
    assert -slope == pytest.approx(2 * kappa, rel=3e-2)
    problem.destroy()


def test_box_no_flux_conserves_mass(comm):
    problem, rows, _, _ = integrate([
        "mesh.kind='box'", "mesh.dim=2", "mesh.resolution=16", "teacher.density='1 + 0.25*x'",
        "initial.density='exp(-4*((x-1)**2 + y**2))'", "solver.t_end=2"], comm)
    mass = np.array([r["mass"] for r in rows])
    assert np.max(np.abs(mass - 1)) < 1e-12
    assert rows[-1]["l1_to_sigma"] < 0.1 * rows[0]["l1_to_sigma"]
    problem.destroy()


def test_serial_equals_parallel(comm, mpi_tmp_path):
    """Diagnostics on all ranks of COMM_WORLD equal a COMM_SELF solve (mpirun -n ≥ 2)."""
    if comm.size == 1:
        pytest.skip("needs mpirun -n 2")
    for overrides in (
        ["mesh.resolution=300", "solver.t_end=4"],
        ["mesh.kind='sphere'", "mesh.resolution=3", "teacher.density='1 + 0.8*z'", "solver.t_end=2"],
        ["mesh.kind='torus'", "mesh.resolution=12", "teacher.density='1 + 0.8*sin(pi*x/2)'",
         "solver.t_end=2"],
    ):
        par = integrate(overrides, comm)[1]
        ser = integrate(overrides, MPI.COMM_SELF)[1]
        assert len(par) == len(ser)
        for key in ("t", "dt", "mass", "energy", "dissipation", "l1_to_sigma", "min_rho"):
            a = np.array([r[key] for r in par])
            b = np.array([r[key] for r in ser])
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{overrides} {key}")
