"""Ridge solves of variable projection: the outer weights eliminated exactly.

Primal (M × M): (G/M + λ I) c = rhs, G = ΦᵀΦ/N (or the population kernel).
Dual (N × N), cheaper when N < M: writing c = c₀ + Φᵀα with r₀ = y − Φc₀/M,

    (ΦΦᵀ/(N M) + λ I_N) α = r₀/N

(push-through identity (ΦᵀΦ/(NM) + λ)⁻¹Φᵀ = Φᵀ(ΦΦᵀ/(NM) + λ)⁻¹).  Both by
Cholesky (LAPACK potrf/potrs), no inverse is formed.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve


def solve_spd_shifted(A: np.ndarray, shift: float, rhs: np.ndarray) -> np.ndarray:
    """Solve (A + shift I) x = rhs for symmetric A (A is overwritten)."""
    A.flat[:: A.shape[0] + 1] += shift
    # A is symmetric: factor its transpose, a Fortran-ordered view (no copy)
    factor = cho_factor(A.T, lower=True, overwrite_a=True, check_finite=False)
    return cho_solve(factor, rhs, check_finite=False)


def ridge_primal(G: np.ndarray, rhs: np.ndarray, lam: float, M: int) -> np.ndarray:
    """c with (G/M + λ I) c = rhs.  G is not modified."""
    return solve_spd_shifted(G / M, lam, rhs)


def ridge_dual(Phi: np.ndarray, y: np.ndarray, c0: np.ndarray, lam: float) -> np.ndarray:
    """The same solution through the N × N system, for sampled data Φ (N × M)."""
    N, M = Phi.shape
    r0 = y - Phi @ c0 / M
    alpha = solve_spd_shifted(Phi @ Phi.T / (N * M), lam, r0 / N)
    return c0 + Phi.T @ alpha


class StaleCholeskyCG:
    """(G/M + λ I) c = rhs by conjugate gradients preconditioned with the Cholesky
    factor of an earlier step's matrix, warm-started from the previous c.

    The features move by O(τ) per step, so the old factor is an excellent
    preconditioner: a few iterations reach ‖residual‖ ≤ ``rtol`` ‖rhs‖ (checked on
    the true residual).  When ``max_iter`` iterations do not suffice, the matrix
    is refactored and solved directly, so every solve meets the tolerance.
    Costs O(M²) per iteration instead of the O(M³) of a factorisation.
    """

    def __init__(self, lam: float, rtol: float = 1e-12, max_iter: int = 8):
        self.lam, self.rtol, self.max_iter = float(lam), rtol, max_iter
        self.factor = None
        self.x = None
        self.x_prev = None
        self.refactors = 0
        self.iterations = 0

    def __call__(self, G: np.ndarray, rhs: np.ndarray, M: int) -> np.ndarray:
        A = G / M
        A.flat[:: M + 1] += self.lam
        tol = self.rtol * np.linalg.norm(rhs)
        if self.factor is not None and self.x is not None and self.x.shape == rhs.shape:
            x = self.x.copy() if self.x_prev is None else 2.0 * self.x - self.x_prev
            r = rhs - A @ x
            z = cho_solve(self.factor, r, check_finite=False)
            p, rz = z, float(r @ z)
            for _ in range(self.max_iter):
                if np.linalg.norm(r) <= tol:
                    break
                Ap = A @ p
                alpha = rz / float(p @ Ap)
                x += alpha * p
                r -= alpha * Ap
                z = cho_solve(self.factor, r, check_finite=False)
                rz, rz_old = float(r @ z), rz
                p = z + (rz / rz_old) * p
                self.iterations += 1
            if np.linalg.norm(rhs - A @ x) <= tol:
                self.x_prev, self.x = self.x, x
                return x
        self.refactors += 1
        self.factor = cho_factor(A.T.copy(order="F"), lower=True, overwrite_a=True, check_finite=False)
        x = cho_solve(self.factor, rhs, check_finite=False)
        self.x_prev = self.x if self.x is not None and self.x.shape == x.shape else None
        self.x = x
        return x
