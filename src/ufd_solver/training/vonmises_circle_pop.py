"""Population VarPro for von Mises features on the circle, exact and O(M n) per step.

With φ(θ, x) = exp(κ θ·x) and x uniform on S¹, expand in Fourier modes of
the angle difference: exp(κ cos u) = Σ_{n∈Z} I_n(κ) e^{inu}, so

    K(θ, θ') = E_x[φ(θ, x) φ(θ', x)] = Σ_{n∈Z} I_n(κ)² e^{in(φ − φ')}
             = I₀(κ |θ + θ'|)                     (Graf's addition theorem),

with φ, φ' the angles of θ, θ'.  The weights w_n = I_n(κ)² fall faster than
geometrically (I_n(κ) ≈ (κ/2)ⁿ/n!), so the series is cut where
w_n < 10⁻¹⁸ w₀: at κ = 2 after n = 11 — the truncated kernel equals the
closed form to round-off (tested against ``VonMises.kernel``).  Hence

    G = F Fᵀ,   F = [√w₀, √(2w_n) cos nφ_j, √(2w_n) sin nφ_j]   (M × (2n + 1)),

and everything the step needs is a product with F:

* the ridge system (F Fᵀ/M + λ I) c = r through the thin QR factorisation
  of F and one (2n+1)² Cholesky factor (:func:`solve_low_rank`; the dense
  M × M Cholesky of F Fᵀ when M ≤ 2n + 1);
* G c = F (Fᵀ c) and the angular derivative ∂_φ (G c) = F' (Fᵀ c);
* the teacher term b(θ) = ∫K(θ, θ')σ(θ')dθ' = F(φ)·β with
  β = ∫F(φ')σ(φ')dφ' (the trapezoidal rule on 2¹⁶ angles, as
  :class:`~.population.CircleTerm`, but evaluated exactly at the particles
  instead of interpolated), and E[y²] = β·β.

The cost is O(M n) per step instead of the O(M²) kernel matrix (and O(M³)
factorisation) of the dense path, so M = 4096 and beyond train in seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .grids import probabilities, quadrature
from .varpro import solve_spd_shifted

REL_CUT = 1e-18  # modes with I_n(κ)² below this fraction of I₀(κ)² are dropped
MAX_MODES = 4096


def graf_weights(kappa: float, rel_cut: float = REL_CUT) -> np.ndarray:
    """w_n = I_n(κ)², n = 0..n_max, the Fourier weights of I₀(κ|θ + θ'|), cut at rel_cut·w₀."""
    n = np.arange(MAX_MODES + 1)
    # ive = I_n(κ) e^{−κ}: the common factor e^{2κ} is restored below (no overflow for κ ≲ 350)
    iv = special.ive(n, kappa)
    keep = iv * iv >= rel_cut * iv[0] ** 2
    nmax = int(np.flatnonzero(keep)[-1])
    return (iv[: nmax + 1] * np.exp(kappa)) ** 2


class FourierCircleTerm:
    """Teacher term and Gram factor of von Mises features on the circle (see module doc).

    Drop-in for :class:`~.population.CircleTerm` (``term(theta) -> b, ∇b``,
    ``yy``) that also gives the feature matrix F of G = F Fᵀ.
    """

    def __init__(self, feature, density, space, key, nodes=None):
        self.w = graf_weights(feature.kappa)
        self.n = np.arange(1, self.w.size)
        self.scale = np.concatenate([[np.sqrt(self.w[0])], np.sqrt(2.0 * self.w[1:])])
        pts, wq = quadrature(space, nodes)
        p = probabilities(density, space, pts, wq, key)
        F, _ = self.features(np.arctan2(pts[:, 1], pts[:, 0]), grad=False)
        self.beta = F.T @ p
        self.yy = float(self.beta @ self.beta)

    @property
    def ncols(self) -> int:
        return 2 * self.n.size + 1

    def features(self, angles, grad=True):
        """F (M × ncols) and, with ``grad``, dF/dφ, columns [1, cos nφ, sin nφ] · scale."""
        nphi = np.multiply.outer(angles, self.n)
        cs, sn = np.cos(nphi), np.sin(nphi)
        M, k = angles.size, self.n.size
        F = np.empty((M, self.ncols))
        F[:, 0] = self.scale[0]
        np.multiply(cs, self.scale[1:], out=F[:, 1:1 + k])
        np.multiply(sn, self.scale[1:], out=F[:, 1 + k:])
        if not grad:
            return F, None
        dF = np.empty_like(F)
        dF[:, 0] = 0.0
        ns = self.n * self.scale[1:]
        np.multiply(-sn, ns, out=dF[:, 1:1 + k])
        np.multiply(cs, ns, out=dF[:, 1 + k:])
        return F, dF

    def __call__(self, theta):
        a = np.arctan2(theta[:, 1], theta[:, 0])
        F, dF = self.features(a)
        return F @ self.beta, (dF @ self.beta)[:, None] * _tangents(a)


def _tangents(a):
    return np.stack([-np.sin(a), np.cos(a)], axis=1)


def solve_low_rank(F: np.ndarray, rhs: np.ndarray, lam: float) -> np.ndarray:
    """c with (F Fᵀ/M + λ I) c = rhs, backward stable, O(M r²) for F of M × r.

    With the thin QR factorisation F = Q R, F Fᵀ/M + λ I = Q (R Rᵀ/M + λ I) Qᵀ
    + λ (I − Q Qᵀ), so c = Q z + (rhs − Q Qᵀ rhs)/λ with (R Rᵀ/M + λ I) z = Qᵀ rhs
    (an r × r Cholesky solve).  Unlike the plain Woodbury formula this never
    divides a difference of O(1) numbers by λ, so the normal equations hold to
    round-off for any λ.  A dense Cholesky solve when F is not thin (r ≥ M).
    """
    M, r = F.shape
    if r >= M:
        A = F @ F.T
        A /= M
        return solve_spd_shifted(A, lam, rhs)
    Q, R = np.linalg.qr(F)
    S = R @ R.T
    S /= M
    q = Q.T @ rhs
    z = solve_spd_shifted(S, lam, q)
    return Q @ z + (rhs - Q @ q) / lam
