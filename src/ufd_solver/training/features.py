"""Feature families φ(θ, x): data law, values, θ-gradients and population kernels.

Every family works with arrays: ``theta`` is (M, D) in ambient coordinates
(points of R² on S¹, R³ on S², the box on the torus), ``x`` is (N, dx).

* ``evaluate(theta, x)`` → Φ with Φ[i, j] = φ(θ_j, x_i), shape (N, M);
* ``grad_dot(theta, x, w)`` → Σ_i w_i ∇_θ φ(θ_j, x_i), shape (M, D);
* ``kernel(a, b)`` → K(a_p, b_q) = E_x[φ(a_p, x) φ(b_q, x)], shape (P, Q);
* ``kernel_grad_dot(a, b, W)`` → Σ_q W[p, q] ∇_a K(a_p, b_q), shape (P, D).

Gradients are ambient; on S^{d−1} only their tangential part is meaningful
(the trainer projects).  The population kernels (docs/training.md derives them):

* relu, x ~ N(0, I_d): K = (sin α + (π − α) cos α)/(2π), α = ∠(θ, θ'),
  ∂K/∂(θ·θ') = (π − α)/(2π);
* vonmises, x uniform on S^{d−1}: K = I₀(r) on S¹, sinh(r)/r on S², r = κ|θ + θ'|;
* gaussian, x uniform on T^d: K = (π s²)^{d/2}/L^d · Π_k w_{2s²}(θ_k − θ'_k), w_v the
  wrapped Gaussian Σ_n exp(−(u + nL)²/(2v)).
"""

from __future__ import annotations

import importlib

import numpy as np
from scipy import special

from ..errors import ConfigError
from ..geometry import FeatureSpace

BUILTIN = ("relu", "vonmises", "gaussian", "radial")
SPACES = {"relu": ("circle", "sphere"), "vonmises": ("circle", "sphere"),
          "gaussian": ("torus",), "radial": ("torus",)}


class Feature:
    """Base class: a feature family on a :class:`FeatureSpace`."""

    name = "feature"
    has_kernel = False

    def __init__(self, space: FeatureSpace):
        self.space = space
        self.D = space.gdim

    def sample_data(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def evaluate(self, theta, x):
        raise NotImplementedError

    def grad_dot(self, theta, x, w):
        raise NotImplementedError

    def kernel(self, a, b):
        raise NotImplementedError(f"{self.name} features have no closed-form population kernel")

    def kernel_grad_dot(self, a, b, W):
        raise NotImplementedError(f"{self.name} features have no closed-form population kernel")

    def kernel_with_grad(self, a, b):
        """K(a, b) and a function W ↦ kernel_grad_dot(a, b, W) sharing the work."""
        return self.kernel(a, b), lambda W: self.kernel_grad_dot(a, b, W)


def _sphere_uniform(n, d, rng):
    z = rng.standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


class ReLU(Feature):
    """φ(θ, x) = max(0, θ·x) on S^{d−1}, x ~ N(0, I_d) (the paper's Section 6.1)."""

    name = "relu"
    has_kernel = True

    def sample_data(self, n, rng):
        return rng.standard_normal((n, self.D))

    def evaluate(self, theta, x):
        return np.maximum(x @ theta.T, 0.0)

    def grad_dot(self, theta, x, w):
        mask = (x @ theta.T) > 0.0
        return (mask.T * 1.0) @ (w[:, None] * x)

    @staticmethod
    def _angle(u):
        return np.arccos(np.clip(u, -1.0, 1.0))

    def kernel(self, a, b):
        u = np.clip(a @ b.T, -1.0, 1.0)
        alpha = np.arccos(u)
        return (np.sqrt(1.0 - u * u) + (np.pi - alpha) * u) / (2.0 * np.pi)

    def kernel_grad_dot(self, a, b, W):
        alpha = self._angle(a @ b.T)
        return ((np.pi - alpha) / (2.0 * np.pi) * W) @ b

    def kernel_with_grad(self, a, b):
        u = np.clip(a @ b.T, -1.0, 1.0)
        d = (np.pi - np.arccos(u)) / (2.0 * np.pi)  # dK/du
        K = np.sqrt(1.0 - u * u) / (2.0 * np.pi) + d * u
        return K, lambda W: (d * W) @ b


class VonMises(Feature):
    """φ(θ, x) = exp(κ θ·x) on S^{d−1}, x uniform on S^{d−1}."""

    name = "vonmises"
    has_kernel = True

    def __init__(self, space, kappa):
        super().__init__(space)
        self.kappa = float(kappa)

    def sample_data(self, n, rng):
        return _sphere_uniform(n, self.D, rng)

    def evaluate(self, theta, x):
        return np.exp(self.kappa * (x @ theta.T))

    def grad_dot(self, theta, x, w):
        phi = self.evaluate(theta, x)
        return self.kappa * ((phi * w[:, None]).T @ x)

    def _r(self, a, b):
        # |a + b|² = |a|² + |b|² + 2 a·b, clipped at 0 against round-off
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] + 2.0 * (a @ b.T)
        return self.kappa * np.sqrt(np.maximum(sq, 0.0))

    def kernel(self, a, b):
        r = self._r(a, b)
        if self.space.kind == "circle":
            return special.i0(r)
        return _sinhc(r)

    def kernel_grad_dot(self, a, b, W):
        # ∇_a K = K'(r) κ² (a + b)/r
        r = self._r(a, b)
        if self.space.kind == "circle":
            q = _i1_over_r(r)
        else:
            q = _dsinhc_over_r(r)
        Q = self.kappa**2 * q * W
        return Q.sum(1)[:, None] * a + Q @ b


