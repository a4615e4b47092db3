"""Observed orders of convergence against a manufactured solution.

On the flat torus [−π, π)^d (periodic, through dolfinx_mpc) take

    σ(x)      = Π_i (1 + ½ cos x_i) / (2π)^d
    ρ_ex(t,x) = σ(x) (1 + ½ e^{−t} Π_i sin x_i)

and add the source f = ∂_t ρ_ex + ∇·(σ ∇(σ/ρ_ex)) (computed symbolically by
UFL) to the equation, so ρ_ex solves it exactly.  Expected orders: 2 in
space for P1 (lumped), 2 in time for BDF2 and 1 for backward Euler.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mpi4py import MPI

import ufl
from ufd_solver.config import SolverConfig
from ufd_solver.meshes import box_mesh
from ufd_solver.problem import UFDProblem
from ufd_solver.timestepping import TimeIntegrator

L = 2 * np.pi
T = 0.5


def sigma_np(pts):
    return np.prod(1 + 0.5 * np.cos(pts), axis=1) / (2 * np.pi) ** pts.shape[1]


def rho_exact_np(pts, t):
    return sigma_np(pts) * (1 + 0.5 * np.exp(-t) * np.prod(np.sin(pts), axis=1))


def source(mesh, t):
    x = ufl.SpatialCoordinate(mesh)
    d = mesh.geometry.dim
    s = 1.0
    prod_sin = 1.0
    for i in range(d):
        s = s * (1 + 0.5 * ufl.cos(x[i]))
        prod_sin = prod_sin * ufl.sin(x[i])
    s = s / (2 * np.pi) ** d
    rho = s * (1 + 0.5 * ufl.exp(-t) * prod_sin)
    drho_dt = -s * 0.5 * ufl.exp(-t) * prod_sin
    return drho_dt + ufl.div(s * ufl.grad(s / rho))


def l2_error(problem, t):
    """Discrete L² error of ρ at the dofs (global; lumped weights for P1)."""
    n = problem.n_owned
    e = problem.rho()[:n] - rho_exact_np(problem.points[:n], t)
    loc = float(np.sum(problem._weights * e * e))
    return np.sqrt(problem.comm.allreduce(loc, op=MPI.SUM))


def solve(comm, dim, n, scheme, dt, adaptive=False, rtol=1e-3, degree=1):
    mesh = box_mesh(comm, dim, n, L)
    box = ([-L / 2] * dim, [L / 2] * dim)
    problem = UFDProblem(mesh, sigma_np, lambda p: rho_exact_np(p, 0.0), periodic=box,
                         source=source, degree=degree)
    cfg = dataclasses.replace(SolverConfig(), scheme=scheme, t_end=T, output_times=(0.0, T),
                              dt0=dt, adaptive=adaptive, rtol=rtol, atol=1e-10)
    TimeIntegrator(problem, cfg).run()
    err = l2_error(problem, T)
    problem.destroy()
    return err


def rates(errors):
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


def test_space_order_p1_1d(comm):
    errs = [solve(comm, 1, n, "bdf2", T / 500) for n in (16, 32, 64, 128)]
    r = rates(errs)
    assert np.all(r > 1.85), (errs, r)
    assert errs[-1] < 1e-4


def test_space_order_p1_2d_torus(comm):
    errs = [solve(comm, 2, n, "bdf2", T / 16) for n in (8, 16, 32)]
    r = rates(errs)
    assert np.all(r > 1.8), (errs, r)


@pytest.mark.parametrize("scheme,order", [("bdf2", 2.0), ("be", 1.0)])
def test_time_order(comm, scheme, order):
    errs = [solve(comm, 1, 512, scheme, T / m) for m in (4, 8, 16, 32)]
    r = rates(errs)
    assert np.all(np.abs(r - order) < 0.25), (errs, r)


def test_adaptive_error_control_meets_tolerance(comm):
    """Tighter rtol gives a smaller error, roughly in proportion (BDF2: err ~ rtol)."""
    e_loose = solve(comm, 1, 512, "bdf2", 1e-3, adaptive=True, rtol=1e-3)
    e_tight = solve(comm, 1, 512, "bdf2", 1e-3, adaptive=True, rtol=1e-5)
    assert e_tight < 0.2 * e_loose


def test_space_order_p2_1d(comm):
    """P2 (full quadrature, no lumping): third order in the discrete L² norm at the dofs."""
    errs = [solve(comm, 1, n, "bdf2", 1e-4, adaptive=True, rtol=1e-9, degree=2) for n in (8, 16, 32)]
    r = rates(errs)
    assert np.all(r > 2.7), (errs, r)
