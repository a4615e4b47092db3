"""Energy MMD, L¹/L²/χ²/Hellinger and W₂ on the circle against known values.

Independent expectations:
* MMD²(μ, μ) = 0; MMD²(δ_a, δ_b) = 2‖a − b‖;
* E‖X − X'‖ = 4/π on the uniform unit circle, 4/3 on the uniform unit sphere;
* for any cloud on the unit circle E_Y‖x − Y‖ = 4/π (Y uniform), so
  MMD²(μ_M, U) = 4/π − (1/M²)Σ_ij‖x_i − x_j‖;
* with the Fourier series 2|sin(t/2)| = 4/π − (8/π)Σ_n cos(nt)/(4n² − 1),
  MMD² between (1 + a cos θ)/2π and (1 + b cos θ)/2π is 2(a − b)²/(3π);
* E MMD²(μ_M, ρ) = E‖X − X'‖/M for M i.i.d. draws (checked over repeats);
* L¹, L², χ², Hellinger against scipy quadrature in θ;
* W₂ on S¹: geodesic distance between point masses, linear programming
  (scipy.optimize.linprog) for small discrete measures, a rotated
  concentrated von Mises is W₂ = the rotation, and the closed form against
  the uniform measure W₂²/(2π)² = Var_t(F⁻¹(t) − t) (positions in turns).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special
from scipy.optimize import linprog

import dolfinx
import ufl
from mpi4py import MPI

from ufd_solver.distances import (chi2_divergence, energy_mean_distance, energy_mmd2, hellinger_distance,
                                  l1_distance, l2_distance, mmd_noise_floor, w2_circle)
from ufd_solver.geometry import make_space
from ufd_solver.meshes import box_mesh, circle_mesh, sphere_mesh

CIRCLE = make_space("circle")


def _density(mesh, fn, degree=1):
    """P``degree`` interpolant of fn(θ) on a circle mesh, normalised to unit mesh mass."""
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    u = dolfinx.fem.Function(V)
    u.interpolate(lambda x: fn(np.arctan2(x[1], x[0])))
    mass = mesh.comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(u * ufl.dx)), op=MPI.SUM)
    u.x.array[:] /= mass
    return u


def _cos_density(a):
    return lambda th: (1.0 + a * np.cos(th)) / (2 * np.pi)


# ---------------------------------------------------------------------------
# energy MMD
def test_mmd_identical_clouds_and_point_masses(comm):
    rng = np.random.default_rng(0)
    x = CIRCLE.angle_points(rng.uniform(-np.pi, np.pi, 40))
    assert abs(energy_mmd2(x, x, CIRCLE, comm)) < 1e-12
    a, b, c = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[-1.0, 0.0]])
    assert energy_mmd2(a, b, CIRCLE) == pytest.approx(2 * np.sqrt(2), rel=1e-14)
    # ½(δ_a + δ_c) against δ_b: 2·½(|a−b| + |c−b|) − ½|a−c|
    expected = (np.sqrt(2) + np.sqrt(2)) - 0.5 * 2.0
    assert energy_mmd2(np.vstack([a, c]), b, CIRCLE, comm) == pytest.approx(expected, rel=1e-14)
    # weights: (¾, ¼) on (a, c) against δ_b
    w_expected = 2 * (0.75 + 0.25) * np.sqrt(2) - 2 * 0.75 * 0.25 * 2.0
    got = energy_mmd2(np.vstack([a, c]), b, CIRCLE, comm, weights_a=[3.0, 1.0])
    assert got == pytest.approx(w_expected, rel=1e-14)


def test_torus_metrics():
    T = make_space("torus", 1, 4.0)
    a, b = np.array([[-1.9]]), np.array([[1.9]])
    assert energy_mmd2(a, b, T) == pytest.approx(2 * 0.2, rel=1e-12)  # shortest image
    chord = (4.0 / np.pi) * np.sin(np.pi * 0.2 / 4.0)
    assert energy_mmd2(a, b, T, torus_metric="chordal") == pytest.approx(2 * chord, rel=1e-12)


def test_mean_distance_closed_forms(comm):
    u = _density(circle_mesh(comm, 256), _cos_density(0.0))
    assert abs(energy_mean_distance(u, CIRCLE) - 4 / np.pi) < 1e-5
    assert mmd_noise_floor(u, 100, CIRCLE) == pytest.approx(4 / np.pi / 100, rel=1e-5)
    mesh = sphere_mesh(comm, 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    s = dolfinx.fem.Function(V)
    s.x.array[:] = 1.0
    s.x.array[:] /= comm.allreduce(dolfinx.fem.assemble_scalar(dolfinx.fem.form(s * ufl.dx)), op=MPI.SUM)
    assert abs(energy_mean_distance(s, make_space("sphere")) - 4 / 3) < 5e-5


def test_mmd_particles_against_uniform_density(comm):
    rng = np.random.default_rng(1)
    x = CIRCLE.angle_points(rng.vonmises(0.5, 2.0, 64))
    u = _density(circle_mesh(comm, 256), _cos_density(0.0))
    pair = np.linalg.norm(x[:, None] - x[None], axis=-1).mean()
    assert abs(energy_mmd2(x, u, CIRCLE, comm) - (4 / np.pi - pair)) < 1e-5


def test_mmd_between_densities_fourier(comm):
    mesh = circle_mesh(comm, 256)
    a, b = 0.5, -0.3
    ra, rb = _density(mesh, _cos_density(a)), _density(mesh, _cos_density(b))
    assert abs(energy_mmd2(ra, rb, CIRCLE) - 2 * (a - b) ** 2 / (3 * np.pi)) < 5e-5  # O(h²)
    assert abs(energy_mmd2(ra, ra, CIRCLE)) < 1e-12


def test_noise_floor_average(comm):
    """E MMD²(μ_M, ρ) = E|X − X'|/M: the mean over repeats within 4 standard errors."""
    mesh = circle_mesh(comm, 128)
    a = 0.5
    rho = _density(mesh, _cos_density(a))
    M, R = 40, 300
    floor = mmd_noise_floor(rho, M, CIRCLE)
    # closed form: E|X − X'| = 4/π − 2a²/(3π)
    assert floor == pytest.approx((4 / np.pi - 2 * a * a / (3 * np.pi)) / M, rel=1e-4)
    rng = np.random.default_rng(12345)
    vals = []
    for _ in range(R):
        th = rng.uniform(-np.pi, np.pi, 4 * M)
        keep = rng.uniform(0, 1 + a, th.size) < 1 + a * np.cos(th)  # rejection sampling
        vals.append(energy_mmd2(th[keep][:M], rho, CIRCLE))
        assert keep.sum() >= M
    vals = np.array(vals)
    se = vals.std(ddof=1) / np.sqrt(R)
    assert abs(vals.mean() - floor) < 4 * se
    assert se < 0.1 * floor


