"""VarPro ridge solves (normal equations), the fast ReLU-circle path, and the
population teacher term integrated against σ."""

import numpy as np
import pytest
from scipy import integrate

from ufd_solver.densities import parse_density
from ufd_solver.geometry import make_space
from ufd_solver.training.features import PeriodicGaussian, ReLU, VonMises
from ufd_solver.training.objective import Population, Sampled
from ufd_solver.training.population import CircleTerm, QuadratureTerm, TorusGaussianTerm, teacher_term
from ufd_solver.training.varpro import ridge_dual, ridge_primal

CIRCLE, SPHERE, TORUS = make_space("circle"), make_space("sphere"), make_space("torus", 2, 4.0)


def sampled_problem(feature, N, M, rng, c0=0.0, fast=True):
    sp = feature.space
    x = feature.sample_data(N, rng)
    teacher = sp.project(rng.standard_normal((40, sp.gdim)))
    y = feature.evaluate(teacher, x).mean(1)
    theta = sp.project(rng.standard_normal((M, sp.gdim)))
    return Sampled(feature, x, y, 1e-3, c0, fast=fast), theta


@pytest.mark.parametrize("N,M", [(400, 120), (120, 400)])  # primal and dual
@pytest.mark.parametrize("c0", [0.0, 1.0])
def test_varpro_weights_satisfy_normal_equations(N, M, c0):
    rng = np.random.default_rng(0)
    obj, theta = sampled_problem(VonMises(SPHERE, 1.5), N, M, rng, c0)
    c = obj.varpro(theta).c
    Phi = obj.feature.evaluate(theta, obj.x)
    lhs = (Phi.T @ Phi / N / M) @ c + obj.lam * c
    rhs = Phi.T @ obj.y / N + obj.lam * c0
    assert np.linalg.norm(lhs - rhs) <= 1e-10 * np.linalg.norm(rhs)


def test_dual_equals_primal():
    rng = np.random.default_rng(1)
    Phi = rng.random((50, 200))
    y = rng.standard_normal(50)
    c0 = np.ones(200)
    cp = ridge_primal(Phi.T @ Phi / 50, Phi.T @ y / 50 + 1e-2 * c0, 1e-2, 200)
    cd = ridge_dual(Phi, y, c0, 1e-2)
    np.testing.assert_allclose(cd, cp, rtol=1e-9, atol=1e-9 * np.abs(cp).max())


@pytest.mark.parametrize("c0", [0.0, 1.0])
def test_relu_circle_fast_path_equals_dense(c0):
    rng = np.random.default_rng(2)
    f = ReLU(CIRCLE)
    fast, theta = sampled_problem(f, 3000, 300, rng, c0)
    dense = Sampled(f, fast.x, fast.y, fast.lam, c0, fast=False)
    G, b = fast.fast.gram(theta)
    Phi = f.evaluate(theta, dense.x)
    assert np.abs(G - Phi.T @ Phi / 3000).max() < 1e-13
    assert np.abs(b - Phi.T @ dense.y / 3000).max() < 1e-14
    s1, s2 = fast.varpro(theta), dense.varpro(theta)
    np.testing.assert_allclose(s1.c, s2.c, rtol=0, atol=1e-9 * np.abs(s2.c).max())
    np.testing.assert_allclose(s1.grad, s2.grad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s1.h, s2.h, rtol=0, atol=1e-12)
    assert abs(s1.loss - s2.loss) < 1e-12 * s2.loss
    # normal equations of the fast path, to 1e-10
    lhs = (Phi.T @ Phi / 3000 / 300) @ s1.c + fast.lam * s1.c
    rhs = Phi.T @ dense.y / 3000 + fast.lam * c0
    assert np.linalg.norm(lhs - rhs) <= 1e-10 * np.linalg.norm(rhs)


SIGMA_CIRCLE = parse_density({"preset": "paper-circle", "gamma": 10.0}, "teacher.density")


