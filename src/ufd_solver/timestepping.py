"""Adaptive BDF2 / backward-Euler time integration with local error control.

Local error estimate (Milne's device).  After a step of size h from t_n with
previous steps h₁ = t_n − t_{n−1}, h₂ = t_{n−1} − t_{n−2}, the corrector ρ_c
is compared with the polynomial extrapolation ρ_p of the accepted history:

* BDF2 (ω = h/h₁), quadratic predictor: ρ_c − ρ(t) ≈ −K_c ρ''' with
  K_c = h³(1+ω)²/(6ω(1+2ω)); ρ_p − ρ(t) ≈ −K_p ρ''' with
  K_p = h(h+h₁)(h+h₁+h₂)/6; hence  LTE ≈ K_c/(K_p − K_c) · (ρ_c − ρ_p)
  (2/7 of the difference for equal steps).
* backward Euler, linear predictor: LTE ≈ h/(2h + h₁) · (ρ_c − ρ_p).

The error norm is the lumped-mass weighted RMS of LTE_i/(atol + rtol|ρ_i|);
a step with norm > 1 is rejected, and the next step is
h·min(max_growth, max(0.2, safety·err^(−1/(q+1)))), q the order.  For BDF2
the step ratio is also capped at ω ≤ 2.4 < 1 + √2 (zero-stability of
variable-step BDF2).  Output times are hit exactly (the step is shortened,
or two equal steps are taken instead of a long and a tiny one).  A failed
Newton solve (or any NaN) cuts the step by 4 and retries, at most
``max_retries`` times in a row; NaN never reaches an output.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .config import SolverConfig
from .errors import SolverError
from .problem import UFDProblem

log = logging.getLogger(__name__)

OMEGA_MAX = 2.4
DIAGNOSTIC_COLUMNS = ("t", "dt", "mass", "energy", "dissipation", "l1_to_sigma", "min_rho",
                      "newton_its", "krylov_its", "rejected", "error_estimate")


def bdf_coefficients(scheme: str, omega: float | None) -> tuple[float, float, float]:
    """(β₀, β₁, β₂) with Δt·∂_tρ ≈ β₀ρⁿ⁺¹ + β₁ρⁿ + β₂ρⁿ⁻¹."""
    if scheme == "be" or omega is None:
        return 1.0, -1.0, 0.0
    w = omega
    return (1 + 2 * w) / (1 + w), -(1 + w), w * w / (1 + w)


def extrapolation_weights(ts, t: float) -> np.ndarray:
    """Lagrange weights l_i(t) of the polynomial through the times ``ts``."""
    ts = np.asarray(ts, dtype=float)
    w = np.ones(len(ts))
    for i in range(len(ts)):
        for j in range(len(ts)):
            if i != j:
                w[i] *= (t - ts[j]) / (ts[i] - ts[j])
    return w


def error_factor(scheme: str, h: float, hist_dt: list[float]) -> float:
    """Factor turning (corrector − predictor) into the local error (see module doc)."""
    if scheme == "bdf2" and len(hist_dt) >= 2:
        h1, h2 = hist_dt[-1], hist_dt[-2]
        w = h / h1
        kc = h**3 * (1 + w) ** 2 / (6 * w * (1 + 2 * w))
        kp = h * (h + h1) * (h + h1 + h2) / 6
        return kc / (kp - kc)
    h1 = hist_dt[-1]
    return h / (2 * h + h1)


@dataclass
class StepRecord:
    t: float
    dt: float
    newton_its: int
    krylov_its: int
    rejected: int
    error_estimate: float
    diagnostics: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"t": self.t, "dt": self.dt, **self.diagnostics, "newton_its": self.newton_its,
                "krylov_its": self.krylov_its, "rejected": self.rejected,
                "error_estimate": self.error_estimate}


@dataclass
class IntegratorState:
    """Everything the integrator needs to continue a run (checkpointed).

    ``hist_rho``/``hist_p`` hold the last (up to) three accepted states as
    local dof arrays; ``hist_p[k]`` is None for the initial density.
    """

    t: float
    dt: float
    k_out: int
    hist_t: list
    hist_dt: list
    hist_rho: list
    hist_p: list
    steps: int = 0
    rejected_total: int = 0
    failed_solves: int = 0


class Interrupted(Exception):
    """Raised by :meth:`TimeIntegrator.run` when ``should_stop()`` said so."""


def _fault_plan() -> dict:
    """Fault injection for tests: ``UFD_INJECT_FAULTS="newton@5,nan@8,newton@12+"``
    makes the Newton solve of accepted-step number 5 fail once, returns NaN at
    step 8, and fails every solve from step 12 on."""
    plan = {}
    for item in filter(None, os.environ.get("UFD_INJECT_FAULTS", "").split(",")):
        kind, _, step = item.partition("@")
        persistent = step.endswith("+")
        plan[int(step.rstrip("+"))] = (kind.strip(), persistent)
    return plan


class TimeIntegrator:
    """Integrate a :class:`UFDProblem` from t = 0 (or a saved state) to ``cfg.t_end``."""

    def __init__(self, problem: UFDProblem, cfg: SolverConfig, state: IntegratorState | None = None):
        self.problem = problem
        self.cfg = cfg
        self.order = 2 if cfg.scheme == "bdf2" else 1
        self.restarted = state is not None
        if state is None:
            P = problem
            state = IntegratorState(t=0.0, dt=cfg.dt0, k_out=0, hist_t=[0.0], hist_dt=[],
                                    hist_rho=[P.rho_n.x.array.copy()], hist_p=[None])
        self.state = state
        self._p0 = problem.p.x.array.copy()  # initial guess of the very first step
        self._faults = _fault_plan()
        self._fired: set = set()

    # counters (kept in the state so that a restart continues them)
    @property
    def steps(self) -> int:
        return self.state.steps

    @property
    def rejected_total(self) -> int:
        return self.state.rejected_total

    @property
    def failed_solves(self) -> int:
        return self.state.failed_solves

    def _inject(self, ok: bool) -> bool:
        """Apply the test fault plan (see :func:`_fault_plan`) to this solve."""
        n = self.state.steps + 1
        fault = None
        if n in self._faults and n not in self._fired:
            fault = self._faults[n][0]
            self._fired.add(n)
        for k, (kind, persistent) in self._faults.items():
            if persistent and k <= n:
                fault = kind
        if fault == "nan":
            self.problem.p.x.array[0] = np.nan
        elif fault == "newton":
            return False
        return ok

    def run(self, on_step=None, on_output=None, progress=None, on_accept=None,
            should_stop=None) -> dict:
        """Run to t_end.

        ``on_step(record)`` after every accepted step, ``on_output(t)`` at every
        output time (t = 0 first, unless continuing a saved state),
        ``on_accept(state)`` after each accepted step and its outputs (for
        checkpoints), ``should_stop()`` (collective) ends the run with
        :class:`Interrupted` after a step.
        """
        P, cfg, S = self.problem, self.cfg, self.state
        sigma = P.sigma.x.array
        hist_logp = [np.log(p if p is not None else self._p0) for p in S.hist_p]
        outputs = [s for s in cfg.output_times if s > 0]
        if on_output is not None and not self.restarted:
            on_output(0.0)
        dt_max = cfg.dt_max if cfg.dt_max > 0 else math.inf
        tscale = max(1.0, cfg.t_end)
        start = time.perf_counter()
        while S.k_out < len(outputs):
            target = outputs[S.k_out]
            t, dt = S.t, S.dt
            hist_t, hist_dt, hist_rho, hist_p = S.hist_t, S.hist_dt, S.hist_rho, S.hist_p
            retries = 0
            rejected = 0
            while True:
                h = min(dt, dt_max)
                if self.order == 2 and hist_dt:
                    h = min(h, OMEGA_MAX * hist_dt[-1])
                remaining = target - t
                clamped = False
                if h >= remaining - 1e-12 * tscale:
                    h, clamped = remaining, True
                elif 2 * h > remaining:
                    h, clamped = 0.5 * remaining, True
                if h < cfg.dt_min:
                    raise SolverError(f"time step {h:.3g} fell below solver.dt_min = {cfg.dt_min:g} "
                                      f"at t = {t:.6g}")
                use_bdf2 = self.order == 2 and len(hist_dt) >= 1
                omega = h / hist_dt[-1] if use_bdf2 else None
                beta = bdf_coefficients(cfg.scheme if use_bdf2 else "be", omega)
                if use_bdf2:
                    P.set_history(hist_rho[-1], hist_p[-1], hist_rho[-2], hist_p[-2])
                else:
                    P.set_history(hist_rho[-1], hist_p[-1])
                P.set_coefficients(h, beta, t + h)
                # initial guess: extrapolate log p
                npred = min(len(hist_t), self.order + 1)
                wts = extrapolation_weights(hist_t[-npred:], t + h)
                guess = sum(w * lp for w, lp in zip(wts, hist_logp[-npred:]))
                P.p.x.array[:] = np.exp(np.clip(guess, -700, 700))
                ok, its, kits = P.solve_step()
                ok = self._inject(ok)
                local_bad = int(not np.all(np.isfinite(P.p.x.array)) or np.any(P.p.x.array <= 0))
                ok = ok and not P.comm.allreduce(local_bad, op=MPI.MAX)
                if not ok:
                    S.failed_solves += 1
                    retries += 1
                    if retries > cfg.max_retries:
                        raise SolverError(f"Newton failed {retries} times in a row at t = {t:.6g} "
                                          f"(last dt = {h:.3g}); see solver.max_retries")
                    log.info("Newton failed (or NaN) at t = %.6g with dt = %.3g; retrying with dt/4",
                             t, h)
                    dt = 0.25 * h
                    continue
                rho_c = sigma / P.p.x.array
                # local error estimate
                if len(hist_t) >= 2:
                    wts = extrapolation_weights(hist_t[-npred:], t + h)
                    rho_p = sum(w * r for w, r in zip(wts, hist_rho[-npred:]))
                    scheme_est = "bdf2" if (use_bdf2 and npred == 3) else "be"
                    fac = error_factor(scheme_est, h, hist_dt)
                    tol = cfg.atol + cfg.rtol * np.maximum(np.abs(rho_c), np.abs(hist_rho[-1]))
                    err = P.weighted_rms(fac * (rho_c - rho_p), tol)
                else:
                    err = 0.0
                if not np.isfinite(err):
                    err = math.inf
                if not cfg.adaptive:
                    err = min(err, 1.0)
                if err > 1.0:
                    rejected += 1
                    S.rejected_total += 1
                    retries += 1
                    if retries > cfg.max_retries + 20:
                        raise SolverError(f"step rejected {retries} times in a row at t = {t:.6g}")
                    dt = h * max(0.2, cfg.safety * err ** (-1.0 / (self.order + 1)))
                    continue
                break
            # accept
            t = target if clamped and abs(t + h - target) <= 1e-9 * tscale else t + h
            hist_t.append(t)
            hist_rho.append(rho_c.copy())
            hist_logp.append(np.log(P.p.x.array))
            hist_p.append(P.p.x.array.copy())
            hist_dt.append(h)
            del hist_t[:-3], hist_rho[:-3], hist_logp[:-3], hist_p[:-3], hist_dt[:-3]
            S.steps += 1
            if len(hist_t) <= 2 and err == 0.0:
                growth = 1.0
            elif err > 0:
                growth = min(cfg.max_growth, max(0.2, cfg.safety * err ** (-1.0 / (self.order + 1))))
            else:
                growth = cfg.max_growth
            dt_next = h * growth
            if not cfg.adaptive:
                dt_next = cfg.dt0
            elif clamped:
                dt_next = max(dt_next, min(dt, h * cfg.max_growth))
            S.t, S.dt = t, dt_next
            diag = P.diagnostics()
            if not all(np.isfinite(v) for v in diag.values()):
                raise SolverError(f"non-finite diagnostics at t = {t:.6g}: {diag}")
            if on_step is not None:
                on_step(StepRecord(t, h, its, kits, rejected, err, diag))
            if progress is not None:
                progress.update(t, f"t={t:.4g} dt={h:.2e} F={diag['energy']:.3e}")
            if t >= target:
                S.k_out += 1
                if on_output is not None:
                    on_output(t)
            if on_accept is not None:
                on_accept(S)
            if should_stop is not None and should_stop():
                raise Interrupted(f"stopped at t = {t:.6g}")
        wall = time.perf_counter() - start
        return {"steps": S.steps, "rejected_steps": S.rejected_total,
                "failed_solves": S.failed_solves, "t_final": S.t, "solve_time_s": wall}
