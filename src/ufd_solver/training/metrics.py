"""Distances between particle sets and densities (MATH.md §4).

Energy MMD with k(a, b) = −‖a − b‖ in ambient coordinates:

    MMD²(μ, ν) = 2 E‖a − b‖ − E‖a − a'‖ − E‖b − b'‖,   a, a' ~ μ, b, b' ~ ν,

for weighted point sets (a density enters through a quadrature rule).
"""

from __future__ import annotations

import numpy as np


def mean_distance(a, wa, b, wb, chunk=2**22) -> float:
    """Σ_pq wa_p wb_q ‖a_p − b_q‖ (distances through Gram matrices, in chunks)."""
    total = 0.0
    nb = (b * b).sum(1)
    step = max(1, chunk // max(1, b.shape[0]))
    for s in range(0, a.shape[0], step):
        x = a[s:s + step]
        sq = (x * x).sum(1)[:, None] + nb[None, :] - 2.0 * (x @ b.T)
        total += float(wa[s:s + step] @ np.sqrt(np.maximum(sq, 0.0)) @ wb)
    return total


def _weights(x, w):
    return np.full(x.shape[0], 1.0 / x.shape[0]) if w is None else np.asarray(w, dtype=float) / np.sum(w)


class EnergyMMD:
    """Energy MMD to a fixed reference (its self-term computed once)."""

    def __init__(self, ref, weights=None):
        self.ref, self.w = ref, _weights(ref, weights)
        self.self_term = mean_distance(ref, self.w, ref, self.w)

    def __call__(self, a, wa=None) -> float:
        wa = _weights(a, wa)
        m2 = 2 * mean_distance(a, wa, self.ref, self.w) - mean_distance(a, wa, a, wa) - self.self_term
        return float(np.sqrt(max(m2, 0.0)))


def energy_mmd(a, b, wa=None, wb=None) -> float:
    """Energy MMD (the square root of MMD², ≥ 0) between weighted point sets."""
    return EnergyMMD(b, wb)(a, wa)
