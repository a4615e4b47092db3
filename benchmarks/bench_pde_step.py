"""Cost of one UFD time step against one linear Poisson solve on the same sphere mesh.

Case: the icosphere of refinement level L (10·4^L + 2 vertices = P1 dofs),
teacher σ = von Mises mixture (centres (0,0,1), (1,0,0), κ = 20, 8), initial
ρ₀ ∝ 1 + 0.5x + 0.5y² (non-trivial, far from σ).  Per level, in one process
and side by side (interleaved, median of ``--repeat`` repeats):

* **Poisson**: one solve of (K + M) u = M σ on the same P1 space, K the
  stiffness and M the consistent mass matrix (nonsingular on the closed
  sphere), CG + BoomerAMG to ksp_rtol = 1e-9 (the per-linear-solve tolerance
  of the old UFD defaults; the UFD step has to reduce its residual from the
  predictor's ~1e-3…1e-5 to 1e-11 of the mass scale, i.e. by 1e-6…1e-8), zero
  initial guess.  Timed: matrix and vector assembly into preallocated objects,
  KSPSetOperators, PC (BoomerAMG) setup and the solve.  Two Poisson variants are
  timed, BoomerAMG with PETSc's defaults and with the UFD solver's hypre
  options; the ratio uses the faster one.
* **UFD step**: one Newton solve of a BDF2 step of size dt from a state taken
  out of an actual run (the state after 3 accepted steps for dt ≤ 1e-3; for
  larger dt the first state whose last step was ≥ dt/2.4, so that the step
  ratio respects the integrator's BDF2 cap, or else the final state of the run
  with a backward-Euler step from the last p, as the integrator cannot take
  such a BDF2 step), else with the integrator's predictor (extrapolated log p).  "warm": the preconditioner state a
  running integrator has (reused when the solver decides so); "cold": the
  preconditioner is rebuilt at the first Newton iteration.
* **time to solution**: ``TimeIntegrator.run`` to t_end (default 0.01: this
  case needs ~380 steps to t = 1 already at level 5, dt stays ~5e-3, so t = 1
  does not fit the time budget at level 8) with the default adaptive BDF2,
  from ρ₀; its exponent in N is fitted over the levels.

Usage::

    env/run python3 benchmarks/bench_pde_step.py [--levels 5 6 7 8] [--dts 1e-4 0.1]
        [--repeat 3] [--t-end 0.01] [--json benchmarks/results/pde_step.json]
        [--petsc KEY=VALUE ...]  (extra solver.petsc_options, e.g. pc_reuse=never)
    env/run mpirun -n 2 python3 benchmarks/bench_pde_step.py ...

Results of other rank counts / levels / labels already in the JSON file are
kept (entries with the same label, ranks and level are replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import ufl
from ufd_solver import nls
from ufd_solver.config import load_config
from ufd_solver.run import build_problem
from ufd_solver.timestepping import OMEGA_MAX, TimeIntegrator, bdf_coefficients, extrapolation_weights

TEACHER = {"mixture": "vonmises", "centers": [[0, 0, 1], [1, 0, 0]], "kappa": [20, 8]}
INITIAL = "1 + 0.5*x + 0.5*y*y"
POISSON_RTOL = 1e-9


def parse_value(s):
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def make_config(level, t_end, petsc):
    return load_config(data={
        "mesh": {"kind": "sphere", "resolution": level},
        "teacher": {"density": TEACHER},
        "initial": {"density": INITIAL},
        "solver": {"t_end": t_end, "num_outputs": 1, "petsc_options": petsc},
        "output": {"progress": False, "vtx": False, "xdmf": False},
    })


def timed(comm, fn):
    comm.Barrier()
    t0 = time.perf_counter()
    out = fn()
    comm.Barrier()
    return comm.allreduce(time.perf_counter() - t0, op=MPI.MAX), out


class Poisson:
    """(K + M) u = M σ with CG + BoomerAMG; assembly + PC setup + solve per call."""

    def __init__(self, problem, hypre_opts: dict, prefix: str):
        V = problem.V
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        self.a = dolfinx.fem.form((ufl.inner(ufl.grad(u), ufl.grad(v)) + u * v) * ufl.dx)
        self.L = dolfinx.fem.form(problem.sigma * v * ufl.dx)
        self.A = dolfinx.fem.petsc.create_matrix(self.a)
        self.b = dolfinx.fem.petsc.create_vector(self.L)
        self.x = self.b.duplicate()
        opts = PETSc.Options()
        opts.prefixPush(prefix)
        for k, val in {"ksp_type": "cg", "ksp_rtol": POISSON_RTOL, "ksp_atol": 1e-30, "ksp_max_it": 1000,
                       "pc_type": "hypre", "pc_hypre_type": "boomeramg", **hypre_opts}.items():
            opts[k] = val
        opts.prefixPop()
        self.ksp = PETSc.KSP().create(problem.comm)
        self.ksp.setOptionsPrefix(prefix)
        self.ksp.setFromOptions()

    def solve(self):
        self.A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.A, self.a)
        self.A.assemble()
        with self.b.localForm() as bl:
            bl.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, self.L)
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        self.ksp.setOperators(self.A)
        self.ksp.solve(self.b, self.x)
        assert self.ksp.getConvergedReason() > 0, self.ksp.getConvergedReason()
        return self.ksp.getIterationNumber()

    def destroy(self):
        for o in (self.ksp, self.A, self.b, self.x):
            o.destroy()


def snapshot(S):
    return {"t": S.t, "hist_t": list(S.hist_t), "hist_dt": list(S.hist_dt),
            "hist_rho": [r.copy() for r in S.hist_rho],
            "hist_p": [None if p is None else p.copy() for p in S.hist_p]}


def set_step(P, snap, h):
    """Coefficients, history and predictor of a step of size h, as TimeIntegrator sets them:
    variable-step BDF2 with a quadratic predictor of log p when h/h₁ ≤ 2.4 (the
    integrator's cap), otherwise backward Euler with a linear predictor."""
    hist_t, hist_dt, hist_rho, hist_p = snap["hist_t"], snap["hist_dt"], snap["hist_rho"], snap["hist_p"]
    t = snap["t"]
    omega = h / hist_dt[-1]
    if omega <= OMEGA_MAX:
        beta = bdf_coefficients("bdf2", omega)
        P.set_history(hist_rho[-1], hist_p[-1], hist_rho[-2], hist_p[-2])
        npred = min(len(hist_t), 3)
    else:
        beta = bdf_coefficients("be", None)
        P.set_history(hist_rho[-1], hist_p[-1])
        npred = 1  # extrapolating h/h₁ ≫ 1 step lengths ahead is useless: last p
    P.set_coefficients(h, beta, t + h)
    wts = extrapolation_weights(hist_t[-npred:], t + h)
    guess = sum(w * np.log(p) for w, p in zip(wts, hist_p[-npred:]))
    P.p.x.array[:] = np.exp(np.clip(guess, -700, 700))
    return "bdf2" if omega <= OMEGA_MAX else "be"


def bench_level(level, args, petsc, comm):
    config = make_config(level, args.t_end, petsc)
    P = build_problem(config, comm)
    ndofs = P.W.dofmap.index_map.size_global
    solver = P.solver

    # --- a short full run: time to solution, and states to take steps from ------
    integ = TimeIntegrator(P, config.solver)
    snaps = {}
    dts = sorted(args.dts)
    hs = []

    def on_step(rec):
        S = integ.state
        hs.append(rec.dt)
        if S.steps == 3:
            snaps["early"] = snapshot(S)
        for dt in dts:
            if dt > 1e-3 and dt not in snaps and rec.dt >= dt / OMEGA_MAX and S.steps >= 3:
                snaps[dt] = snapshot(S)

    t_run, stats = timed(comm, lambda: integ.run(on_step=on_step))
    snaps["last"] = snapshot(integ.state)
    mass0 = 1.0
    mass_drift = abs(P.diagnostics()["mass"] - mass0)
    row = {"level": level, "dofs": ndofs, "ranks": comm.size, "tts_s": t_run, "tts_steps": stats["steps"],
           "tts_rejected": stats["rejected_steps"], "tts_failed": stats["failed_solves"],
           "tts_mass_drift": mass_drift, "tts_dt_max": max(hs) if hs else 0.0,
           "tts_s_per_step": t_run / max(1, stats["steps"])}

    # --- Poisson solvers ------------------------------------------------------------
    hypre_ufd = {k: v for k, v in solver.options.items() if k.startswith("pc_hypre_")}
    poissons = {"default": Poisson(P, {}, "bench_pd_"), "ufd": Poisson(P, hypre_ufd, "bench_pu_")}
    for p in poissons.values():  # warm-up (JIT, first allocation)
        p.solve()

    # --- steps --------------------------------------------------------------------------
    step_cases = []
    for dt in dts:
        snap = snaps["early"] if dt <= 1e-3 else snaps.get(dt, snaps["last"])
        step_cases.append((dt, snap))

    def do_step(dt, snap, cold):
        set_step(P, snap, dt)
        if cold:
            solver.reset_preconditioner()
        ok, its, kits = P.solve_step()
        return ok, its, kits

    times = {k: [] for k in poissons}
    pits = {}
    st = {(dt, c): [] for dt, _ in step_cases for c in ("warm", "cold")}
    sits = {}
    for r in range(args.repeat):
        for name, p in poissons.items():
            t, it = timed(comm, p.solve)
            times[name].append(t)
            pits[name] = it
        for dt, snap in step_cases:
            # "warm": the preconditioner state of a run taking steps of about this
            # size: one untimed step of the same size first (as the step before)
            do_step(dt, snap, False)
            for c in ("warm", "cold"):
                t, (ok, its, kits) = timed(comm, lambda: do_step(dt, snap, c == "cold"))
                if not ok:
                    raise RuntimeError(f"step dt={dt} ({c}) did not converge at level {level}")
                st[(dt, c)].append(t)
                sits[(dt, c)] = (its, kits)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = min(med, key=med.get)
    row.update({"poisson_s": med[best], "poisson_variant": best, "poisson_its": pits[best],
                "poisson_default_s": med["default"], "poisson_ufd_hypre_s": med["ufd"],
                "poisson_default_its": pits["default"], "poisson_ufd_hypre_its": pits["ufd"], "steps": []})
    for dt, snap in step_cases:
        e = {"dt": dt, "t_from": snap["t"], "omega": dt / snap["hist_dt"][-1],
             "scheme": "bdf2" if dt / snap["hist_dt"][-1] <= OMEGA_MAX else "be"}
        for c in ("warm", "cold"):
            m = statistics.median(st[(dt, c)])
            e[f"{c}_s"] = m
            e[f"{c}_ratio"] = m / med[best]
            e[f"{c}_newton"], e[f"{c}_krylov"] = sits[(dt, c)]
        row["steps"].append(e)
    row["run_step_ratio"] = row["tts_s_per_step"] / med[best]
    for p in poissons.values():
        p.destroy()
    P.destroy()
    return row


def fit_exponent(rows):
    rows = [r for r in rows if r["tts_s"] > 0]
    if len(rows) < 2:
        return float("nan")
    n = np.log([r["dofs"] for r in rows])
    t = np.log([r["tts_s"] for r in rows])
    return float(np.polyfit(n, t, 1)[0])


def table(rows, dts):
    head = f"{'lvl':>3} {'dofs':>8} {'rk':>2} {'Poisson s':>9} {'its':>3}"
    for dt in dts:
        head += f" | dt={dt:<7g} {'warm s':>7} {'ratio':>5} {'N/K':>6} {'cold s':>7} {'ratio':>5} {'N/K':>6}"
    head += f" | {'TTS s':>7} {'steps':>5} {'s/step':>6} {'ratio':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        s = f"{r['level']:>3} {r['dofs']:>8} {r['ranks']:>2} {r['poisson_s']:>9.3f} {r['poisson_its']:>3}"
        for e in r["steps"]:
            s += (f" | {'':<10} {e['warm_s']:>7.3f} {e['warm_ratio']:>5.2f} "
                  f"{str(e['warm_newton']) + '/' + str(e['warm_krylov']):>6} {e['cold_s']:>7.3f} "
                  f"{e['cold_ratio']:>5.2f} {str(e['cold_newton']) + '/' + str(e['cold_krylov']):>6}")
        s += (f" | {r['tts_s']:>7.2f} {r['tts_steps']:>5} {r['tts_s_per_step']:>6.3f} "
              f"{r['run_step_ratio']:>5.2f}")
        lines.append(s)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[5, 6, 7, 8])
    ap.add_argument("--dts", type=float, nargs="+", default=[1e-4, 0.1])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--t-end", type=float, default=0.01)
    ap.add_argument("--petsc", nargs="*", default=[], help="extra solver.petsc_options KEY=VALUE")
    ap.add_argument("--label", default="default", help="name of this configuration in the JSON")
    ap.add_argument("--json", default="benchmarks/results/pde_step.json")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    petsc = dict(kv.split("=", 1) for kv in args.petsc)
    petsc = {k: parse_value(v) for k, v in petsc.items()}
    rows = []
    for level in args.levels:
        row = bench_level(level, args, petsc, comm)
        rows.append(row)
        if comm.rank == 0:
            print(table([row], args.dts).splitlines()[-1], flush=True)
    if comm.rank != 0:
        return
    expo = fit_exponent(rows)
    print(f"\nconfiguration {args.label!r}, {comm.size} rank(s), petsc options {petsc}, "
          f"UFD solver options {nls.DEFAULT_OPTIONS}")
    print("ratio = step / Poisson; N/K = Newton / Krylov iterations; TTS = time to solution "
          f"t_end = {args.t_end} (adaptive BDF2), s/step = TTS / steps")
    print(table(rows, args.dts))
    print(f"time to solution ~ N^{expo:.2f} (fit over levels {args.levels})")
    result = {"label": args.label, "ranks": comm.size, "petsc_options": petsc,
              "solver_defaults": nls.DEFAULT_OPTIONS, "poisson": f"(K+M)u = Mσ, CG + BoomerAMG, rtol {POISSON_RTOL}",
              "teacher": TEACHER, "initial": INITIAL, "t_end": args.t_end, "repeat": args.repeat,
              "tts_exponent": expo, "rows": rows, "host": platform.node(),
              "dolfinx": dolfinx.__version__, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = args.json
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    data = []
    if os.path.exists(path):
        with open(path) as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError:
                data = []
    data = [d for d in data if not (d.get("label") == args.label and d.get("ranks") == comm.size
                                    and sorted(r["level"] for r in d["rows"]) == sorted(args.levels))]
    data.append(result)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
