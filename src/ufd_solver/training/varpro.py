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
    factor = cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
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