@pytest.mark.parametrize("feature", [ReLU(CIRCLE), VonMises(CIRCLE, 2.0)], ids=["relu", "vonmises"])
def test_circle_teacher_term_matches_adaptive_quadrature(feature):
    term = CircleTerm(feature, SIGMA_CIRCLE, CIRCLE, "teacher.density")
    sig = lambda a: SIGMA_CIRCLE.evaluate(CIRCLE, CIRCLE.angle_points(np.atleast_1d(a)))[0]  # noqa: E731
    Z = integrate.quad(sig, -np.pi, np.pi, epsabs=1e-13, limit=200)[0]
    angles = np.array([-2.0, 0.3, 1.1])
    th = CIRCLE.angle_points(angles)
    b, g = term(th)
    for a, bj, gj in zip(angles, b, g):
        p = CIRCLE.angle_points(np.array([a]))
        kb = lambda s: feature.kernel(p, CIRCLE.angle_points(np.array([s])))[0, 0] * sig(s) / Z  # noqa: E731
        exact = integrate.quad(kb, -np.pi, np.pi, epsabs=1e-13, limit=200, points=[a - np.pi, a])[0]
        assert abs(bj - exact) < 1e-8 * max(1, abs(exact))
        h = 1e-5  # angular derivative by central differences of the exact integral
        tgt = np.array([-np.sin(a), np.cos(a)])
        kp = lambda s, d: feature.kernel(CIRCLE.angle_points(np.array([a + d])),  # noqa: E731
                                         CIRCLE.angle_points(np.array([s])))[0, 0] * sig(s) / Z
        dp = integrate.quad(lambda s: kp(s, h) - kp(s, -h), -np.pi, np.pi, epsabs=1e-14, limit=200,
                            points=[a - np.pi, a])[0] / (2 * h)
        assert abs(gj @ tgt - dp) < 1e-6 * max(1, abs(dp))
        assert abs(gj @ p[0]) < 1e-14  # tangent


def test_sphere_teacher_term_converges_with_nodes():
    sigma = parse_density({"mixture": "vonmises", "centers": [[0, 0, 1.0], [1.0, 0, 0]], "kappa": 4.0},
                          "teacher.density")
    f = VonMises(SPHERE, 1.3)
    th = SPHERE.project(np.random.default_rng(3).standard_normal((5, 3)))
    b48, g48 = QuadratureTerm(f, sigma, SPHERE, "t")(th)
    b96, g96 = QuadratureTerm(f, sigma, SPHERE, "t", nodes=96)(th)
    assert np.abs(b48 - b96).max() < 1e-11 * np.abs(b96).max()
    assert np.abs(g48 - g96).max() < 1e-10 * np.abs(g96).max()


def test_torus_gaussian_term_matches_generic_quadrature():
    sigma = parse_density({"preset": "paper-torus"}, "teacher.density")
    f = PeriodicGaussian(TORUS, 0.3)
    th = (np.random.default_rng(4).random((6, 2)) - 0.5) * 4
    fast = TorusGaussianTerm(f, sigma, TORUS, "t")
    slow = QuadratureTerm(f, sigma, TORUS, "t")  # K(θ, z_q) summed node by node
    fine = TorusGaussianTerm(f, sigma, TORUS, "t", nodes=160)
    for term in (slow, fine):
        b, g = term(th)
        np.testing.assert_allclose(fast(th)[0], b, rtol=1e-10)
        np.testing.assert_allclose(fast(th)[1], g, rtol=1e-9, atol=1e-12)
    assert abs(fast.yy - fine.yy) < 1e-12 * fine.yy


