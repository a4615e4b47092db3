"""Feature families: θ-gradients against finite differences, population kernels
against Monte Carlo (with the N^{-1/2} rate) and exact special values."""

import numpy as np
import pytest

from ufd_solver.geometry import make_space
from ufd_solver.training.features import PeriodicGaussian, Radial, ReLU, UserFeature, VonMises

SPACES = {"circle": make_space("circle"), "sphere": make_space("sphere"),
          "torus1": make_space("torus", 1, 4.0), "torus2": make_space("torus", 2, 4.0),
          "torus3": make_space("torus", 3, 3.0)}

FAMILIES = [
    ("relu", "circle"), ("relu", "sphere"), ("vonmises", "circle"), ("vonmises", "sphere"),
    ("gaussian", "torus1"), ("gaussian", "torus2"), ("gaussian", "torus3"),
    ("radial", "torus2"), ("radial", "torus1"),
]
KERNELS = [f for f in FAMILIES if f[0] != "radial"]

USER_SOURCE = '''
import numpy as np

def feature(theta, x):
    z = x @ theta.T
    return np.tanh(z), (1 - np.tanh(z) ** 2)[:, :, None] * x[:, None, :]

def sample_data(n, rng):
    return rng.standard_normal((n, 2)) * 0.7
'''


def make(name, space_key):
    sp = SPACES[space_key]
    if name == "relu":
        return ReLU(sp)
    if name == "vonmises":
        return VonMises(sp, 1.7)
    if name == "gaussian":
        return PeriodicGaussian(sp, 0.45)
    return Radial(sp, 0.5)


def points(sp, n, rng):
    if sp.kind in ("circle", "sphere"):
        return sp.project(rng.standard_normal((n, sp.gdim)))
    return (rng.random((n, sp.dim)) - 0.5) * sp.length


def tangent_directions(sp, theta, rng):
    v = rng.standard_normal(theta.shape)
    if sp.kind in ("circle", "sphere"):
        v -= (v * theta).sum(1, keepdims=True) * theta
    return v


def check_fd(F, grad, theta, v, eps=1e-6):
    fd = (F(theta + eps * v) - F(theta - eps * v)) / (2 * eps)
    exact = float((grad * v).sum())
    assert abs(fd - exact) <= 1e-6 * max(1.0, abs(exact)), (fd, exact)


@pytest.mark.parametrize("name,space", FAMILIES)
def test_feature_gradient_matches_finite_differences(name, space):
    rng = np.random.default_rng(3)
    f = make(name, space)
    theta = points(f.space, 7, rng)
    x = f.sample_data(50, rng)
    w, u = rng.standard_normal(50), rng.standard_normal(7)
    F = lambda th: float(w @ f.evaluate(th, x) @ u)  # noqa: E731
    grad = u[:, None] * f.grad_dot(theta, x, w)
    check_fd(F, grad, theta, rng.standard_normal(theta.shape))


def test_user_feature_gradient_and_shapes(tmp_path, monkeypatch):
    (tmp_path / "ufd_user_feat.py").write_text(USER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    f = UserFeature(SPACES["circle"], "ufd_user_feat:feature")
    rng = np.random.default_rng(0)
    f.check(rng)
    theta, x = points(f.space, 5, rng), f.sample_data(40, rng)
    assert np.std(x) < 0.9  # the module's own data law is used
    w, u = rng.standard_normal(40), rng.standard_normal(5)
    F = lambda th: float(w @ f.evaluate(th, x) @ u)  # noqa: E731
    check_fd(F, u[:, None] * f.grad_dot(theta, x, w), theta, rng.standard_normal(theta.shape))


@pytest.mark.parametrize("name,space", KERNELS)
def test_kernel_gradient_matches_finite_differences(name, space):
    rng = np.random.default_rng(4)
    f = make(name, space)
    a, b = points(f.space, 6, rng), points(f.space, 5, rng)
    W = rng.standard_normal((6, 5))
    F = lambda A: float((W * f.kernel(A, b)).sum())  # noqa: E731
    check_fd(F, f.kernel_grad_dot(a, b, W), a, tangent_directions(f.space, a, rng))


@pytest.mark.parametrize("name,space", KERNELS)
def test_kernel_agrees_with_monte_carlo_at_rate_half(name, space):
    """(K_MC − K)/(sd/√N) has unit RMS at every N and the RMS error falls like N^{-1/2}."""
    rng = np.random.default_rng(5)
    f = make(name, space)
    a, b = points(f.space, 4, rng), points(f.space, 4, rng)
    K = f.kernel(a, b)
    rms_err, rms_z = [], []
    Ns = [1000, 10000, 100000]
    for N in Ns:
        errs, zs = [], []
        for _ in range(16):
            x = f.sample_data(N, rng)
            pa, pb = f.evaluate(a, x), f.evaluate(b, x)
            prod = pa[:, :, None] * pb[:, None, :]
            mc, sd = prod.mean(0), prod.std(0)
            errs.append(mc - K)
            zs.append((mc - K) / (sd / np.sqrt(N)))
        rms_err.append(np.sqrt(np.mean(np.square(errs))))
        rms_z.append(np.sqrt(np.mean(np.square(zs))))
    slope = np.polyfit(np.log(Ns), np.log(rms_err), 1)[0]
    assert -0.62 < slope < -0.38, (slope, rms_err)
    assert all(0.7 < z < 1.35 for z in rms_z), rms_z


def test_kernel_special_values():
    sp = SPACES["circle"]
    e = sp.angle_points(np.array([0.0, np.pi / 2, np.pi]))
    relu = ReLU(sp).kernel(e[:1], e)[0]
    # α = 0: E[(z)_+²] = 1/2; α = π/2: 1/(2π); α = π: 0
    np.testing.assert_allclose(relu, [0.5, 1 / (2 * np.pi), 0.0], atol=1e-15)
    relu3 = ReLU(SPACES["sphere"]).kernel(np.array([[0, 0, 1.0]]), np.array([[0, 0, 1.0], [1.0, 0, 0]]))[0]
    np.testing.assert_allclose(relu3, [0.5, 1 / (2 * np.pi)], atol=1e-15)  # same in any dimension
    vm = VonMises(sp, 2.0).kernel(e[:1], e[[0, 2]])[0]
    from scipy.special import i0

    np.testing.assert_allclose(vm, [i0(4.0), 1.0], rtol=1e-14)  # θ' = −θ: r = 0
    vs = VonMises(SPACES["sphere"], 2.0).kernel(np.array([[0, 0, 1.0]]), np.array([[0, 0, 1.0], [0, 0, -1.0]]))[0]
    np.testing.assert_allclose(vs, [np.sinh(4.0) / 4.0, 1.0], rtol=1e-14)
    # periodic Gaussian: K(θ, θ) = (π s²)^{d/2}/L^d Σ_n exp(−n²L²/(4s²)) ≈ (π s²)^{d/2}/L^d
    g = PeriodicGaussian(SPACES["torus2"], 0.3)
    np.testing.assert_allclose(g.kernel(np.zeros((1, 2)), np.zeros((1, 2)))[0, 0], np.pi * 0.09 / 16, rtol=1e-12)


def test_radial_is_periodic_and_gradient_points_away():
    f = Radial(SPACES["torus2"], 0.5)
    x = np.array([[1.9, 0.0]])
    # θ = −1.9 is 0.2 away from x = 1.9 through the periodic boundary
    v = f.evaluate(np.array([[-1.9, 0.0], [1.7, 0.0]]), x)[0]
    np.testing.assert_allclose(v, [8 * np.exp(-0.4)] * 2, rtol=1e-12)
