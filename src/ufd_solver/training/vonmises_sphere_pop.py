"""Population VarPro for von Mises features on the sphere, exact and O(M r) + O(M r²) per step.

With φ(θ, x) = exp(κ θ·x) and x uniform on S², the plane-wave expansion

    exp(κ t) = Σ_{l≥0} (2l + 1) i_l(κ) P_l(t)        (t = θ·x; i_l the modified spherical
                                                       Bessel function of the first kind)

and the Funk–Hecke identity ∫ P_l(θ·x) P_k(θ'·x) dx/(4π) = δ_lk P_l(θ·θ')/(2l + 1) give the
zonal expansion of the population kernel

    K(θ, θ') = E_x[φ(θ, x) φ(θ', x)] = Σ_l (2l + 1) i_l(κ)² P_l(θ·θ') = sinh(r)/r,  r = κ|θ + θ'|

(at θ' = θ: Σ (2l + 1) i_l² = sinh(2κ)/(2κ)).  Every weight i_l(κ)² is positive, so K is
injective (positive definite) on measures.  The addition theorem
P_l(θ·θ') = (4π/(2l + 1)) Σ_m Y_lm(θ) Y_lm(θ') (real orthonormal spherical harmonics) turns it
into a finite feature map once the series is cut: i_l(κ) ≈ κ^l/(2l + 1)!! falls faster than
geometrically, and the terms with (2l + 1) i_l² < 10⁻¹⁸ i_0² are dropped (L = 12 at κ = 2,
L = 16 at κ = 4; the truncated kernel equals sinh(r)/r to round-off, tested), so

    G = F Fᵀ,   F_{j,(l,m)} = √(4π) i_l(κ) Y_lm(θ_j)          (M × r,  r = (L + 1)²).

Everything a VarPro step needs is a product with F or with its θ-gradient:

* the teacher term b(θ) = ∫K(θ, θ')σ(θ')dθ' = F(θ)·β with β = ∫F σ (the Gauss–Legendre ×
  azimuth rule of :class:`~.population.QuadratureTerm`, computed once), ∇b = ∇F·β,
  E[y²] = β·β;
* the ridge system.  Its right-hand side b + λc₀1 lies in the range of F (b = Fβ, and the
  constant is the l = 0 column), r = F β' with β' = β + λc₀ e₀/F₀₀, and

      (F Fᵀ/M + λ I) F y = F (Fᵀ F/M + λ I) y,

  so c = F y with the r × r system (FᵀF/M + λ I) y = β' (one Cholesky factorisation).
  Like the thin-QR solve of :mod:`.vonmises_circle_pop` it never divides a difference by
  λ, and it costs one M × r × r product (BLAS ``syrk``) instead of a QR factorisation;
* u = Fᵀc/M:  G c/M = F u,  risk = E[(f − y)²] = ‖u − β‖² (no cancellation), and the
  feature gradient E[(f − y)∇_θφ(θ_j, x)] = ∇F(θ_j)·(u − β), projected on the tangent plane.

Real harmonics without the Condon–Shortley sign, as polynomials in the ambient coordinates:
Y_lm = q_lm(z) Re (x + iy)^m (m ≥ 0) and q_lm(z) Im (x + iy)^m (the m < 0 partner), where
q_lm = N_lm d^m P_l/dz^m (N_lm the normalisation, √2 for m > 0); on |θ| = 1 this is the usual
N_lm P_l^m(z) cos mψ since (1 − z²)^{m/2} e^{imψ} = (x + iy)^m.  The q_lm follow the standard
normalised three-term recurrences in l (stable), dq_lm/dz = √((l + m + 1)(l − m)) q_{l,m+1}
(÷√2 for m = 0), and ∂_x (x + iy)^m = m (x + iy)^{m−1}, ∂_y = i m (x + iy)^{m−1}.  The
ambient gradient of this polynomial extension has a radial part, which the tangent
projection removes.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .grids import probabilities, quadrature
from .varpro import solve_spd_shifted

REL_CUT = 1e-18  # degrees with (2l + 1) i_l(κ)² below this fraction of i_0(κ)² are dropped
MAX_DEGREE = 200


def bessel_weights(kappa: float, rel_cut: float = REL_CUT) -> np.ndarray:
    """i_l(κ), l = 0..L, the degrees of the zonal expansion of sinh(κ|θ + θ'|)/(κ|θ + θ'|)
    kept by the cut (2l + 1) i_l(κ)² ≥ rel_cut · i_0(κ)²."""
    ell = np.arange(MAX_DEGREE + 1)
    with np.errstate(over="ignore"):
        il = special.spherical_in(ell, float(kappa))
    if not (np.all(np.isfinite(il)) and il[0] > 0):
        raise ValueError(f"kappa = {kappa} is out of range for the harmonic expansion")
    keep = (2 * ell + 1) * il * il >= rel_cut * il[0] ** 2
    L = int(np.flatnonzero(keep)[-1])
    if L == MAX_DEGREE:
        raise ValueError(f"kappa = {kappa} needs more than {MAX_DEGREE} degrees")
    return il[: L + 1]


class RealHarmonics:
    """Real orthonormal spherical harmonics Y_lm, 0 ≤ l ≤ L, as polynomials in (x, y, z).

    Columns in blocks of equal order: (m = 0, l = 0..L), then for m = 1..L the cosine
    block (m, l = m..L) and the sine block (``lcol``, ``mcol``, ``sin`` say which column
    is which; the first column is the constant Y_00); (L + 1)² in all.
    ∫_{S²} Y_a Y_b = δ_ab.  A block is a slice of the Legendre table times one
    Re/Im (x + iy)^m row, so no gathers are needed.
    """

    def __init__(self, L: int):
        self.L = L = int(L)
        cols, self._blocks = [], []
        for m in range(L + 1):
            for s in ((0,) if m == 0 else (0, 1)):
                self._blocks.append((len(cols), len(cols) + L + 1 - m, m, s))
                cols += [(l, m, s) for l in range(m, L + 1)]
        self.lcol = np.array([c[0] for c in cols])
        self.mcol = np.array([c[1] for c in cols])
        self.sin = np.array([c[2] for c in cols], dtype=bool)
        # recurrence coefficients of the normalised q_lm (index [l, m])
        ll, mm = np.meshgrid(np.arange(L + 1), np.arange(L + 1), indexing="ij")
        with np.errstate(divide="ignore", invalid="ignore"):
            self._a = np.sqrt((4.0 * ll**2 - 1) / (ll**2 - mm**2))
            self._b = np.sqrt(((ll - 1.0) ** 2 - mm**2) / (4.0 * (ll - 1.0) ** 2 - 1))
        d = np.sqrt(np.maximum((ll + mm + 1.0) * (ll - mm), 0.0))
        d[:, 0] /= np.sqrt(2.0)
        self._d = d  # dq_lm/dz = d_lm q_{l,m+1}

    @property
    def ncols(self) -> int:
        return self.lcol.size

    def _legendre(self, z):
        """q[l, m] (M-vectors) for 0 ≤ m ≤ l ≤ L, zero for m > l; shape (L + 1, L + 2, M)."""
        L = self.L
        q = np.zeros((L + 1, L + 2, z.size))
        q[0, 0] = np.sqrt(1.0 / (4.0 * np.pi))
        for m in range(1, L + 1):  # diagonal: q_mm = q_{m−1,m−1} √((2m + 1)/(2m)), √2 more at m = 1
            q[m, m] = q[m - 1, m - 1] * np.sqrt((2.0 * m + 1) / (2.0 * m)) * (np.sqrt(2.0) if m == 1 else 1.0)
        for l in range(1, L + 1):
            q[l, l - 1] = z * np.sqrt(2.0 * l + 1) * q[l - 1, l - 1]
            if l >= 2:
                m = np.arange(l - 1)
                q[l, : l - 1] = self._a[l, m, None] * (z * q[l - 1, : l - 1] - self._b[l, m, None] * q[l - 2, : l - 1])
        return q

    def __call__(self, theta, grad=True, degree_scale=None):
        """Y (M × r) and, with ``grad``, its ambient gradients (dx, dy, dz), each M × r;
        degree l multiplied by ``degree_scale[l]`` when given.  (Transposed views of
        r × M arrays.)"""
        x, y, z = theta[:, 0], theta[:, 1], theta[:, 2]
        L, n = self.L, theta.shape[0]
        q = self._legendre(z)
        if degree_scale is not None:
            q *= np.asarray(degree_scale, dtype=float)[:, None, None]
        # C_m + i S_m = (x + i y)^m, m = 0..L
        C = np.empty((L + 1, n))
        S = np.empty((L + 1, n))
        C[0], S[0] = 1.0, 0.0
        for m in range(1, L + 1):
            C[m] = C[m - 1] * x - S[m - 1] * y
            S[m] = S[m - 1] * x + C[m - 1] * y
        Y = np.empty((self.ncols, n))
        if grad:
            dx, dy, dz = (np.empty((self.ncols, n)) for _ in range(3))
        for a, b, m, s in self._blocks:
            qm = q[m:, m]
            trig = S[m] if s else C[m]
            np.multiply(qm, trig, out=Y[a:b])
            if not grad:
                continue
            # ∂_x C_m = m C_{m−1}, ∂_y C_m = −m S_{m−1}; ∂_x S_m = m S_{m−1}, ∂_y S_m = m C_{m−1}
            if m == 0:
                dx[a:b] = 0.0
                dy[a:b] = 0.0
            else:
                np.multiply(qm, m * (S[m - 1] if s else C[m - 1]), out=dx[a:b])
                np.multiply(qm, m * C[m - 1] if s else -m * S[m - 1], out=dy[a:b])
            np.multiply(self._d[m:, m, None] * q[m:, m + 1], trig, out=dz[a:b])
        if not grad:
            return Y.T, None
        return Y.T, (dx.T, dy.T, dz.T)


class HarmonicSphereTerm:
    """Teacher term and Gram factor of von Mises features on S² (see the module doc).

    Drop-in for :class:`~.population.QuadratureTerm` (``term(theta) -> b, ∇b``, ``yy``) that
    also gives F and ∇F (:meth:`features`) and the whole VarPro state (:meth:`state`).
    """

    def __init__(self, feature, density, space, key, nodes=None):
        self.kappa = float(feature.kappa)
        il = bessel_weights(self.kappa)
        self.L = il.size - 1
        self.harmonics = RealHarmonics(self.L)
        self.lcol = self.harmonics.lcol
        self.degree_scale = np.sqrt(4.0 * np.pi) * il  # F = Y · √(4π) i_l(κ), degree by degree
        pts, wq = quadrature(space, nodes)
        p = probabilities(density, space, pts, wq, key)
        self.beta = self.features(pts, grad=False)[0].T @ p
        self.yy = float(self.beta @ self.beta)

    @property
    def ncols(self) -> int:
        return self.lcol.size

    def features(self, theta, grad=True):
        """F (M × r) and, with ``grad``, the ambient gradients (dFx, dFy, dFz), each M × r."""
        return self.harmonics(theta, grad, self.degree_scale)

    def __call__(self, theta, grad=True):
        F, dF = self.features(theta, grad)
        b = F @ self.beta
        if not grad:
            return b, None
        return b, _tangential(theta, _apply(dF, self.beta))

    def solve(self, F, lam, c0):
        """c with (F Fᵀ/M + λ I) c = F β + λ c₀ 1 (see the module doc)."""
        M = F.shape[0]
        A = F.T @ F
        A /= M
        rhs = self.beta.copy()
        rhs[0] += lam * c0 / F[0, 0]  # the constant 1 is F e₀ / F₀₀
        y = solve_spd_shifted(A, lam, rhs)
        return F @ y

    def state(self, theta, lam, c0, c=None):
        """(c, risk, grad, h) of the VarPro step (``c=None``) or at the given c (2TS).

        grad is tangential: (I − θθᵀ)∇F(θ_j)·(u − β), u = Fᵀc/M; h = G c/M − b = F(u − β).
        """
        F, dF = self.features(theta)
        if c is None:
            c = self.solve(F, lam, c0)
        M = theta.shape[0]
        e = F.T @ c / M - self.beta
        risk = float(e @ e)
        grad = _tangential(theta, _apply(dF, e))
        return c, risk, grad, F @ e


def _apply(dF, v):
    return np.stack([d @ v for d in dF], axis=1)


def _tangential(theta, g):
    return g - (g * theta).sum(1, keepdims=True) * theta
