"""``ufd run``: solve the PDE described by a configuration and write its outputs.

Everything that can be wrong with the input (configuration, mesh, densities)
is checked before the output directory is touched, so a bad run writes
nothing.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from mpi4py import MPI

from .config import Config
from .errors import SolverError
from .log import Progress
from .meshes import build_mesh, mesh_space
from .output import RunWriter
from .problem import UFDProblem
from .runinfo import prepare_outdir, write_config, write_summary
from .timestepping import TimeIntegrator

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
    periodic = (config.mesh.length, config.mesh.dim) if config.mesh.kind == "torus" else None
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


def run_pde(config: Config, outdir: str, comm: MPI.Comm = MPI.COMM_WORLD) -> dict:
    """Solve and write every output of ``ufd run`` into ``outdir``; returns the summary."""
    started = time.time()
    problem = build_problem(config, comm)
    outdir = prepare_outdir(outdir, "run", comm)
    if comm.rank == 0:
        write_config(outdir, config)
        write_summary(outdir, "run", "running", comm.size, started)
    integrator = TimeIntegrator(problem, config.solver)
    progress = Progress(config.solver.t_end, "ufd run", comm, enabled=config.output.progress)
    status, message, stats = "completed", "", {}
    ndofs = problem.W.dofmap.index_map.size_global
    with RunWriter(problem, outdir, vtx=config.output.vtx, xdmf=config.output.xdmf) as writer:
        rho0 = problem.rho_n.x.array.copy()

        def on_output(t):
            writer.write(t, rho0 if t == 0.0 else problem.rho())

        def on_step(rec):
            writer.record(rec.row())

        # row for t = 0 (energy of ρ₀ itself: ½∫σ²/ρ₀ − ½; inf if ρ₀ vanishes somewhere)
        writer.record({"t": 0.0, "dt": 0.0, "mass": float(
            comm.allreduce(float(np.sum(problem._weights * rho0[: problem.n_owned])), op=MPI.SUM)),
            "energy": _energy0(problem, rho0), "dissipation": "", "l1_to_sigma": _l1_0(problem, rho0),
            "min_rho": comm.allreduce(float(rho0[: problem.n_owned].min()), op=MPI.MIN),
            "newton_its": 0, "krylov_its": 0, "rejected": 0, "error_estimate": 0.0})
        try:
            stats = integrator.run(on_step=on_step, on_output=on_output, progress=progress)
        except SolverError as exc:
            status, message = "failed", str(exc)
            log.error("%s", exc)
        except KeyboardInterrupt:
            status, message = "interrupted", "interrupted by the user"
        except Exception as exc:  # an unexpected crash still leaves an honest summary
            if comm.rank == 0:
                write_summary(outdir, "run", "failed", comm.size, started,
                              message=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            progress.close()
            writer.save_snapshots()
    diag = problem.diagnostics()
    summary = {}
    if comm.rank == 0:
        summary = write_summary(
            outdir, "run", status, comm.size, started, message=message, dofs=ndofs,
            **{**stats, "steps": integrator.steps, "rejected_steps": integrator.rejected_total,
               "failed_solves": integrator.failed_solves}, final=diag,
            petsc_prefix=problem.solver.prefix)
    summary = comm.bcast(summary, root=0)
    problem.destroy()
    if status == "failed":
        raise SolverError(message)
    return summary


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
