"""The teacher term of the population objective, integrated against σ.

With y(x) = ∫ φ(θ', x) σ(θ') dθ' (σ of unit mass):

    b(θ) = E_x[φ(θ, x) y(x)] = ∫ K(θ, θ') σ(θ') dθ',   E_x[y²] = ∫ b σ.

* circle, von Mises features: the exact finite Fourier expansion of K
  (:mod:`.vonmises_circle_pop`), b = F(θ)·β evaluated at the particles;
* circle, other features: K depends on θ − θ' only, so b is a circular convolution, computed
  once by FFT on a uniform grid of 2¹⁶ angles (trapezoidal rule, spectrally
  accurate); b and its angular derivative are then interpolated at the
  particles (linear, error O(h²) ≈ 1e−9 relative);
* sphere, von Mises features: the exact spherical-harmonic expansion of K
  (:mod:`.vonmises_sphere_pop`), b = F(θ)·β with β = ∫Fσ by the rule below;
* sphere, other features: Gauss–Legendre (48) × uniform azimuth (96) product rule, evaluated
  at the particles every step (nodes where σ w is negligible are dropped);
* torus (periodic Gaussian features): the uniform grid, contracted one
  coordinate at a time since the kernel is a product over coordinates.
"""

from __future__ import annotations

import numpy as np

from .features import PeriodicGaussian, VonMises, wrapped_gaussian
from .grids import probabilities, quadrature, torus_axis
from .vonmises_circle_pop import FourierCircleTerm
from .vonmises_sphere_pop import HarmonicSphereTerm


def teacher_term(feature, density, space, key="teacher.density"):
    if space.kind == "circle" and isinstance(feature, VonMises):
        return FourierCircleTerm(feature, density, space, key)
    if space.kind == "circle":
        return CircleTerm(feature, density, space, key)
    if space.kind == "sphere" and isinstance(feature, VonMises):
        try:
            return HarmonicSphereTerm(feature, density, space, key)
        except ValueError:  # κ beyond the expansion's range: the dense closed form below
            pass
    if space.kind == "torus" and isinstance(feature, PeriodicGaussian):
        return TorusGaussianTerm(feature, density, space, key)
    return QuadratureTerm(feature, density, space, key)


class CircleTerm:
    def __init__(self, feature, density, space, key, nodes=None):
        pts, w = quadrature(space, nodes)
        q = pts.shape[0]
        self.angles = -np.pi + 2.0 * np.pi * np.arange(q) / q
        p = probabilities(density, space, pts, w, key)
        delta = 2.0 * np.pi * np.arange(q) / q
        pd = space.angle_points(delta)
        e0 = np.array([[1.0, 0.0]])
        kv = feature.kernel(pd, e0)[:, 0]
        tangent = np.stack([-np.sin(delta), np.cos(delta)], axis=1)
        dv = (feature.kernel_grad_dot(pd, e0, np.ones((q, 1))) * tangent).sum(1)
        fp = np.fft.rfft(p)
        self.b_grid = np.fft.irfft(np.fft.rfft(kv) * fp, q)
        self.db_grid = np.fft.irfft(np.fft.rfft(dv) * fp, q)
        self.yy = float(p @ self.b_grid)

    def __call__(self, theta):
        a = np.arctan2(theta[:, 1], theta[:, 0])
        q = self.b_grid.size
        u = (a + np.pi) * (q / (2.0 * np.pi))
        i = np.floor(u)
        w = u - i
        i = i.astype(np.int64) % q
        i1 = (i + 1) % q
        b = (1.0 - w) * self.b_grid[i] + w * self.b_grid[i1]
        db = (1.0 - w) * self.db_grid[i] + w * self.db_grid[i1]
        return b, db[:, None] * np.stack([-np.sin(a), np.cos(a)], axis=1)


class QuadratureTerm:
    def __init__(self, feature, density, space, key, nodes=None, chunk=2**22):
        pts, w = quadrature(space, nodes)
        p = probabilities(density, space, pts, w, key)
        keep = p > 1e-17 * p.max()
        self.nodes, self.p = pts[keep], p[keep]
        self.feature = feature
        self.chunk = chunk
        self._yy = None

    @property
    def yy(self):
        """E[y²] = Σ_q p_q b(z_q), computed on first use."""
        if self._yy is None:
            self._yy = float(self.p @ self(self.nodes, grad=False)[0])
        return self._yy

    def __call__(self, theta, grad=True):
        f = self.feature
        b = np.zeros(theta.shape[0])
        g = np.zeros(theta.shape) if grad else None
        step = max(1, self.chunk // max(1, theta.shape[0]))
        for s in range(0, self.nodes.shape[0], step):
            z, p = self.nodes[s:s + step], self.p[s:s + step]
            b += f.kernel(theta, z) @ p
            if grad:
                g += f.kernel_grad_dot(theta, z, np.broadcast_to(p, (theta.shape[0], p.size)))
        return b, g


class TorusGaussianTerm:
    def __init__(self, feature, density, space, key, nodes=None):
        pts, w = quadrature(space, nodes)
        m = round(pts.shape[0] ** (1.0 / space.dim))
        self.axis = torus_axis(space, m)
        self.P = probabilities(density, space, pts, w, key).reshape((m,) * space.dim)
        self.f = feature
        self.var = 2.0 * feature.std**2
        self.yy = float(self.P.ravel() @ self(pts, grad=False)[0])

    def __call__(self, theta, grad=True):
        f = self.f
        fac = [wrapped_gaussian(theta[:, k, None] - self.axis[None, :], self.var, f.L, grad)
               for k in range(f.D)]
        vals = [x[0] for x in fac] if grad else fac
        C = f.kernel_constant
        b = C * _contract(vals, self.P)
        if not grad:
            return b, None
        g = np.empty(theta.shape)
        for k in range(f.D):
            g[:, k] = C * _contract([fac[m][1] if m == k else vals[m] for m in range(f.D)], self.P)
        return b, g


def _contract(F, P):
    """Σ_{a,b,..} F₀[j, a] F₁[j, b] ... P[a, b, ...] by matrix products, one axis at a time."""
    n = P.shape[0]
    T = F[0] @ P.reshape(n, -1)  # j × (rest)
    for Fk in F[1:]:
        T = np.einsum("jbr,jb->jr", T.reshape(T.shape[0], n, -1), Fk)
    return T[:, 0] if T.ndim == 2 and T.shape[1] == 1 else T.reshape(T.shape[0])