def test_population_normal_equations_and_gradient():
    """Population VarPro on the sphere: normal equations, and grad = ∇_θ of the risk part."""
    sigma = parse_density({"mixture": "vonmises", "centers": [[0, 0, 1.0]], "kappa": 3.0}, "teacher.density")
    f = VonMises(SPHERE, 1.0)
    obj = Population(f, teacher_term(f, sigma, SPHERE), 1e-3, 0.0)
    rng = np.random.default_rng(5)
    th = SPHERE.project(rng.standard_normal((30, 3)))
    s = obj.varpro(th)
    G = f.kernel(th, th)
    b = obj.term(th)[0]
    lhs = G @ s.c / 30 + 1e-3 * s.c
    assert np.linalg.norm(lhs - b) <= 1e-10 * np.linalg.norm(b)
    # risk(θ) at fixed c: d/dε risk = (2/M) Σ_j c_j grad_j · v_j (envelope of the first variation)
    v = rng.standard_normal(th.shape)
    v -= (v * th).sum(1, keepdims=True) * th
    eps = 1e-6
    rp, rm = obj.fixed(th + eps * v, s.c).risk, obj.fixed(th - eps * v, s.c).risk
    exact = 2.0 / 30 * float(((s.c[:, None] * s.grad) * v).sum())
    assert abs((rp - rm) / (2 * eps) - exact) < 1e-6 * max(1.0, abs(exact))
    # and the risk equals a Monte-Carlo-free direct evaluation with sampled teacher: risk ≥ 0
    assert s.risk > 0


@pytest.mark.parametrize("data", ["sampled", "population"])
def test_stale_cholesky_cg_meets_normal_equations_along_a_trajectory(data):
    """solver = "pcg": every step's c solves the normal equations to 1e-10, the trajectory
    equals the fresh-Cholesky one, and most steps avoid a factorisation."""
    from ufd_solver.training.sampling import initial_particles
    from ufd_solver.training.trainer import train_loop

    rng = np.random.default_rng(6)
    f = ReLU(CIRCLE)
    M, lam = 200, 1e-3
    if data == "sampled":
        base = sampled_problem(f, 2000, M, rng)[0]
        make = lambda s: Sampled(f, base.x, base.y, lam, 0.0, solver=s)  # noqa: E731
    else:
        term = teacher_term(f, SIGMA_CIRCLE, CIRCLE)
        make = lambda s: Population(f, term, lam, 0.0, solver=s)  # noqa: E731
    theta0 = initial_particles(parse_density("uniform", "i"), CIRCLE, M, "random", rng)
    worst = []

    def check(k, t, theta, state):
        if data == "sampled":
            Phi = f.evaluate(theta, base.x)
            G, b = Phi.T @ Phi / base.N, Phi.T @ base.y / base.N
        else:
            G, b = f.kernel(theta, theta), term(theta)[0]
        worst.append(np.linalg.norm(G @ state.c / M + lam * state.c - b) / np.linalg.norm(b))

    kw = dict(lam=lam, tau=2**-10, output_times=[0.0, 40 * 2**-10], t_end=40 * 2**-10)
    pcg = make("pcg")
    h1 = train_loop(pcg, CIRCLE, theta0, callback=check, **kw)
    h2 = train_loop(make("cholesky"), CIRCLE, theta0, **kw)
    assert max(worst) < 1e-10, max(worst)
    np.testing.assert_allclose(h1.theta[-1], h2.theta[-1], rtol=0, atol=1e-9)
    assert pcg._pcg.refactors <= 20  # of 41 solves


