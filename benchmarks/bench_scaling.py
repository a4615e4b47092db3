"""Strong and weak scaling of `ufd run` time steps, against the machine's ceiling.

    env/run python3 benchmarks/bench_scaling.py [--ranks 1 2] [--level 8] [--steps 5] [--repeat 3]
    env/run python3 benchmarks/bench_scaling.py --skip-strong --skip-weak --iterations 1 2 4 8

Shared virtual machines may not deliver twice the throughput with two
processes, whatever the code.  So the benchmark first measures that *ceiling*:
the same serial solve run alone, then two copies of it at once; the ceiling
is 2·t_alone/t_pair (2 on an ideal machine).  MPI efficiency on p ranks is
reported raw, t₁/(p·t_p), and against the ceiling, (t₁/t_p)/ceiling (p = 2).

* strong scaling: one problem (sphere, icosphere level ``--level``, 10·4^L+2
  dofs, split assembly) on each rank count, a fixed number of fixed-size time
  steps (``--steps`` of ``--dt``);
* weak scaling: the 2D flat torus (periodic, dolfinx_mpc assembly) with
  ``--weak-n``·√p cells per side on p ranks; efficiency t₁/t_p raw and
  against the ceiling, (2·t₁/ceiling)/t₂ for p = 2;
* iteration counts (``--iterations``): Newton and Krylov totals per step for
  the same problems (the sphere of ``--iterations-level``, default
  ``--level``, and the weak-scaling torus of 1 rank) on 1…8 ranks
  (oversubscribed: this checks the algorithm, not the hardware).

Every timed run reports where its time goes: ``newton_s`` (inside the Newton
solves), of which PETSc's ``pc_setup_s`` (BoomerAMG setup), ``ksp_s`` (Krylov
solves incl. PC applications), ``residual_s`` and ``jacobian_s`` (rank 0's
PETSc log), the rest of the step loop (``other_s``: predictor, error estimate,
diagnostics), and the partition (owned dofs per rank, ``imbalance`` = max/mean,
``ghost_frac`` = ghosts/owned, max over ranks).  Timings are the median of
``--repeat`` runs; the load average before each run is recorded (``load``),
since other processes on the machine distort every number.

Prints a table per study and writes JSON (``--json``; sections not run this
time are kept from an existing file).  Each measurement is a separate
``mpirun`` of this script in ``--worker`` mode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_PETSC: list[str] = []  # "--petsc K=V ..." forwarded to the workers
EVENTS = {"pc_setup_s": "PCSetUp", "ksp_s": "KSPSolve", "residual_s": "SNESFunctionEval",
          "jacobian_s": "SNESJacobianEval"}


def worker(args) -> None:
    import resource

    import numpy as np
    from mpi4py import MPI
    from petsc4py import PETSc

    from ufd_solver.config import load_config
    from ufd_solver.run import build_problem
    from ufd_solver.timestepping import TimeIntegrator

    comm = MPI.COMM_WORLD
    if args.case == "sphere":
        mesh = ["mesh.kind='sphere'", f"mesh.resolution={args.level}",
                "teacher.density={mixture='vonmises', centers=[[0,0,1],[1,0,0]], kappa=[20,8]}"]
    elif args.case == "torus3":
        mesh = ["mesh.kind='torus'", "mesh.dim=3", f"mesh.resolution={args.n}",
                "teacher.density={mixture='gaussian', centers=[[-1,0,0],[1,1,0.5]], std=0.5}"]
    else:
        mesh = ["mesh.kind='torus'", "mesh.dim=2", f"mesh.resolution={args.n}",
                "teacher.density={preset='paper-torus'}"]
    cfg = load_config(data={}, overrides=mesh + [
        "solver.adaptive=false", f"solver.dt0={args.dt}", f"solver.t_end={args.dt * args.steps}",
        "solver.num_outputs=1", "output.progress=false",
        *[f"solver.petsc_options.{kv.split('=', 1)[0]}={_toml(kv.split('=', 1)[1])}" for kv in args.petsc]])
    comm.Barrier()
    t0 = time.perf_counter()
    problem = build_problem(cfg, comm)
    comm.Barrier()
    setup = time.perf_counter() - t0
    rows = []
    integ = TimeIntegrator(problem, cfg.solver)
    newton = [0.0]
    solve_step = problem.solve_step

    def timed_solve_step():
        t = time.perf_counter()
        try:
            return solve_step()
        finally:
            newton[0] += time.perf_counter() - t

    problem.solve_step = timed_solve_step
    PETSc.Log.begin()
    before = {k: PETSc.Log.Event(e).getPerfInfo()["time"] for k, e in EVENTS.items()}
    comm.Barrier()
    t0 = time.perf_counter()
    integ.run(on_step=lambda r: rows.append(r))
    comm.Barrier()
    solve = time.perf_counter() - t0
    events = {k: PETSc.Log.Event(e).getPerfInfo()["time"] - before[k] for k, e in EVENTS.items()}
    imap = problem.W.dofmap.index_map
    part = np.array(comm.gather((imap.size_local, imap.num_ghosts), root=0) or [])
    mem = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, root=0)
    if comm.rank == 0:
        owned = part[:, 0]
        print("RESULT " + json.dumps({
            "case": args.case, "ranks": comm.size, "dofs": imap.size_global,
            "setup_s": setup, "solve_s": solve, "newton_s": newton[0],
            "other_s": solve - newton[0], **events, "steps": len(rows),
            "newton_its": sum(r.newton_its for r in rows),
            "krylov_its": sum(r.krylov_its for r in rows),
            "newton_per_step": [r.newton_its for r in rows],
            "krylov_per_step": [r.krylov_its for r in rows],
            "pc_builds": problem.solver.pc_builds,
            "mass_drift": abs(rows[-1].diagnostics["mass"] - rows[0].diagnostics["mass"]),
            "owned_dofs": owned.tolist(), "imbalance": float(owned.max() / owned.mean()),
            "ghost_frac": float((part[:, 1] / owned).max()),
            "peak_mb_per_rank": [round(m, 1) for m in mem]}), flush=True)
    problem.destroy()


def _toml(value: str) -> str:
    """A TOML literal for an option value: numbers as they are, anything else quoted."""
    try:
        float(value)
        return value
    except ValueError:
        return json.dumps(value)


def launch(ranks: int, extra: list[str], oversubscribe=False) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *extra, *_PETSC]
    if ranks > 1:
        cmd = ["mpirun", *(["--oversubscribe"] if oversubscribe else []), "-n", str(ranks), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc) -> dict:
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker failed:\n{out}\n{err}")


def measure(ranks: int, extra: list[str], repeat: int, oversubscribe=False) -> dict:
    """Median (by solve_s) of ``repeat`` runs; every run's solve_s and load kept."""
    runs = []
    for _ in range(repeat):
        load = os.getloadavg()[0]
        r = result(launch(ranks, extra, oversubscribe))
        r["load"] = load
        runs.append(r)
    runs.sort(key=lambda r: r["solve_s"])
    med = dict(runs[(len(runs) - 1) // 2])
    med["solve_s_all"] = [round(r["solve_s"], 3) for r in runs]
    med["load_all"] = [round(r["load"], 2) for r in runs]
    return med


def table(title, rows, cols):
    print(f"\n{title}")
    print("  ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>12.4g}" if isinstance(r[c], float) else f"{r[c]!s:>12}" for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="sphere", choices=("sphere", "torus2", "torus3"))
    ap.add_argument("--level", type=int, default=8, help="sphere refinement level (8: 655 362 dofs)")
    ap.add_argument("--n", type=int, default=64, help="torus cells per side (worker)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dt", type=float, default=1e-2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per timing (median)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--weak-n", type=int, default=453,
                    help="2D torus cells per side on 1 rank (453: 2.1·10⁵ dofs per rank)")
    ap.add_argument("--iterations", type=int, nargs="*", default=None,
                    help="rank counts for the iteration-count study (e.g. 1 2 4 8)")
    ap.add_argument("--iterations-level", type=int, default=None,
                    help="sphere level of the iteration study (default: --level)")
    ap.add_argument("--petsc", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra solver.petsc_options for every run (e.g. pc_hypre_boomeramg_coarsen_type=HMIS)")
    ap.add_argument("--skip-strong", action="store_true", help="no ceiling, no strong scaling")
    ap.add_argument("--skip-weak", action="store_true")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "scaling.json"))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.petsc:
        _PETSC[:] = ["--petsc", *args.petsc]
    report = {}
    if os.path.exists(args.json):
        with open(args.json) as fh:
            report = json.load(fh)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "processor": platform.processor()}
    step = ["--steps", str(args.steps), "--dt", str(args.dt)]
    sphere = ["--case", "sphere", "--level", str(args.level), *step]
    ceiling = report.get("ceiling", {}).get("ceiling")

    if not args.skip_strong:
        # 1. ceiling: one serial solve alone, then two copies at once
        alone = measure(1, sphere, args.repeat)
        pairs = []
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            procs = [launch(1, sphere), launch(1, sphere)]
            pair = [result(p) for p in procs]
            pairs.append((max(p["solve_s"] for p in pair), load))
        pairs.sort()
        t_pair = pairs[(len(pairs) - 1) // 2][0]
        ceiling = 2 * alone["solve_s"] / t_pair
        report["ceiling"] = {"alone_s": alone["solve_s"], "pair_s": t_pair, "ceiling": ceiling,
                             "pair_s_all": [round(p[0], 3) for p in pairs],
                             "load_all": [round(p[1], 2) for p in pairs]}
        print(f"ceiling: one serial solve {alone['solve_s']:.2f} s alone, {t_pair:.2f} s with a twin "
              f"-> throughput ceiling {ceiling:.2f} of 2")

        # 2. strong scaling
        strong = []
        t1 = alone["solve_s"]
        for p in args.ranks:
            r = dict(alone if p == 1 else measure(p, sphere, args.repeat))
            r["speedup"] = t1 / r["solve_s"]
            r["eff_raw"] = t1 / (p * r["solve_s"])
            r["eff_vs_ceiling"] = r["speedup"] / min(p, ceiling) if p > 1 else 1.0
            r["peak_mb_max"] = max(r["peak_mb_per_rank"])
            strong.append(r)
        table(f"strong scaling, sphere level {args.level} ({alone['dofs']} dofs), {args.steps} steps "
              f"of dt = {args.dt:g}", strong,
              ["ranks", "dofs", "solve_s", "speedup", "eff_raw", "eff_vs_ceiling", "newton_its",
               "krylov_its", "peak_mb_max", "load"])
        table("  where the time goes (s; PETSc events on rank 0)", strong,
              ["ranks", "solve_s", "newton_s", "pc_setup_s", "ksp_s", "residual_s", "jacobian_s",
               "other_s", "pc_builds", "imbalance", "ghost_frac"])
        report["strong"] = {"case": f"sphere level {args.level}", "steps": args.steps, "dt": args.dt,
                            "petsc": args.petsc, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": strong}

    # 3. weak scaling
    if not args.skip_weak:
        weak = []
        for p in args.ranks:
            n = round(args.weak_n * math.sqrt(p))
            r = measure(p, ["--case", "torus2", "--n", str(n), *step], args.repeat)
            r["n"] = n
            r["dofs_per_rank"] = r["dofs"] // p
            weak.append(r)
        for r in weak:
            t1, p = weak[0]["solve_s"], r["ranks"]
            r["eff_raw"] = t1 / r["solve_s"]
            # p copies of the 1-rank problem need p·t₁/min(p, ceiling) at best
            r["eff_vs_ceiling"] = (p * t1 / min(p, ceiling or p)) / r["solve_s"] if p > 1 else 1.0
            r["s_per_newton"] = r["newton_s"] / max(1, r["newton_its"])
            r["peak_mb_max"] = max(r["peak_mb_per_rank"])
        table(f"weak scaling, 2D torus, {args.steps} steps of dt = {args.dt:g}", weak,
              ["ranks", "n", "dofs", "dofs_per_rank", "solve_s", "eff_raw", "eff_vs_ceiling",
               "newton_its", "krylov_its", "s_per_newton", "peak_mb_max", "load"])
        table("  where the time goes (s; PETSc events on rank 0)", weak,
              ["ranks", "solve_s", "newton_s", "pc_setup_s", "ksp_s", "residual_s", "jacobian_s",
               "other_s", "pc_builds", "imbalance", "ghost_frac"])
        report["weak"] = {"case": f"2D torus, {args.weak_n}·√p cells per side", "steps": args.steps,
                          "dt": args.dt, "ceiling_used": ceiling, "petsc": args.petsc, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": weak}

    # 4. iteration counts on 1..8 ranks (oversubscribed)
    if args.iterations:
        level = args.level if args.iterations_level is None else args.iterations_level
        its = []
        for case, extra in (("sphere", ["--case", "sphere", "--level", str(level), *step]),
                            ("torus2", ["--case", "torus2", "--n", str(args.weak_n), *step])):
            for p in args.iterations:
                r = result(launch(p, extra, oversubscribe=True))
                r["newton_per_step"] = " ".join(map(str, r["newton_per_step"]))
                r["krylov_per_step"] = " ".join(map(str, r["krylov_per_step"]))
                its.append(r)
        table(f"iteration counts (oversubscribed), {args.steps} steps of dt = {args.dt:g}", its,
              ["case", "ranks", "dofs", "newton_its", "krylov_its", "newton_per_step",
               "krylov_per_step", "pc_builds", "mass_drift"])
        report["iterations"] = {"sphere_level": level, "torus2_n": args.weak_n, "steps": args.steps,
                                "dt": args.dt, "petsc": args.petsc, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": its}

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
