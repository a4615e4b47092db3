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
import time
from dataclasses import dataclass, field

import numpy as np

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


class TimeIntegrator:
    """Integrate a :class:`UFDProblem` from t = 0 to ``cfg.t_end``."""

    def __init__(self, problem: UFDProblem, cfg: SolverConfig):
        self.problem = problem
        self.cfg = cfg
        self.order = 2 if cfg.scheme == "bdf2" else 1
        self.steps = 0
        self.rejected_total = 0
        self.failed_solves = 0

    def run(self, on_step=None, on_output=None, progress=None) -> dict:
        """Run to t_end.  ``on_step(record)`` after every accepted step,
        ``on_output(t)`` at every output time (t = 0 first)."""
        P, cfg = self.problem, self.cfg
        comm = P.comm
        sigma = P.sigma.x.array
        t = 0.0
        hist_t = [0.0]
        hist_rho = [P.rho_n.x.array.copy()]
        hist_logp = [np.log(P.p.x.array.copy())]
        hist_p = [None]  # the initial density did not come from a solve
        hist_dt: list[float] = []
        outputs = [s for s in cfg.output_times if s > 0]
        if on_output is not None:
            on_output(0.0)
        dt = cfg.dt0
        dt_max = cfg.dt_max if cfg.dt_max > 0 else math.inf
        tscale = max(1.0, cfg.t_end)
        start = time.perf_counter()
        k_out = 0
        while k_out < len(outputs):
            target = outputs[k_out]
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
                if not ok:
                    self.failed_solves += 1
                    retries += 1
                    if retries > cfg.max_retries:
                        raise SolverError(f"Newton failed {retries} times in a row at t = {t:.6g} "
                                          f"(last dt = {h:.3g}); see solver.max_retries")
                    log.info("Newton failed at t = %.6g with dt = %.3g; retrying with dt/4", t, h)
                    dt = 0.25 * h
                    continue
                rho_c = sigma / P.p.x.array
                # local error estimate
                if len(hist_t) >= 2:
                    npred = min(len(hist_t), self.order + 1)
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
                    self.rejected_total += 1
                    retries += 1
                    if retries > cfg.max_retries + 20:
                        raise SolverError(f"step rejected {retries} times in a row at t = {t:.6g}")
                    dt = h * max(0.2, cfg.safety * err ** (-1.0 / (self.order + 1)))
                    continue
                break
            # accept
            t_new = target if clamped and abs(t + h - target) <= 1e-9 * tscale else t + h
            t = t_new
            hist_t.append(t)
            hist_rho.append(rho_c.copy())
            hist_logp.append(np.log(P.p.x.array))
            hist_p.append(P.p.x.array.copy())
            hist_dt.append(h)
            del hist_t[:-3], hist_rho[:-3], hist_logp[:-3], hist_p[:-3], hist_dt[:-3]
            self.steps += 1
            if len(hist_t) <= 2 and err == 0.0:
                growth = 1.0
            else:
                growth = min(cfg.max_growth,
                             max(0.2, cfg.safety * err ** (-1.0 / (self.order + 1))) if err > 0 else cfg.max_growth)
            dt_next = h * growth
            if not cfg.adaptive:
                dt_next = cfg.dt0
            elif clamped and err <= 1.0:
                dt_next = max(dt_next, min(dt, h * cfg.max_growth))
            dt = dt_next
            diag = P.diagnostics()
            if not all(np.isfinite(v) for v in diag.values()):
                raise SolverError(f"non-finite diagnostics at t = {t:.6g}: {diag}")
            rec = StepRecord(t, h, its, kits, rejected, err, diag)
            if on_step is not None:
                on_step(rec)
            if progress is not None:
                progress.update(t, f"t={t:.4g} dt={h:.2e} F={diag['energy']:.3e}")
            if t >= target:
                k_out += 1
                if on_output is not None:
                    on_output(t)
        wall = time.perf_counter() - start
        return {"steps": self.steps, "rejected_steps": self.rejected_total,
                "failed_solves": self.failed_solves, "t_final": t, "solve_time_s": wall}
