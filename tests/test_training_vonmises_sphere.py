"""The exact spherical-harmonic path for population von Mises features on S²
(ufd_solver/training/vonmises_sphere_pop.py) against the dense closed form sinh(r)/r."""

import numpy as np
import pytest
from scipy import special

from ufd_solver.densities import parse_density
from ufd_solver.geometry import make_space
from ufd_solver.training.features import VonMises
from ufd_solver.training.grids import quadrature
from ufd_solver.training.objective import Population
from ufd_solver.training.population import QuadratureTerm, teacher_term
from ufd_solver.training.trainer import train_loop
from ufd_solver.training.vonmises_sphere_pop import HarmonicSphereTerm, bessel_weights

SPHERE = make_space("sphere")
SIGMA = parse_density({"mixture": "vonmises", "centers": [[0, 0, 1.0], [0.8, 0.6, 0]], "kappa": [4.0, 2.0],
                       "weights": [1.0, 0.5]}, "teacher.density")


def points(M, seed):
    th = SPHERE.project(np.random.default_rng(seed).standard_normal((M, 3)))
    th[:4] = [[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [-1.0, 0, 0]]  # poles, antipodes, coincident
    return th


def tangential(g, th):
    return g - (g * th).sum(1, keepdims=True) * th


def test_bessel_weights():
    for kappa in (0.5, 2.0, 4.0, 8.0):
        il = bessel_weights(kappa)
        assert abs(il[0] - np.sinh(kappa) / kappa) < 1e-14 * il[0]
        assert abs(il[1] - (kappa * np.cosh(kappa) - np.sinh(kappa)) / kappa**2) < 1e-13 * il[1]
        L = il.size - 1
        # kept degrees pass the cut, the next one does not
        assert (2 * L + 1) * il[L] ** 2 >= 1e-18 * il[0] ** 2
        nxt = special.spherical_in(L + 1, kappa)
        assert (2 * L + 3) * nxt**2 < 1e-18 * il[0] ** 2
        # Σ (2l + 1) i_l² = K(θ, θ) = sinh(2κ)/(2κ): the dropped tail is round-off
        assert abs(((2 * np.arange(L + 1) + 1) * il**2).sum() - np.sinh(2 * kappa) / (2 * kappa)) < 1e-14 * np.sinh(
            2 * kappa) / (2 * kappa)
    assert bessel_weights(2.0).size == 13 and bessel_weights(4.0).size == 16


@pytest.mark.parametrize("kappa", [0.5, 2.0, 4.0, 8.0])
def test_harmonic_factor_equals_closed_form_kernel(kappa):
    f = VonMises(SPHERE, kappa)
    term = HarmonicSphereTerm(f, SIGMA, SPHERE, "teacher.density")
    assert term.ncols == (term.L + 1) ** 2
    th = points(300, 1)
    F, dF = term.features(th)
    K = f.kernel(th, th)
    assert np.abs(F @ F.T - K).max() <= 1e-13 * K.max()
    # θ-gradient: Σ_l W_jl ∇_θ K(θ_j, θ_l) against the closed form, tangential parts
    W = np.random.default_rng(2).standard_normal((300, 300))
    closed = tangential(f.kernel_grad_dot(th, th, W), th)
    harm = tangential(np.stack([((d @ F.T) * W).sum(1) for d in dF], axis=1), th)
    assert np.abs(harm - closed).max() <= 1e-12 * np.abs(closed).max()
    # the columns are orthogonal on S²: ∫ F_a F_b = 4π i_l(κ)² δ_ab (real orthonormal harmonics)
    pts, w = quadrature(SPHERE, 2 * term.L + 2)
    Fq = term.features(pts, grad=False)[0]
    gram = Fq.T @ (Fq * w[:, None])
    expect = 4 * np.pi * bessel_weights(kappa)[term.lcol] ** 2
    assert np.abs(gram - np.diag(expect)).max() <= 1e-12 * expect.max()


def test_harmonic_teacher_term_equals_quadrature_term():
    for kappa in (1.3, 4.0):
        f = VonMises(SPHERE, kappa)
        term = teacher_term(f, SIGMA, SPHERE)
        assert isinstance(term, HarmonicSphereTerm)
        ref = QuadratureTerm(f, SIGMA, SPHERE, "teacher.density")  # Σ_q K(θ, z_q) p_q, closed-form K
        th = points(200, 3)
        b1, g1 = term(th)
        b2, g2 = ref(th)
        assert np.abs(b1 - b2).max() < 1e-13 * b2.max()
        assert np.abs(g1 - tangential(g2, th)).max() < 1e-12 * np.abs(g2).max()
        assert np.abs((g1 * th).sum(1)).max() < 1e-12 * np.abs(g1).max()  # tangent
        assert abs(term.yy - ref.yy) < 1e-13 * ref.yy


@pytest.mark.parametrize("M", [8, 1200])  # M < r and M ≫ r
@pytest.mark.parametrize("lam", [1e-1, 1e-4])
@pytest.mark.parametrize("c0", [0.0, 1.0])
def test_harmonic_path_equals_dense(M, lam, c0):
    """c solves the normal equations with the closed-form kernel to 1e-10, and c, the
    gradient, h, risk and loss equal the dense path's (VarPro and at a given c, 2TS)."""
    f = VonMises(SPHERE, 3.0)
    fast = Population(f, teacher_term(f, SIGMA, SPHERE), lam, c0)
    dense = Population(f, QuadratureTerm(f, SIGMA, SPHERE, "teacher.density"), lam, c0)
    assert fast.harmonic and not dense.harmonic
    th = points(M, 4)
    s1, s2 = fast.varpro(th), dense.varpro(th)
    b = dense.term(th)[0]
    G = f.kernel(th, th)
    res = G @ s1.c / M + lam * s1.c - (b + lam * c0)
    assert np.linalg.norm(res) <= 1e-10 * np.linalg.norm(b + lam * c0)
    np.testing.assert_allclose(s1.c, s2.c, rtol=0, atol=1e-8 * np.abs(s2.c).max())
    # grad = (1/M) Σ_l c_l ∇K(θ_j, θ_l) − ∇b(θ_j) cancels to O(λ): compare on the scale of ∇b
    scale = np.abs(dense.term(th)[1]).max()
    np.testing.assert_allclose(s1.grad, tangential(s2.grad, th), rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(s1.h, s2.h, rtol=0, atol=1e-10 * np.abs(b).max())
    assert abs(s1.risk - s2.risk) <= 1e-9 * dense.term.yy
    assert abs(s1.loss - s2.loss) <= 1e-9 * abs(s2.loss)
    c = np.random.default_rng(5).standard_normal(M)  # 2TS: the state at a given c
    t1, t2 = fast.fixed(th, c), dense.fixed(th, c)
    np.testing.assert_allclose(t1.grad, tangential(t2.grad, th), rtol=0, atol=1e-12 * np.abs(t2.grad).max())
    np.testing.assert_allclose(t1.h, t2.h, rtol=0, atol=1e-12 * np.abs(t2.h).max())
    assert abs(t1.risk - t2.risk) <= 1e-12 * t2.risk


def test_harmonic_trajectory_equals_dense():
    """A short VarPro training: both paths give the same particles to 1e-9."""
    f = VonMises(SPHERE, 2.0)
    th0 = points(60, 6)
    runs = []
    for term in (teacher_term(f, SIGMA, SPHERE), QuadratureTerm(f, SIGMA, SPHERE, "teacher.density")):
        obj = Population(f, term, 1e-3, 0.0)
        runs.append(train_loop(obj, SPHERE, th0, lam=1e-3, tau=2**-8, output_times=[0.0, 0.125], t_end=0.125))
    moved = np.abs(runs[0].theta[-1] - th0).max()
    assert moved > 1e-2
    np.testing.assert_allclose(runs[0].theta[-1], runs[1].theta[-1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(runs[0].c[-1], runs[1].c[-1], rtol=0, atol=1e-8 * np.abs(runs[1].c[-1]).max())
