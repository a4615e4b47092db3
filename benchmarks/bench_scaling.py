"""Strong and weak scaling of `ufd run` time steps, against the machine's ceiling.

    env/run python3 benchmarks/bench_scaling.py [--ranks 1 2] [--level 7] [--steps 5]
    env/run python3 benchmarks/bench_scaling.py --iterations 1 2 4 8   # iteration counts

Shared virtual machines may not deliver twice the throughput with two
processes, whatever the code.  So the benchmark first measures that *ceiling*:
the same serial solve run alone, then two copies of it at once; the ceiling
is 2·t_alone/t_pair (2 on an ideal machine).  MPI efficiency on p ranks is
reported raw, t₁/(p·t_p), and against the ceiling, (t₁/t_p)/ceiling (p = 2).

* strong scaling: one problem (sphere, icosphere level ``--level``) on each
  rank count, a fixed number of fixed-size time steps;
* weak scaling: the 2D torus with ``--weak-n``·√p cells per side on p ranks;
* iteration counts (``--iterations``): Newton and Krylov totals for the same
  problem on 1…8 ranks (oversubscribed: this checks the algorithm, not the
  hardware).

Prints a table per study and writes JSON (``--json``).  Each measurement is a
separate ``mpirun`` of this script in ``--worker`` mode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args) -> None:
    import resource

    from mpi4py import MPI

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
        "solver.num_outputs=1", "output.progress=false"])
    comm.Barrier()
    t0 = time.perf_counter()
    problem = build_problem(cfg, comm)
    comm.Barrier()
    setup = time.perf_counter() - t0
    rows = []
    integ = TimeIntegrator(problem, cfg.solver)
    comm.Barrier()
    t0 = time.perf_counter()
    integ.run(on_step=lambda r: rows.append(r))
    comm.Barrier()
    solve = time.perf_counter() - t0
    mem = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, root=0)
    if comm.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": comm.size, "dofs": problem.W.dofmap.index_map.size_global,
            "setup_s": setup, "solve_s": solve, "steps": len(rows),
            "newton_its": sum(r.newton_its for r in rows),
            "krylov_its": sum(r.krylov_its for r in rows),
            "peak_mb_per_rank": [round(m, 1) for m in mem]}), flush=True)
    problem.destroy()


def launch(ranks: int, extra: list[str], oversubscribe=False) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *extra]
    if ranks > 1:
        cmd = ["mpirun", *(["--oversubscribe"] if oversubscribe else []), "-n", str(ranks), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc) -> dict:
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker failed:\n{out}\n{err}")


def table(title, rows, cols):
    print(f"\n{title}")
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>14.4g}" if isinstance(r[c], float) else f"{str(r[c]):>14}" for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="sphere", choices=("sphere", "torus2", "torus3"))
    ap.add_argument("--level", type=int, default=7, help="sphere refinement level (7: 163 842 dofs)")
    ap.add_argument("--n", type=int, default=64, help="torus cells per side (worker)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dt", type=float, default=1e-2)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--weak-n", type=int, default=181, help="2D torus cells per side on 1 rank")
    ap.add_argument("--iterations", type=int, nargs="*", default=None,
                    help="rank counts for the iteration-count study (e.g. 1 2 4 8)")
    ap.add_argument("--skip-weak", action="store_true")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "scaling.json"))
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    common = ["--case", "sphere", "--level", str(args.level), "--steps", str(args.steps),
              "--dt", str(args.dt)]
    report = {"case": f"sphere level {args.level}", "steps": args.steps, "dt": args.dt}

    # 1. ceiling: one serial solve alone, then two copies at once
    alone = result(launch(1, common))
    pair = [launch(1, common), launch(1, common)]
    pair = [result(p) for p in pair]
    t_pair = max(p["solve_s"] for p in pair)
    ceiling = 2 * alone["solve_s"] / t_pair
    report["ceiling"] = {"alone_s": alone["solve_s"], "pair_s": t_pair, "ceiling": ceiling}
    print(f"ceiling: one serial solve {alone['solve_s']:.2f} s alone, {t_pair:.2f} s with a twin "
          f"-> throughput ceiling {ceiling:.2f} of 2")

    # 2. strong scaling
    strong = []
    t1 = alone["solve_s"]
    for p in args.ranks:
        r = alone if p == 1 else result(launch(p, common))
        r = dict(r)
        r["speedup"] = t1 / r["solve_s"]
        r["eff_raw"] = t1 / (p * r["solve_s"])
        r["eff_vs_ceiling"] = r["speedup"] / min(p, ceiling) if p > 1 else 1.0
        r["peak_mb_max"] = max(r["peak_mb_per_rank"])
        strong.append(r)
    table(f"strong scaling, sphere level {args.level} ({alone['dofs']} dofs), {args.steps} steps",
          strong, ["ranks", "dofs", "solve_s", "speedup", "eff_raw", "eff_vs_ceiling",
                   "newton_its", "krylov_its", "peak_mb_max"])
    report["strong"] = strong

    # 3. weak scaling
    if not args.skip_weak:
        weak = []
        for p in args.ranks:
            n = int(round(args.weak_n * math.sqrt(p)))
            r = result(launch(p, ["--case", "torus2", "--n", str(n), "--steps", str(args.steps),
                                  "--dt", str(args.dt)]))
            r["dofs_per_rank"] = r["dofs"] // p
            weak.append(r)
        for r in weak:
            r["eff_raw"] = weak[0]["solve_s"] / r["solve_s"]
            r["peak_mb_max"] = max(r["peak_mb_per_rank"])
        table("weak scaling, 2D torus", weak, ["ranks", "dofs", "dofs_per_rank", "solve_s", "eff_raw",
                                               "newton_its", "krylov_its", "peak_mb_max"])
        report["weak"] = weak

    # 4. iteration counts on 1..8 ranks (oversubscribed)
    if args.iterations:
        its = []
        small = ["--case", "sphere", "--level", str(min(args.level, 6)), "--steps", str(args.steps),
                 "--dt", str(args.dt)]
        for p in args.iterations:
            its.append(result(launch(p, small, oversubscribe=True)))
        table("iteration counts (oversubscribed)", its, ["ranks", "dofs", "newton_its", "krylov_its"])
        report["iterations"] = its

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
