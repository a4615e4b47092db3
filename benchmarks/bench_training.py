"""Seconds per training step of the particle trainer, against a plain dense-numpy step.

Case: ReLU features on the circle (the paper's Section 6.1), σ = paper-circle
γ = 100, λ = 10⁻³, VarPro, N = 4096 sampled data points (M* = 4096 teacher
features) or population expectations.  For each width M the trainer's step
(``train_loop``, everything included) and a straightforward dense-numpy step
of the same mathematics are timed side by side in this process:

* dense sampled: Φ = max(0, XΘᵀ), G = ΦᵀΦ/N, Cholesky solve, r = Φc/M − y,
  ∇ = (1[XΘᵀ > 0] ⊙ r)ᵀX/N;
* dense population: the arc-cosine kernel matrix, b by summing the kernel
  against σ on 4096 nodes every step, a dense LU solve (numpy.linalg.solve).

Both linear solvers are timed: "cholesky" (a fresh factorisation every step)
and "pcg" (to 1e-12 true relative residual; sampled: CG preconditioned by an
earlier step's Cholesky factor; population: the structured O(M log M + MK)
path of ``relu_circle_pop.py``, CG on the exact piecewise-separable Gram
matrix preconditioned by its truncated Fourier series).  The reference figure of the authors' PyTorch code at M = 1024, N = 4096 on a
2-core machine is 0.28 s per step (0.22–0.46).  Usage::

    env/run python3 benchmarks/bench_training.py [--widths 32 256 1024 4096]
        [--budget 3] [--json benchmarks/results/training.json]

Set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before starting to choose threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from ufd_solver.config import load_config
from ufd_solver.training.grids import probabilities, quadrature
from ufd_solver.training.runner import Problem
from ufd_solver.training.trainer import train_loop

PYTORCH_S_PER_STEP = 0.28
PAPER_STEPS = 32000


def problem(M, data, N=4096):
    cfg = load_config(None, [f"training.width={M}", f"training.samples={N}", "training.teacher_width=4096",
                             f"training.data={data}", "training.lambda=1e-3", "training.init=random",
                             "output.progress=false"])
    p = Problem(cfg)
    p.build()
    return p


def time_trainer(p, budget, solver="cholesky"):
    """Seconds per step of train_loop (a warm-up step, then enough steps to fill ``budget``)."""
    tau = p.config.training.step_size
    p.objective.set_solver(solver)

    def run(k):
        t0 = time.perf_counter()
        train_loop(p.objective, p.space, p.theta0, lam=p.config.training.lam, tau=tau,
                   output_times=[0.0, k * tau], t_end=k * tau)
        return (time.perf_counter() - t0) / (k + 1)  # k steps + the final evaluation

    est = run(1)
    k = int(max(2, min(200, budget / max(est, 1e-6))))
    return run(k), k


def dense_sampled_step(theta, X, y, lam, tau):
    from scipy.linalg import cho_factor, cho_solve

    N, M = X.shape[0], theta.shape[0]
    Z = X @ theta.T
    Phi = np.maximum(Z, 0.0)
    A = Phi.T @ Phi / (N * M) + lam * np.eye(M)
    c = cho_solve(cho_factor(A), Phi.T @ y / N)
    r = Phi @ c / M - y
    g = (Z > 0).T.astype(float) @ (r[:, None] * X) / N
    v = (c / lam)[:, None] * g
    v -= (v * theta).sum(1, keepdims=True) * theta
    th = theta - tau * v
    return th / np.linalg.norm(th, axis=1, keepdims=True)


def dense_population_step(theta, nodes, p, lam, tau):
    M = theta.shape[0]

    def kern(a, b):
        u = np.clip(a @ b.T, -1, 1)
        al = np.arccos(u)
        return (np.sin(al) + (np.pi - al) * u) / (2 * np.pi), (np.pi - al) / (2 * np.pi)

    K, dK = kern(theta, theta)
    Kz, dKz = kern(theta, nodes)
    b = Kz @ p
    c = np.linalg.solve(K / M + lam * np.eye(M), b)
    g = (dK * (c / M)[None, :]) @ theta - (dKz * p[None, :]) @ nodes
    v = (c / lam)[:, None] * g
    v -= (v * theta).sum(1, keepdims=True) * theta
    th = theta - tau * v
    return th / np.linalg.norm(th, axis=1, keepdims=True)


def time_dense(step, args, budget):
    t0 = time.perf_counter()
    step(*args)
    est = time.perf_counter() - t0
    k = int(max(1, min(100, budget / max(est, 1e-6))))
    t0 = time.perf_counter()
    th = args[0]
    for _ in range(k):
        th = step(th, *args[1:])
    return (time.perf_counter() - t0) / k, k


def blas_name():
    """The BLAS actually loaded (from /proc/self/maps), else numpy's build-time name."""
    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({ln.split()[-1].rsplit("/", 1)[-1] for ln in fh if "blas" in ln.lower()})
        libs = [x for x in libs if "openblas" in x.lower()] or libs
        if libs:
            return ", ".join(libs)
    except OSError:
        pass
    try:
        cfg = np.__config__.CONFIG["Build Dependencies"]
        return f"{cfg['blas']['name']} {cfg['blas'].get('version', '')}".strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 256, 1024, 4096])
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per entry")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "training.json"))
    args = ap.parse_args(argv)
    rows = []
    for M in args.widths:
        row = {"M": M}
        ps = problem(M, "sampled", args.samples)
        row["sampled_s"], row["sampled_steps"] = time_trainer(ps, args.budget)
        row["sampled_pcg_s"], _ = time_trainer(ps, args.budget, "pcg")
        obj = ps.objective
        x = obj.fast.x if obj.fast is not None else obj.x
        y = obj.fast.y if obj.fast is not None else obj.y
        row["dense_sampled_s"], _ = time_dense(dense_sampled_step, (ps.theta0, x, y, 1e-3, 2**-10), args.budget)
        pp = problem(M, "population")
        row["population_s"], row["population_steps"] = time_trainer(pp, args.budget)
        row["population_pcg_s"], _ = time_trainer(pp, args.budget, "pcg")
        nodes, w = quadrature(pp.space, 4096)
        prob = probabilities(pp.config.teacher.density, pp.space, nodes, w, "teacher.density")
        row["dense_population_s"], _ = time_dense(dense_population_step, (pp.theta0, nodes, prob, 1e-3, 2**-10),
                                                  args.budget)
        row["population_paper_run_min"] = row["population_s"] * PAPER_STEPS / 60
        row["population_pcg_paper_run_min"] = row["population_pcg_s"] * PAPER_STEPS / 60
        rows.append(row)
        print(f"M = {M} done", flush=True)
    env = {"python": platform.python_version(), "numpy": np.__version__, "blas": blas_name(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
           "samples": args.samples, "pytorch_reference_s_per_step": PYTORCH_S_PER_STEP}
    hdr = (f"{'M':>5} | {'sampled chol':>12} {'pcg':>9} {'dense ref':>9} {'vs dense':>8} {'vs PyTorch':>10} | "
           f"{'population chol':>15} {'pcg':>9} {'dense ref':>9} {'32k steps (chol/pcg)':>20}")
    print(f"\nReLU on the circle, N = {args.samples}, lambda = 1e-3, VarPro, seconds per step; "
          f"BLAS: {env['blas']}, OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        best = min(r["sampled_s"], r["sampled_pcg_s"])
        print(f"{r['M']:>5} | {r['sampled_s']:>12.4g} {r['sampled_pcg_s']:>9.4g} {r['dense_sampled_s']:>9.4g} "
              f"{r['dense_sampled_s'] / r['sampled_s']:>7.1f}x {PYTORCH_S_PER_STEP / best:>9.1f}x | "
              f"{r['population_s']:>15.4g} {r['population_pcg_s']:>9.4g} {r['dense_population_s']:>9.4g} "
              f"{r['population_paper_run_min']:>9.1f}/{r['population_pcg_paper_run_min']:.1f} min")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"environment": env, "rows": rows}, fh, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
