"""The training loop: explicit Euler on the feature flow with retraction (MATH.md §2).

    θ_j ← Retr(θ_j − h (c_j/λ) P_θj E_x[(f − y) ∇_θ φ(θ_j, x)])

with P_θ the tangent projection (I − θθᵀ on S^{d−1}, identity on the torus)
and Retr the normalisation onto S^{d−1} or the periodic wrap on the torus.
VarPro solves for c at every step; 2TS moves c by c ← c − (h/τ) η (h_c + λ(c − c₀)).

Steps are h = τ on the grid t = kτ, shortened where an output time falls
between grid points so that every output time is hit exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


def schedule(tau: float, t_end: float, output_times) -> np.ndarray:
    """Times visited: t = kτ up to t_end, with every output time inserted."""
    n = int(np.floor(t_end / tau * (1 + 1e-12)))
    grid = tau * np.arange(n + 1)
    outs = np.union1d(np.asarray(output_times, dtype=float), [t_end])
    times = np.union1d(grid[grid < t_end * (1 - 1e-15)], outs)
    # merge points closer than 1e-9 τ (round-off duplicates of grid points)
    keep = np.concatenate([[True], np.diff(times) > 1e-9 * tau])
    times = times[keep]
    for t in outs:  # an output time replaces the grid point it merged with
        times[np.argmin(np.abs(times - t))] = t
    return times


def tangent(space, theta, v):
    if space.kind in ("circle", "sphere"):
        return v - (v * theta).sum(1, keepdims=True) * theta
    return v


@dataclass
class History:
    """What the loop records: particles at output times and a log of scalars."""

    times: list = field(default_factory=list)
    theta: list = field(default_factory=list)
    c: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    log: list = field(default_factory=list)


LOG_COLUMNS = ("step", "t", "loss", "risk", "c_min", "c_max", "c_mean", "c_abs_mean", "wall_s")


def train_loop(objective, space, theta0, *, method="varpro", lam, tau, outer_step=1.0,
               output_times, t_end, log_every=None, progress=None, callback=None) -> History:
    """Run the flow from theta0; return a :class:`History`."""
    times = schedule(tau, t_end, output_times)
    outs = set(float(t) for t in output_times)
    nsteps = len(times) - 1
    log_every = log_every or max(1, nsteps // 1000)
    theta = np.array(theta0, dtype=float)
    M = theta.shape[0]
    c = np.full(M, 1.0) if method == "2ts" else None
    hist = History()
    start = time.perf_counter()
    for k, t in enumerate(times):
        state = objective.varpro(theta) if method == "varpro" else objective.fixed(theta, c)
        c = state.c
        if not np.isfinite(state.loss):
            raise FloatingPointError(f"the loss became {state.loss} at t = {t}")
        if float(t) in outs:
            hist.times.append(float(t))
            hist.theta.append(theta.copy())
            hist.c.append(c.copy())
            hist.loss.append(state.loss)
        if k % log_every == 0 or k == nsteps or float(t) in outs:
            hist.log.append((k, float(t), state.loss, state.risk, float(c.min()), float(c.max()),
                             float(c.mean()), float(np.abs(c).mean()), time.perf_counter() - start))
        if progress is not None:
            progress.update(float(t), f"loss {state.loss:.4e}")
        if callback is not None:
            callback(k, float(t), theta, state)
        if k == nsteps:
            break
        h = float(times[k + 1] - t)
        vel = tangent(space, theta, (c / lam)[:, None] * state.grad)
        theta = space.project(theta - h * vel)
        if method == "2ts":
            c = c - (h / tau) * outer_step * (state.h + lam * (c - objective.c0))
    return hist