def test_vonmises_circle_fourier_term_matches_closed_form_and_quadrature():
    """FourierCircleTerm: F Fᵀ equals I₀(κ|θ + θ'|) to round-off, and b, ∇b equal the
    FFT term (CircleTerm, which interpolates) and adaptive quadrature."""
    from ufd_solver.training.vonmises_circle_pop import FourierCircleTerm, graf_weights

    for kappa in (0.5, 2.0, 8.0):
        f = VonMises(CIRCLE, kappa)
        term = FourierCircleTerm(f, SIGMA_CIRCLE, CIRCLE, "teacher.density")
        a = np.random.default_rng(7).uniform(-np.pi, np.pi, 300)
        F, dF = term.features(a)
        K = f.kernel(CIRCLE.angle_points(a), CIRCLE.angle_points(a))
        assert np.abs(F @ F.T - K).max() <= 1e-13 * K.max()
        # dK/dφ_j against the ambient kernel gradient along the tangent
        tg = np.stack([-np.sin(a), np.cos(a)], axis=1)
        W = np.random.default_rng(8).standard_normal((300, 300))
        ambient = f.kernel_grad_dot(CIRCLE.angle_points(a), CIRCLE.angle_points(a), W)
        fourier = ((dF @ F.T) * W).sum(1)
        assert np.abs((ambient * tg).sum(1) - fourier).max() <= 1e-12 * np.abs(fourier).max()
        ref = CircleTerm(f, SIGMA_CIRCLE, CIRCLE, "teacher.density")
        b1, g1 = term(CIRCLE.angle_points(a))
        b2, g2 = ref(CIRCLE.angle_points(a))
        assert np.abs(b1 - b2).max() < 1e-8 * b2.max()  # the interpolation error of CircleTerm
        assert np.abs(g1 - g2).max() < 1e-6 * np.abs(g2).max()
        assert abs(term.yy - ref.yy) < 1e-10 * ref.yy
    # weights: I_n(κ)², cut below 1e-18 of I_0(κ)²
    w = graf_weights(2.0)
    assert w.size == 12 and w[-1] >= 1e-18 * w[0] and abs(w[0] - 2.2795853023360673**2) < 1e-12


@pytest.mark.parametrize("M", [8, 1500])  # dense (M ≤ 2n + 1) and Woodbury
@pytest.mark.parametrize("lam", [1e-1, 1e-4])
def test_vonmises_circle_fourier_path_equals_dense(M, lam):
    """The O(M n) path gives the dense path's c, gradient and loss, and c solves the
    normal equations with the closed-form kernel to 1e-10."""
    from ufd_solver.training.vonmises_circle_pop import FourierCircleTerm

    f = VonMises(CIRCLE, 2.0)
    term = teacher_term(f, SIGMA_CIRCLE, CIRCLE)
    assert isinstance(term, FourierCircleTerm)
    fast = Population(f, term, lam, 1.0)
    dense = Population(f, CircleTerm(f, SIGMA_CIRCLE, CIRCLE, "teacher.density"), lam, 1.0)
    dense.term.__call__ = None  # noqa: B010 - make sure the dense path does not use it
    theta = CIRCLE.project(np.random.default_rng(9).standard_normal((M, 2)))
    s1 = fast.varpro(theta)
    b = term(theta)[0]
    G = f.kernel(theta, theta)
    res = G @ s1.c / M + lam * s1.c - (b + lam)
    assert np.linalg.norm(res) <= 1e-10 * np.linalg.norm(b + lam)
    # the dense path with the same (exact) teacher term
    dense.term = term
    dense.fourier = False
    s2 = dense.varpro(theta)
    np.testing.assert_allclose(s1.c, s2.c, rtol=0, atol=1e-8 * np.abs(s2.c).max())
    tg = s2.grad - (s2.grad * theta).sum(1, keepdims=True) * theta  # tangential part
    # grad = (1/M) Σ_l c_l ∇K(θ_j, θ_l) − ∇b(θ_j) is a difference of terms of size |∇b|
    # that cancel to O(λ); with cond(G/M + λ) ≈ ‖G‖/(Mλ) ≈ 5e4 the forward error of c
    # (≈ cond · 1e-16) bounds how closely two correct solvers agree
    scale = np.abs(term(theta)[1]).max()
    np.testing.assert_allclose(s1.grad, tg, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(s1.h, s2.h, rtol=0, atol=1e-10 * np.abs(b).max())  # h = Gc/M − b, idem
    assert abs(s1.loss - s2.loss) <= 1e-9 * abs(s2.loss)
