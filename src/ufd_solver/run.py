"""``ufd run``: solve the PDE described by a configuration and write its outputs.

Everything that can be wrong with the input (configuration, mesh, densities)
is checked before the output directory is touched, so a bad run writes
nothing.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import time

import numpy as np
from mpi4py import MPI

from .config import Config
from .checkpoint import find_checkpoint, read_checkpoint, write_checkpoint
from .errors import ConfigError, RunInterrupted, SolverError
from .log import Progress
from .meshes import build_mesh, mesh_space
from .output import RunWriter
from .problem import UFDProblem
from .runinfo import StopFlag, check_outdir, prepare_outdir, write_config, write_summary
from .timestepping import Interrupted, TimeIntegrator

log = logging.getLogger(__name__)


def solver_options(cfg) -> dict:
    """PETSc options (under the solver's prefix) from ``[solver]``."""
    opts = {"ksp_type": cfg.ksp_type, "pc_type": cfg.pc_type}
    if cfg.pc_type == "hypre":
        opts["pc_hypre_type"] = "boomeramg"
    if cfg.pc_type == "lu":
        opts["ksp_type"] = "preonly"
        opts["pc_factor_mat_solver_type"] = "mumps"
    opts.update({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in cfg.petsc_options.items()})
    return opts


def build_problem(config: Config, comm: MPI.Comm) -> UFDProblem:
    """Mesh, densities and discretisation (validates σ and ρ₀ on the mesh)."""
    mesh = build_mesh(comm, config.mesh)
    space = mesh_space(mesh, config.mesh)
    if config.mesh.kind == "file":
        config.teacher.density.check_space(space)
        config.initial.density.check_space(space)
    sigma = config.teacher.density
    rho0 = config.initial.density
    periodic = None
    if config.mesh.kind == "torus":
        half = 0.5 * config.mesh.length
        periodic = ([-half] * config.mesh.dim, [half] * config.mesh.dim)
    elif config.mesh.periodic:
        from .periodic import check_box

        periodic = check_box(mesh)
    problem = UFDProblem(
        mesh,
        lambda pts: sigma.evaluate(space, pts),
        lambda pts: rho0.evaluate(space, pts),
        degree=config.mesh.degree,
        periodic=periodic,
        solver_options=solver_options(config.solver),
        newton_rtol=config.solver.newton_rtol,
        newton_max_it=config.solver.newton_max_it,
    )
    ndofs = problem.W.dofmap.index_map.size_global
    log.info("mesh %s: %d dofs (P%d) on %d rank(s); σ and ρ₀ normalised to unit mass",
             config.mesh.kind, ndofs, config.mesh.degree, comm.size)
    return problem


def run_pde(config: Config, outdir: str, comm: MPI.Comm, restart: bool = False) -> dict:
    """Solve and write every output of ``ufd run`` into ``outdir``; returns the summary.

    ``restart=True`` continues the run in ``outdir`` from its last checkpoint
    (also on a different number of ranks); ``config`` is then normally the
    run's own ``config.toml``.
    """
    started = time.time()
    problem = build_problem(config, comm)
    state = resume = None
    restarts = 0
    if restart:
        error = None
        if comm.rank == 0:
            try:
                check_outdir(outdir, "run")
                find_checkpoint(outdir)
            except ConfigError as exc:
                error = exc
        error = comm.bcast(error, root=0)
        if error is not None:
            raise error
        state, meta, snaps = read_checkpoint(outdir, problem)
        resume = (meta["csv_rows"], snaps)
        restarts = meta.get("restarts", 0) + 1
        log.info("restarting from t = %.6g (step %d, checkpoint of %d rank(s))", state.t,
                 state.steps, meta.get("ranks", 0))
    else:
        outdir = prepare_outdir(outdir, "run", comm)
    outdir = os.path.abspath(outdir)
    if comm.rank == 0:
        write_config(outdir, config)
        write_summary(outdir, "run", "running", comm.size, started, restarts=restarts)
    integrator = TimeIntegrator(problem, config.solver, state)
    progress = Progress(config.solver.t_end, "ufd run", comm, enabled=config.output.progress)
    status, message, stats = "completed", "", {}
    ndofs = problem.W.dofmap.index_map.size_global
    ck = config.checkpoint
    with RunWriter(problem, outdir, vtx=config.output.vtx, xdmf=config.output.xdmf,
                   resume=resume) as writer, StopFlag() as stop:
        rho0 = problem.rho_n.x.array.copy()
        last_ck = [time.perf_counter()]

        def on_output(t):
            writer.write(t, rho0 if t == 0.0 else problem.rho())

        def on_step(rec):
            writer.record(rec.row())

        def checkpoint(st):
            write_checkpoint(outdir, problem, st, {"csv_rows": writer.rows, "ranks": comm.size,
                                                   "restarts": restarts}, writer.snapshots())
            last_ck[0] = time.perf_counter()
            # A restart builds a fresh preconditioner; so does the run that goes on from
            # here, so that a restart repeats its Newton/Krylov iterations exactly.
            problem.solver.reset_preconditioner()

        def on_accept(st):
            due = ck.every_steps > 0 and st.steps % ck.every_steps == 0
            if ck.every_seconds > 0 and comm.rank == 0:
                due = due or time.perf_counter() - last_ck[0] >= ck.every_seconds
            if comm.allreduce(int(due), op=MPI.MAX):
                checkpoint(st)

        def should_stop():
            return bool(comm.allreduce(stop.signum, op=MPI.MAX))

        if not restart:
            writer.record(_initial_row(problem, rho0))
        try:
            stats = integrator.run(on_step=on_step, on_output=on_output, progress=progress,
                                   on_accept=on_accept, should_stop=should_stop)
        except Interrupted:
            signum = comm.allreduce(stop.signum, op=MPI.MAX)
            checkpoint(integrator.state)
            status = "interrupted"
            message = (f"stopped by {signal.Signals(signum).name} at t = {integrator.state.t:.6g}; "
                       f"continue with: ufd run --restart {outdir}")
            log.warning("%s", message)
        except SolverError as exc:
            status, message = "failed", str(exc)
            log.error("%s", exc)
        except Exception as exc:  # an unexpected crash still leaves an honest summary
            if comm.rank == 0:
                write_summary(outdir, "run", "failed", comm.size, started, restarts=restarts,
                              message=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            progress.close()
            writer.save_snapshots()
    diag = problem.diagnostics()
    peak = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, root=0)
    summary = {}
    if comm.rank == 0:
        summary = write_summary(
            outdir, "run", status, comm.size, started, message=message, dofs=ndofs,
            restarts=restarts,
            **{**stats, "steps": integrator.steps, "rejected_steps": integrator.rejected_total,
               "failed_solves": integrator.failed_solves, "t_final": integrator.state.t},
            final=diag, peak_memory_mb_per_rank=[round(m, 1) for m in peak],
            petsc_prefix=problem.solver.prefix)
    summary = comm.bcast(summary, root=0)
    problem.destroy()
    if status == "failed":
        raise SolverError(message)
    if status == "interrupted":
        raise RunInterrupted(message, 128 + comm.allreduce(stop.signum, op=MPI.MAX))
    return summary


def _initial_row(problem, rho0) -> dict:
    """Diagnostics row for t = 0 (energy of ρ₀ itself: inf if ρ₀ vanishes somewhere)."""
    comm = problem.comm
    n = problem.n_owned
    mass = comm.allreduce(float(np.sum(problem._weights * rho0[:n])), op=MPI.SUM)
    return {"t": 0.0, "dt": 0.0, "mass": mass, "energy": _energy0(problem, rho0), "dissipation": "",
            "l1_to_sigma": _l1_0(problem, rho0),
            "min_rho": comm.allreduce(float(rho0[:n].min()), op=MPI.MIN),
            "newton_its": 0, "krylov_its": 0, "rejected": 0, "error_estimate": 0.0}


def _energy0(problem, rho0):
    n = problem.n_owned
    m = problem._weights
    s = problem.sigma.x.array[:n]
    r = rho0[:n]
    with np.errstate(divide="ignore"):
        loc = float(np.sum(np.where(m > 0, 0.5 * m * s * s / r, 0.0)))
    return problem.comm.allreduce(loc, op=MPI.SUM) - 0.5


def _l1_0(problem, rho0):
    n = problem.n_owned
    loc = float(np.sum(problem._weights * np.abs(rho0[:n] - problem.sigma.x.array[:n])))
    return problem.comm.allreduce(loc, op=MPI.SUM)
