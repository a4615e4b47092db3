"""Population VarPro for ReLU features on the circle in O(M log M + M K) per step.

With θ_j at angle φ_j and x ~ N(0, I₂) the Gram matrix is the arc-cosine kernel

    G_jl = k(φ_l − φ_j),  2π k(δ) = |sin δ| + |π − δ̄| cos δ,   δ̄ = δ mod 2π ∈ [0, 2π),

(α = π − |π − δ̄| is the angle between θ_j and θ_l).  Two exact structures make
the step cheap; nothing is approximated:

* **Piecewise separable.**  Sort the angles, extend them over two periods
  (φ_{l+M} = φ_l + 2π) and let p_j be the first extended index with
  φ_{p_j} ≥ φ_j + π.  For l ∈ [j, p_j) (δ̄ ∈ [0, π)) 2π k = sin δ + (π − δ) cos δ,
  for l ∈ [p_j, j + M) it is the negative of the same expression, and
  sin δ, (π − δ) cos δ expand into products of (cos φ_l, sin φ_l, φ_l cos φ_l,
  φ_l sin φ_l) with functions of φ_j.  With P the prefix sums of
  v_l (cos, sin, φ cos, φ sin)(φ_l) over the extended list and
  D_j = 2 P[p_j] − P[j] − P[j + M] (forward window minus backward window),

      2π (G v)_j = D_j · (−sin φ_j + (π + φ_j) cos φ_j, cos φ_j + (π + φ_j) sin φ_j,
                          −cos φ_j, −sin φ_j),
      2π Σ_l v_l (π − α_jl) θ_l = (π + φ_j) D_j[0:2] − D_j[2:4],

  so G v and the kernel part of the feature gradient cost O(M) after the sort
  (k is continuous at δ̄ = 0 and π, so ties may go to either window).
* **Known Fourier series.**  k(δ) = a₀ + 2 Σ_{k≥1} a_k cos kδ with a₀ = 2/π²,
  a₁ = 1/8, a_k = 2/(π² (k² − 1)²) for even k, a_k = 0 for odd k ≥ 3.  The
  truncation at mode K, G_K = F Fᵀ (F: M × (K + 3) columns 1, cos kφ, sin kφ),
  satisfies ‖G − G_K‖/M ≤ 2 Σ_{k>K} a_k =: e_K, so P = G_K/M + λI (inverted by
  Woodbury through a (K+3)² Cholesky factor) has cond(P⁻¹A) ≤ (1 + e_K/λ)/(1 − e_K/λ)·…
  ≈ 1 + 2 e_K/λ.  K is chosen with e_K ≤ ``eps`` λ, so preconditioned CG
  reaches a true relative residual of 1e-12 in a handful of O(M K) iterations.

If CG has not met the tolerance after ``max_iter`` iterations (or M is so
small that the dense solve is cheaper) the dense matrix is built and factored
(``refactors`` counts these), so every solve meets the tolerance.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .varpro import solve_spd_shifted

TWO_PI = 2.0 * np.pi


def fourier_coefficients(kmax: int) -> np.ndarray:
    """a_k, k = 0..kmax, of k(δ) = a₀ + 2 Σ a_k cos kδ (the arc-cosine kernel on S¹)."""
    k = np.arange(kmax + 1, dtype=float)
    a = np.where(k % 2 == 0, 2.0 / (np.pi**2 * np.maximum((k * k - 1.0) ** 2, 1.0)), 0.0)
    a[0] = 2.0 / np.pi**2
    if kmax >= 1:
        a[1] = 0.125
    return a


def tail_bound(K: int) -> float:
    """e_K = 2 Σ_{k>K} a_k (an upper bound of ‖G − G_K‖/M)."""
    k = np.arange(K + 1, K + 200001, dtype=float)
    k = k[k % 2 == 0]
    s = float((2.0 / (np.pi**2 * (k * k - 1.0) ** 2)).sum())
    kend = k[-1] if k.size else K
    return 2.0 * (s + 2.0 / (np.pi**2) / (6.0 * kend**3))  # + ∫ tail, ≥ the rest


def choose_modes(lam: float, eps: float, kcap: int) -> int:
    """Smallest even K ≥ 2 with e_K ≤ eps λ (at most kcap)."""
    K = 2
    while K < kcap and tail_bound(K) > eps * lam:
        K += 2
    return K


class SortedCircle:
    """Particles on S¹ sorted by angle, with everything the O(M) products need."""

    def __init__(self, theta: np.ndarray):
        a = np.arctan2(theta[:, 1], theta[:, 0])
        self.M = M = a.size
        self.order = order = np.argsort(a, kind="stable")
        s = a[order]
        self.phi = s
        ext = np.concatenate([s, s + TWO_PI])
        self.p = np.searchsorted(ext, s + np.pi, side="left")
        self.j = np.arange(M)
        self.jM = self.j + M
        cs, sn = np.cos(s), np.sin(s)
        self.cos, self.sin = cs, sn
        # basis over the extended list: (cos, sin, φ cos, φ sin)
        c2, s2 = np.concatenate([cs, cs]), np.concatenate([sn, sn])
        self.basis = np.stack([c2, s2, ext * c2, ext * s2], axis=1)
        q = np.pi + s
        self.coef = np.stack([q * cs - sn, cs + q * sn, -cs, -sn], axis=1) / TWO_PI
        self.q = q / TWO_PI
        self._P = np.zeros((2 * M + 1, 4))

    def window_sums(self, v_sorted: np.ndarray) -> np.ndarray:
        """D_j = 2 P[p_j] − P[j] − P[j + M] for prefix sums P of v ⊗ basis."""
        M = self.M
        Q = self.basis * np.concatenate([v_sorted, v_sorted])[:, None]
        np.cumsum(Q, axis=0, out=self._P[1:])
        P = self._P
        D = P[self.p]
        D *= 2.0
        D -= P[: M]
        D -= P[M: 2 * M]
        return D

    def gram_matvec(self, v_sorted: np.ndarray) -> np.ndarray:
        """(G v) in sorted order."""
        D = self.window_sums(v_sorted)
        return np.einsum("ij,ij->i", D, self.coef)

    def matvec_and_grad(self, v_sorted: np.ndarray):
        """(G v)_j and Σ_l v_l ∂K/∂(θ_j·θ_l) θ_l = Σ_l v_l (π − α_jl)/(2π) θ_l, sorted order."""
        D = self.window_sums(v_sorted)
        Gv = np.einsum("ij,ij->i", D, self.coef)
        g = self.q[:, None] * D[:, :2] - D[:, 2:] / TWO_PI
        return Gv, g

    def dense_gram(self) -> np.ndarray:
        """The dense G in sorted order (for the fallback solve): no arccos, angles subtracted."""
        s = self.phi
        d = np.subtract.outer(s, s)
        np.abs(d, out=d)
        np.subtract(np.pi, d, out=d)
        np.abs(d, out=d)  # π − α
        u = np.multiply.outer(self.cos, self.cos)
        u += np.multiply.outer(self.sin, self.sin)  # cos α
        w = np.multiply.outer(self.sin, self.cos)
        w -= np.multiply.outer(self.cos, self.sin)
        np.abs(w, out=w)  # sin α
        d *= u
        d += w
        d /= TWO_PI
        return d


class FourierPCG:
    """(G/M + λ I) c = rhs for the ReLU circle kernel: structured CG, Woodbury preconditioner.

    Interface of :class:`~.varpro.StaleCholeskyCG` (``refactors``, ``iterations``),
    but takes the particles instead of G.  ``solve(circle, rhs_sorted)`` returns
    c in sorted order.
    """

    def __init__(self, lam: float, rtol: float = 1e-12, eps: float = 1e-3, max_iter: int = 30,
                 kcap: int = 512):
        self.lam, self.rtol, self.eps, self.max_iter = float(lam), rtol, eps, max_iter
        self.K = choose_modes(self.lam, eps, kcap)
        self.modes = np.array([1] + list(range(2, self.K + 1, 2)))
        a = fourier_coefficients(self.K)
        self.a0 = a[0]
        self.w = np.sqrt(2.0 * a[self.modes])
        self.ncols = 1 + 2 * self.modes.size
        self.refactors = 0
        self.iterations = 0
        self.solves = 0
        self.x = None  # previous solutions, original particle order
        self.x_prev = None

    def _features(self, circle):
        """F (M × ncols) with F Fᵀ = G_K: columns √a₀, √(2a_k) cos kφ, √(2a_k) sin kφ.

        e^{ikφ} for k = 2, 4, … by repeated multiplication with e^{2iφ} (error
        O(k ε), immaterial: F only preconditions)."""
        M, nm = circle.M, self.modes.size
        E = np.empty((M, nm), dtype=complex)
        E[:, 0] = circle.cos + 1j * circle.sin
        if nm > 1:
            E[:, 1] = E[:, 0] * E[:, 0]
            np.cumprod(np.broadcast_to(E[:, 1:2], (M, nm - 1)), axis=1, out=E[:, 1:])
        F = np.empty((M, self.ncols))
        F[:, 0] = np.sqrt(self.a0)
        np.multiply(E.real, self.w, out=F[:, 1:1 + nm])
        np.multiply(E.imag, self.w, out=F[:, 1 + nm:])
        return F

    def _dense(self, circle, rhs, M):
        self.refactors += 1
        A = circle.dense_gram()
        A /= M
        return solve_spd_shifted(A, self.lam, rhs)

    def solve(self, circle, rhs, guess=None):
        """c (sorted order) with ‖(G/M + λ) c − rhs‖ ≤ rtol ‖rhs‖ (true residual)."""
        M, lam = circle.M, self.lam
        self.solves += 1
        tol = self.rtol * np.linalg.norm(rhs)
        if self.ncols * 3 > M:
            return self._dense(circle, rhs, M)
        F = self._features(circle)
        C = F.T @ F
        C.flat[:: self.ncols + 1] += lam * M
        fac = cho_factor(C, lower=True, overwrite_a=True, check_finite=False)

        def prec(r):
            return (r - F @ cho_solve(fac, F.T @ r, check_finite=False)) / lam

        def op(v):
            out = circle.gram_matvec(v)
            out /= M
            out += lam * v
            return out

        x = prec(rhs) if guess is None else guess.copy()
        r = rhs - op(x)
        z = prec(r)
        p, rz = z.copy(), float(r @ z)
        for _ in range(self.max_iter):
            if np.linalg.norm(r) <= tol:
                break
            Ap = op(p)
            alpha = rz / float(p @ Ap)
            x += alpha * p
            r -= alpha * Ap
            self.iterations += 1
            if np.linalg.norm(r) <= tol:  # confirm on the true residual
                r = rhs - op(x)
                if np.linalg.norm(r) <= tol:
                    return x
            z = prec(r)
            rz, rz_old = float(r @ z), rz
            p *= rz / rz_old
            p += z
        if np.linalg.norm(rhs - op(x)) <= tol:
            return x
        return self._dense(circle, rhs, M)

    def __call__(self, circle, rhs_orig):
        """Solve with the right-hand side in original order; warm start from earlier steps."""
        order = circle.order
        guess = None
        if self.x is not None and self.x.shape == rhs_orig.shape:
            g = self.x if self.x_prev is None else 2.0 * self.x - self.x_prev
            guess = g[order]
        cs = self.solve(circle, rhs_orig[order], guess)
        c = np.empty_like(cs)
        c[order] = cs
        self.x_prev = self.x if self.x is not None and self.x.shape == c.shape else None
        self.x = c
        return c
