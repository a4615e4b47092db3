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
    """What the loop records: particles at output times and a log of scalars.

    ``stopped`` is True when ``after_step`` ended the loop before t_end.
    """

    times: list = field(default_factory=list)
    theta: list = field(default_factory=list)
    c: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    log: list = field(default_factory=list)
    stopped: bool = False


@dataclass
class LoopState:
    """Everything the loop needs to continue bit for bit from schedule point ``k``.

    ``theta`` (and ``c`` for 2TS; None for VarPro, which recomputes c) are the
    values at ``times[k]`` before its evaluation, ``hist`` what was recorded at
    points 0..k−1, ``wall`` the loop's wall seconds so far.  (The objective's
    own state, e.g. the pcg preconditioner, is saved separately by the caller.)
    """

    k: int
    t: float
    theta: np.ndarray
    c: np.ndarray | None
    hist: History
    wall: float


LOG_COLUMNS = ("step", "t", "loss", "risk", "c_min", "c_max", "c_mean", "c_abs_mean", "wall_s")


def train_loop(objective, space, theta0, *, method="varpro", lam, tau, outer_step=1.0,
               output_times, t_end, log_every=None, progress=None, callback=None,
               start: LoopState | None = None, on_row=None, after_step=None) -> History:
    """Run the flow from theta0 (or from ``start``); return a :class:`History`.

    ``on_row(row)`` is called with every log row as it is recorded;
    ``after_step(state)`` after every step with the :class:`LoopState` at the
    next schedule point (before its evaluation): returning True stops the
    loop there (``History.stopped``), and the state it was given continues it.
    """
    times = schedule(tau, t_end, output_times)
    outs = set(float(t) for t in output_times)
    nsteps = len(times) - 1
    log_every = log_every or max(1, nsteps // 1000)
    if start is None:
        theta = np.array(theta0, dtype=float)
        M = theta.shape[0]
        c = np.full(M, 1.0) if method == "2ts" else None
        hist, k0, wall0 = History(), 0, 0.0
    else:
        theta = np.array(start.theta, dtype=float)
        c = None if start.c is None else np.array(start.c, dtype=float)
        hist, k0, wall0 = start.hist, start.k, start.wall
        if not 0 <= k0 <= nsteps or float(times[k0]) != start.t:
            raise ValueError(f"resume point k = {k0}, t = {start.t} is not on this schedule")
    started = time.perf_counter()
    for k in range(k0, nsteps + 1):
        t = times[k]
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
            row = (k, float(t), state.loss, state.risk, float(c.min()), float(c.max()),
                   float(c.mean()), float(np.abs(c).mean()), wall0 + time.perf_counter() - started)
            hist.log.append(row)
            if on_row is not None:
                on_row(row)
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
        if after_step is not None:
            nxt = LoopState(k + 1, float(times[k + 1]), theta, c if method == "2ts" else None, hist,
                            wall0 + time.perf_counter() - started)
            if after_step(nxt):
                hist.stopped = True
                break
    return hist