def _sinhc(r):
    """sinh(r)/r, 1 at r = 0."""
    small = r < 1e-4
    rs = np.where(small, 1.0, r)
    return np.where(small, 1.0 + r * r / 6.0, np.sinh(rs) / rs)


def _dsinhc_over_r(r):
    """(d/dr)(sinh r / r) / r = (r cosh r − sinh r)/r³, → 1/3 at r = 0."""
    small = r < 2e-2
    rs = np.where(small, 1.0, r)
    big = (rs * np.cosh(rs) - np.sinh(rs)) / rs**3
    return np.where(small, 1.0 / 3.0 + r * r / 30.0 + r**4 / 840.0, big)


def _i1_over_r(r):
    """I₁(r)/r, → 1/2 at r = 0."""
    small = r < 1e-6
    rs = np.where(small, 1.0, r)
    return np.where(small, 0.5 + r * r / 16.0, special.i1(rs) / rs)


def wrapped_gaussian(u, var, length, deriv=False):
    """Σ_n exp(−(u + nL)²/(2 var)) (and its u-derivative), u any real array."""
    u = u - length * np.round(u / length)
    k = int(np.ceil(np.sqrt(80.0 * var) / length + 0.5))
    val = np.zeros_like(u)
    der = np.zeros_like(u) if deriv else None
    for n in range(-k, k + 1):
        v = u + n * length
        e = np.exp(-0.5 * v * v / var)
        val += e
        if deriv:
            der -= v / var * e
    return (val, der) if deriv else val


class PeriodicGaussian(Feature):
    """φ(θ, x) = Π_k w_{s²}(θ_k − x_k) on the torus T^d, x uniform on T^d."""

    name = "gaussian"
    has_kernel = True

    def __init__(self, space, std):
        super().__init__(space)
        self.std = float(std)
        self.L = float(space.length)

    def sample_data(self, n, rng):
        return (rng.random((n, self.D)) - 0.5) * self.L

    def _factors(self, a, b, var, deriv):
        return [wrapped_gaussian(a[:, None, k] - b[None, :, k], var, self.L, deriv)
                for k in range(self.D)]

    @staticmethod
    def _prod(vals):
        out = vals[0].copy()
        for v in vals[1:]:
            out *= v
        return out

    def evaluate(self, theta, x):
        return self._prod([f for f in self._factors(x, theta, self.std**2, False)])

    def _grad(self, a, b, W, var, scale):
        # Σ_q W[p, q] ∇_a Π_k g(a_k − b_k)
        fac = self._factors(a, b, var, True)
        out = np.empty((a.shape[0], self.D))
        for k in range(self.D):
            prod = fac[k][1] * W
            for m in range(self.D):
                if m != k:
                    prod = prod * fac[m][0]
            out[:, k] = prod.sum(1)
        return scale * out

    def grad_dot(self, theta, x, w):
        # ∇_θ of g(x − θ) is −g'(x − θ) = g'(θ − x) (g even): use θ − x directly
        return self._grad(theta, x, np.broadcast_to(w[None, :], (theta.shape[0], x.shape[0])),
                          self.std**2, 1.0)

    @property
    def kernel_constant(self):
        return (np.pi * self.std**2) ** (self.D / 2) / self.L**self.D

    def kernel(self, a, b):
        return self.kernel_constant * self._prod(self._factors(a, b, 2 * self.std**2, False))

    def kernel_grad_dot(self, a, b, W):
        return self._grad(a, b, W, 2 * self.std**2, self.kernel_constant)


