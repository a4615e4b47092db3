"""The structured population path for ReLU features on the circle (relu_circle_pop.py):
exact products, the Fourier-preconditioned CG, agreement with the dense path, and
reproducibility across BLAS thread counts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ufd_solver.densities import parse_density
from ufd_solver.geometry import make_space
from ufd_solver.training.features import ReLU
from ufd_solver.training.objective import Population
from ufd_solver.training.population import teacher_term
from ufd_solver.training.relu_circle_pop import FourierPCG, SortedCircle, fourier_coefficients, tail_bound

CIRCLE = make_space("circle")
F = ReLU(CIRCLE)
SIGMA = parse_density({"mixture": "vonmises", "centers": [[1.0, 0.0], [-0.3, 0.9]], "kappa": 8.0}, "s")


def angles(M, rng):
    """Clustered angles with exact ties and pairs exactly π apart (the window edges)."""
    a = np.concatenate([rng.normal(0.3, 0.05, M // 2), rng.uniform(-np.pi, np.pi, M - M // 2)])
    a = np.mod(a + np.pi, 2 * np.pi) - np.pi
    a[3] = a[4]
    a[5] = a[6] - np.pi if a[6] > 0 else a[6] + np.pi
    a[7] = -np.pi
    return a


def points(a):
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_structured_products_match_dense():
    rng = np.random.default_rng(0)
    a = angles(300, rng)
    th = points(a)
    circ = SortedCircle(th)
    o = circ.order
    G = F.kernel(th, th)
    np.testing.assert_allclose(circ.dense_gram(), G[np.ix_(o, o)], rtol=0, atol=1e-13)
    v = rng.standard_normal(300)
    Gv, g = circ.matvec_and_grad(v[o])
    np.testing.assert_allclose(Gv, (G @ v)[o], rtol=0, atol=1e-13 * np.abs(G @ v).max())
    # Σ_l v_l (π − α_jl)/(2π) θ_l with α from the angles (arccos loses digits near α = 0)
    w = np.abs(np.pi - np.abs(np.subtract.outer(a, a))) / (2 * np.pi)
    ref = (w * v[None, :]) @ th
    np.testing.assert_allclose(g, ref[o], rtol=0, atol=1e-13 * np.abs(ref).max())
    # and the feature's own (arccos-based) gradient to its accuracy
    kg = F.kernel_grad_dot(th, th, np.broadcast_to(v, (300, 300)))
    np.testing.assert_allclose(g, kg[o], rtol=0, atol=1e-8 * np.abs(kg).max())


def test_fourier_series_of_the_kernel():
    d = np.linspace(-np.pi, np.pi, 41)
    K = 4000
    a = fourier_coefficients(K)
    series = a[0] + 2 * (a[1:, None] * np.cos(np.outer(np.arange(1, K + 1), d))).sum(0)
    exact = F.kernel(points(d), np.array([[1.0, 0.0]]))[:, 0]
    assert np.abs(series - exact).max() <= tail_bound(K)
    assert np.abs(series - exact).max() < 1e-10
    assert tail_bound(40) >= 2 * a[41:].sum()


@pytest.mark.parametrize("lam", [1e-2, 1e-3, 1e-4, 1e-5])
def test_fourier_pcg_normal_equations(lam):
    rng = np.random.default_rng(1)
    M = 600
    th = points(angles(M, rng))
    G = F.kernel(th, th)
    s = FourierPCG(lam)
    for _ in range(3):
        rhs = rng.standard_normal(M)
        c = s(SortedCircle(th), rhs)
        assert np.linalg.norm(G @ c / M + lam * c - rhs) <= 1e-11 * np.linalg.norm(rhs)
    assert s.refactors == 0
    assert s.iterations <= 3 * 6


def test_fourier_pcg_small_width_falls_back_to_cholesky():
    rng = np.random.default_rng(2)
    th = points(angles(20, rng))
    s = FourierPCG(1e-3)
    rhs = rng.standard_normal(20)
    c = s(SortedCircle(th), rhs)
    G = F.kernel(th, th)
    assert s.refactors == 1
    assert np.linalg.norm(G @ c / 20 + 1e-3 * c - rhs) <= 1e-12 * np.linalg.norm(rhs)


@pytest.mark.parametrize("solver", ["cholesky", "pcg"])
@pytest.mark.parametrize("c0", [0.0, 1.0])
def test_population_circle_path_equals_dense_formulas(solver, c0):
    rng = np.random.default_rng(3)
    M, lam = 250, 1e-3
    th = points(angles(M, rng))
    term = teacher_term(F, SIGMA, CIRCLE)
    obj = Population(F, term, lam, c0, solver=solver)
    s = obj.varpro(th)
    G = F.kernel(th, th)
    b, db = term(th)
    c = np.linalg.solve(G / M + lam * np.eye(M), b + lam * c0)
    np.testing.assert_allclose(s.c, c, rtol=0, atol=1e-9 * np.abs(c).max())
    Gc = G @ s.c / M
    risk = float(s.c @ Gc) / M - 2 * float(s.c @ b) / M + term.yy
    assert abs(s.risk - risk) <= 1e-12 * term.yy
    grad = F.kernel_grad_dot(th, th, np.broadcast_to(s.c / M, (M, M))) - db
    np.testing.assert_allclose(s.grad, grad, rtol=0, atol=1e-8 * np.abs(grad).max())
    np.testing.assert_allclose(s.h, Gc - b, rtol=0, atol=1e-13 * np.abs(Gc).max())
    f = obj.fixed(th, s.c)  # the 2TS evaluation shares the products
    np.testing.assert_allclose(f.grad, s.grad, rtol=0, atol=0)


_CHILD = r"""
import json, sys
import numpy as np
from ufd_solver.config import load_config
from ufd_solver.training.runner import Problem
from ufd_solver.training.trainer import train_loop
cfg = load_config(None, ["training.width=512", "training.data=" + sys.argv[1], "training.samples=1024",
                         "training.teacher_width=512", "training.solver=" + sys.argv[2],
                         "training.lambda=1e-3", "output.progress=false"])
p = Problem(cfg)
p.build()
tau = cfg.training.step_size
h = train_loop(p.objective, p.space, p.theta0, lam=cfg.training.lam, tau=tau,
               output_times=[0.0, 20 * tau], t_end=20 * tau)
print(json.dumps({"theta": h.theta[-1].tolist(), "c": h.c[-1].tolist(), "loss": h.loss}))
"""


@pytest.mark.parametrize("data,solver", [("population", "pcg"), ("population", "cholesky"),
                                         ("sampled", "pcg")])
def test_same_numbers_with_one_and_two_blas_threads(data, solver):
    out = {}
    for n in ("1", "2"):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OMPI_", "PMIX_", "PMI_", "HYDRA_", "MPI_"))}
        env.update(OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n)
        res = subprocess.run([sys.executable, "-c", _CHILD, data, solver], env=env, capture_output=True,
                             text=True, timeout=300, check=True)
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("theta", "c", "loss"):
        a, b = np.array(out["1"][key]), np.array(out["2"][key])
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(a).max())