# ---------------------------------------------------------------------------
# distances between densities
def test_density_distances_against_scipy(comm):
    mesh = circle_mesh(comm, 512)
    f = lambda th: (1 + 0.5 * np.cos(th)) / (2 * np.pi)  # noqa: E731
    g = lambda th: (1 + 0.4 * np.sin(th) + 0.2 * np.cos(2 * th)) / (2 * np.pi)  # noqa: E731
    rf, rg = _density(mesh, f, 2), _density(mesh, g, 2)
    q = lambda h: integrate.quad(h, -np.pi, np.pi, limit=200, epsabs=1e-13)[0]  # noqa: E731
    assert l1_distance(rf, rg) == pytest.approx(q(lambda t: abs(f(t) - g(t))), rel=2e-4)
    assert l2_distance(rf, rg) == pytest.approx(np.sqrt(q(lambda t: (f(t) - g(t)) ** 2)), rel=2e-4)
    assert chi2_divergence(rf, rg) == pytest.approx(q(lambda t: (f(t) - g(t)) ** 2 / f(t)), rel=2e-4)
    h2 = 0.5 * q(lambda t: (np.sqrt(f(t)) - np.sqrt(g(t))) ** 2)
    assert hellinger_distance(rf, rg) == pytest.approx(np.sqrt(h2), rel=2e-4)
    assert l1_distance(rf, rf) == 0.0 and hellinger_distance(rg, rg) == 0.0


def test_density_distances_on_interval(comm):
    """Exact geometry (no polygon): a tighter check on the no-flux interval [−2, 2]."""
    mesh = box_mesh(comm, 1, 400, 4.0)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2))
    f = lambda x: 0.25 + 0.1 * np.sin(np.pi * x / 2)  # noqa: E731  (unit mass on [−2, 2])
    g = lambda x: 0.25 + 0.05 * np.cos(np.pi * x / 4)  # noqa: E731
    rf, rg = dolfinx.fem.Function(V), dolfinx.fem.Function(V)
    rf.interpolate(lambda x: f(x[0]))
    rg.interpolate(lambda x: g(x[0]))
    q = lambda h: integrate.quad(h, -2, 2, limit=200, epsabs=1e-13)[0]  # noqa: E731
    assert chi2_divergence(rf, rg) == pytest.approx(q(lambda t: (f(t) - g(t)) ** 2 / f(t)), rel=1e-7)
    assert l1_distance(rf, rg) == pytest.approx(q(lambda t: abs(f(t) - g(t))), rel=1e-5)