class Radial(Feature):
    """φ(θ, x) = (2/s²) exp(−|θ − x|/s) on the torus, x ~ N(0, I_d) (the paper's Appendix B).

    |θ − x| is the distance to the nearest periodic image of x, so φ is a
    function on the torus.
    """

    name = "radial"

    def __init__(self, space, scale):
        super().__init__(space)
        self.s = float(scale)

    def sample_data(self, n, rng):
        return rng.standard_normal((n, self.D))

    def _diff(self, theta, x):
        d = theta[None, :, :] - x[:, None, :]
        L = self.space.length
        return d - L * np.round(d / L)

    def evaluate(self, theta, x):
        dist = np.sqrt((self._diff(theta, x) ** 2).sum(-1))
        return (2.0 / self.s**2) * np.exp(-dist / self.s)

    def grad_dot(self, theta, x, w):
        d = self._diff(theta, x)
        dist = np.sqrt((d * d).sum(-1))
        phi = (2.0 / self.s**2) * np.exp(-dist / self.s)
        coef = -phi / (self.s * np.where(dist > 0, dist, 1.0)) * (dist > 0) * w[:, None]
        return np.einsum("ij,ijk->jk", coef, d)


class UserFeature(Feature):
    """A feature from ``module:function``.

    ``function(theta, x)`` returns ``(values, grads)`` of shapes (N, M) and
    (N, M, D) (ambient θ-gradients).  Data: ``module.sample_data(n, rng)`` if
    the module defines it, else x ~ N(0, I_D).
    """

    name = "user"

    def __init__(self, space, spec):
        super().__init__(space)
        self.spec = spec
        mod_name, fn_name = spec.split(":", 1)
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is a user error
            raise ConfigError("training.features", f"cannot import module {mod_name!r}: {exc}") from None
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise ConfigError("training.features", f"{mod_name!r} has no function {fn_name!r}")
        self.fn = fn
        self._sampler = getattr(mod, "sample_data", None)

    def sample_data(self, n, rng):
        if self._sampler is not None:
            x = np.asarray(self._sampler(n, rng), dtype=float)
            return x.reshape(n, -1)
        return rng.standard_normal((n, self.D))

    def check(self, rng):
        """Call the function on a tiny problem and check the shapes it returns."""
        theta = self.space.project(rng.standard_normal((3, self.D)) * 0.3)
        x = self.sample_data(2, rng)
        try:
            out = self.fn(theta, x)
            v, g = (np.asarray(a, dtype=float) for a in out)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError("training.features", f"{self.spec} failed on a test call: {exc}") from None
        if v.shape != (2, 3) or g.shape != (2, 3, self.D):
            raise ConfigError("training.features", f"{self.spec} must return values (N, M) and grads "
                              f"(N, M, {self.D}); got {v.shape} and {g.shape}")

    def evaluate(self, theta, x):
        return np.asarray(self.fn(theta, x)[0], dtype=float)

    def grad_dot(self, theta, x, w):
        g = np.asarray(self.fn(theta, x)[1], dtype=float)
        return np.einsum("i,ijk->jk", w, g)


def make_feature(training, space: FeatureSpace) -> Feature:
    """Build the feature family named by ``training.features`` on ``space``.

    Raises :class:`ConfigError` (key ``training.features``) when the family
    does not live on ``space``.
    """
    name = training.features
    if name in BUILTIN:
        if space.kind not in SPACES[name]:
            raise ConfigError("training.features", f"{name!r} features live on mesh.kind "
                              f"{' or '.join(map(repr, SPACES[name]))}, not on {space.kind!r}")
        if name == "relu":
            return ReLU(space)
        if name == "vonmises":
            if training.kappa > 300:
                raise ConfigError("training.kappa", f"must be <= 300 (exp(2κ) overflows), got {training.kappa}")
            return VonMises(space, training.kappa)
        if name == "gaussian":
            return PeriodicGaussian(space, training.std)
        return Radial(space, training.scale)
    if space.kind not in ("circle", "sphere", "torus"):
        raise ConfigError("training.features", f"the trainer needs mesh.kind circle, sphere or torus, "
                          f"not {space.kind!r}")
    return UserFeature(space, name)