# ---------------------------------------------------------------------------
# W₂ on the circle
def _w2_lp(x, a, y, b):
    d = np.abs(x[:, None] - y[None, :]) % (2 * np.pi)
    cost = np.minimum(d, 2 * np.pi - d) ** 2
    m, n = len(x), len(y)
    rows = [np.kron(np.eye(m)[i], np.ones(n)) for i in range(m)]
    cols = [np.kron(np.ones(m), np.eye(n)[j]) for j in range(n)]
    res = linprog(cost.ravel(), A_eq=np.array(rows + cols), b_eq=np.concatenate([a, b]),
                  bounds=(0, None), method="highs")
    return np.sqrt(res.fun)


def test_w2_point_masses_and_lp():
    assert w2_circle([0.3], [3.0]) == pytest.approx(2.7, rel=1e-13)
    assert w2_circle([0.3], [5.5]) == pytest.approx(2 * np.pi - 5.2, rel=1e-13)
    assert w2_circle(np.array([[1.0, 0.0]]), np.array([[0.0, -1.0]])) == pytest.approx(np.pi / 2, rel=1e-13)
    rng = np.random.default_rng(7)
    for _ in range(12):
        m, n = rng.integers(1, 7, 2)
        x, y = rng.uniform(-np.pi, np.pi, m), rng.uniform(0, 2 * np.pi, n)
        a, b = rng.uniform(0.1, 1, m), rng.uniform(0.1, 1, n)
        a, b = a / a.sum(), b / b.sum()
        assert w2_circle((x, a), (y, b)) == pytest.approx(_w2_lp(x, a, y, b), rel=1e-10, abs=1e-12)


def test_w2_rotations():
    vm = lambda mu, k: (lambda th: np.exp(k * (np.cos(th - mu) - 1)))  # noqa: E731
    # concentrated von Mises (tails e^{−2κ} ≈ 1e−35): the rotation is optimal;
    # callables are binned on 2¹⁴ cells (error O(h²), h = 2π/2¹⁴ ≈ 4e−4)
    for shift in (0.3, 0.7):
        assert w2_circle(vm(0.3, 40.0), vm(0.3 + shift, 40.0)) == pytest.approx(shift, rel=1e-8)
    # for a large rotation the rigid rotation is *not* optimal on the circle: a cyclic
    # shift δ of the coupling gains 2φδ and costs ≈ δ·(length of the low-density gap)²,
    # so the far tails go the other way round once the gap is shorter than (2φ)^{1/2}
    # turns.  Converged value (independent of the grid and the cut): 2 − 7.82e−6.
    w = w2_circle(vm(0.3, 40.0), vm(2.3, 40.0))
    assert 2.0 - 1e-5 < w < 2.0 - 5e-6
    # a cloud and its rotated copy, across the cut point
    rng = np.random.default_rng(3)
    th = rng.vonmises(3.0, 30.0, 500)
    assert w2_circle(th, th + 0.5) == pytest.approx(0.5, rel=1e-12)
    # the uniform measure is rotation invariant
    assert w2_circle(lambda t: np.ones_like(t), lambda t: np.ones_like(t)) < 1e-12


def _w2_to_uniform_closed_form(f):
    """2π (Var_t(F⁻¹(t) − t))^{1/2}, positions s ∈ [0, 1) in turns: m2 − 2E[sF] + 1/3 − (m1 − ½)²."""
    dens = lambda s: 2 * np.pi * f(2 * np.pi * s)  # noqa: E731
    z = integrate.quad(dens, 0, 1, epsabs=1e-14)[0]
    F = lambda s: integrate.quad(dens, 0, s, epsabs=1e-14)[0] / z  # noqa: E731
    m1 = integrate.quad(lambda s: s * dens(s), 0, 1, epsabs=1e-14)[0] / z
    m2 = integrate.quad(lambda s: s * s * dens(s), 0, 1, epsabs=1e-14)[0] / z
    sF = integrate.quad(lambda s: s * F(s) * dens(s), 0, 1, epsabs=1e-13)[0] / z
    return 2 * np.pi * np.sqrt(m2 - 2 * sF + 1 / 3 - (m1 - 0.5) ** 2)


def test_w2_against_uniform_closed_form(comm):
    f = lambda th: np.exp(2.0 * np.cos(th - 1.0)) / (2 * np.pi * special.i0(2.0))  # noqa: E731
    expected = _w2_to_uniform_closed_form(f)
    assert w2_circle(f, lambda t: np.ones_like(t)) == pytest.approx(expected, rel=1e-6)
    # the same with the density as a P1 Function on a circle mesh (gathered over the ranks)
    rho = _density(circle_mesh(comm, 512), f)
    assert w2_circle(rho, lambda t: np.ones_like(t)) == pytest.approx(expected, rel=1e-4)
    # a histogram-type (DG0) density, and a mesh density against its own rotation
    assert w2_circle(rho, rho) < 1e-10
