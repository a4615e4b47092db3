"""``ufd train``: validate, build the problem, train, write the outputs.

Files in OUTDIR: ``particles.npz`` (times T, theta T × M × D, c T × M, loss T,
at the output times only), ``teacher.npz`` (theta M* × D), ``config.toml``,
``summary.json`` and ``training.csv`` (one row every ~1/1000 of the run and at
every output time).

Under MPI rank 0 trains and writes while the other ranks wait for its
summary, so results do not depend on the number of ranks.  Random numbers
come from independent streams of one ``SeedSequence(seed)`` (teacher,
initialisation, data), so the same seed gives the same numbers.
"""

from __future__ import annotations

import io
import logging
import os
import time

import numpy as np

from ..errors import ConfigError, SolverError
from ..log import Progress
from ..runinfo import atomic_write, prepare_outdir, write_config, write_summary
from .features import UserFeature, make_feature
from .grids import cell_grid, density_values, probabilities, quadrature, to_ambient
from .metrics import EnergyMMD
from .objective import Population, Sampled
from .population import teacher_term
from .sampling import initial_particles, sample
from .trainer import LOG_COLUMNS, train_loop

log = logging.getLogger(__name__)

MAX_ENTRIES = 2e8  # largest N × M (or M × M) dense array the trainer may build
MMD_NODES = {"circle": 4096, "sphere": 32, "torus": 64}


class Problem:
    """Everything a run needs, built (and validated) before any output is written."""

    def __init__(self, config):
        tr = config.training
        self.config = config
        self.space = space = config.mesh.space()
        self.feature = make_feature(tr, space)
        ss = np.random.SeedSequence(tr.seed)
        self.rng_teacher, self.rng_init, self.rng_data, rng_check = (np.random.default_rng(s) for s in ss.spawn(4))
        if isinstance(self.feature, UserFeature):
            self.feature.check(rng_check)
        if tr.data == "population" and not self.feature.has_kernel:
            raise ConfigError("training.data", f"'population' needs a closed-form kernel (relu, vonmises, "
                              f"gaussian); use 'sampled' with {tr.features!r} features")
        probe = to_ambient(space, [m.ravel() for m in np.meshgrid(*cell_grid(space, 64).centers, indexing="ij")])
        density_values(config.teacher.density, space, probe, "teacher.density")
        density_values(config.initial.density, space, probe, "initial.density")
        M, N = tr.width, tr.samples
        big = min(M, N) * max(M, N) if tr.data == "sampled" else M * M
        if big > MAX_ENTRIES or tr.teacher_width * min(N, 65536) > 8 * MAX_ENTRIES:
            raise ConfigError("training.width", f"M = {M}, N = {N} needs dense arrays of {big:.3g} entries "
                              f"(limit {MAX_ENTRIES:.0e})")
        T = len(tr.output_times)
        if T * M * space.gdim > MAX_ENTRIES:
            raise ConfigError("training.output_times", f"{T} outputs of {M} particles do not fit in memory")
        self.c0 = 1.0 if tr.regularization == "unbiased" else 0.0
        # "cholesky" (default: a fresh factorisation every step) or "pcg"; read with
        self.solver = tr.solver

    def build(self):
        """Sample the teacher, the student and the data; set up the objective."""
        tr, space, cfg = self.config.training, self.space, self.config
        self.teacher = sample(cfg.teacher.density, space, tr.teacher_width, self.rng_teacher, "teacher.density")
        self.theta0 = initial_particles(cfg.initial.density, space, tr.width, tr.init, self.rng_init)
        if tr.data == "sampled":
            x = self.feature.sample_data(tr.samples, self.rng_data)
            y = np.zeros(x.shape[0])
            step = max(1, 2**24 // max(1, x.shape[0]))
            for s in range(0, self.teacher.shape[0], step):
                y += self.feature.evaluate(self.teacher[s:s + step], x).sum(1)
            y /= self.teacher.shape[0]
            self.objective = Sampled(self.feature, x, y, tr.lam, self.c0, solver=self.solver)
        else:
            term = teacher_term(self.feature, cfg.teacher.density, space)
            self.objective = Population(self.feature, term, tr.lam, self.c0, solver=self.solver)
        pts, w = quadrature(space, MMD_NODES[space.kind])
        self.sigma_nodes, self.sigma_p = pts, probabilities(cfg.teacher.density, space, pts, w, "teacher.density")
        self._mmd = None

    def mmd(self, theta):
        """Energy MMD of particles ``theta`` to the teacher features and to σ."""
        if self._mmd is None:
            self._mmd = (EnergyMMD(self.teacher), EnergyMMD(self.sigma_nodes, self.sigma_p))
        return self._mmd[0](theta), self._mmd[1](theta)

    def run(self, progress=None, callback=None):
        tr = self.config.training
        return train_loop(self.objective, self.space, self.theta0, method=tr.method, lam=tr.lam,
                          tau=tr.step_size, outer_step=tr.outer_step, output_times=tr.output_times,
                          t_end=tr.t_end, progress=progress, callback=callback)


def train(config, outdir=None, comm=None) -> dict:
    """Train the particle network of ``config``; write OUTDIR; return the summary.

    Raises :class:`ConfigError` before writing anything when the
    configuration cannot be trained; :class:`SolverError` if training
    diverges.  Collective over ``comm``.
    """
    outdir = outdir or config.output.directory
    size = 1 if comm is None else comm.size
    rank = 0 if comm is None else comm.rank
    problem = Problem(config)  # validation on every rank: same error everywhere
    outdir = prepare_outdir(outdir, "train", comm)
    started = time.time()
    result = None
    if rank == 0:
        try:
            result = ("ok", _train_rank0(problem, outdir, size, started, comm))
        except BaseException as exc:  # noqa: BLE001 - reported on every rank, then re-raised
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                write_summary(outdir, "train", status, size, started, error=str(exc))
            except OSError:
                pass
            result = ("error", exc)
    if comm is not None and size > 1:
        result = comm.bcast(result, root=0)
    kind, value = result
    if kind == "error":
        raise value
    return value


def _train_rank0(problem, outdir, size, started, comm):
    cfg, tr = problem.config, problem.config.training
    write_config(outdir, cfg)
    write_summary(outdir, "train", "running", size, started)
    problem.build()
    log.info("training %s features (%s, %s, M = %d) on %s up to t = %g in %d outputs",
             tr.features, tr.data, tr.method, tr.width, cfg.mesh.kind, tr.t_end, len(tr.output_times))
    progress = Progress(tr.t_end, "train", None, enabled=cfg.output.progress)
    t0 = time.perf_counter()
    try:
        with np.errstate(over="raise", invalid="raise"):
            hist = problem.run(progress)
    except FloatingPointError as exc:
        raise SolverError(f"training diverged ({exc}); reduce training.step_size "
                          f"or training.outer_step") from None
    finally:
        progress.close()
    wall = time.perf_counter() - t0
    theta = np.array(hist.theta)
    np.savez(os.path.join(outdir, "particles.npz"), times=np.array(hist.times), theta=theta,
             c=np.array(hist.c), loss=np.array(hist.loss))
    np.savez(os.path.join(outdir, "teacher.npz"), theta=problem.teacher)
    buf = io.StringIO()
    buf.write(",".join(LOG_COLUMNS) + "\n")
    for row in hist.log:
        buf.write(f"{row[0]:d}," + ",".join(f"{v:.10g}" for v in row[1:]) + "\n")
    atomic_write(os.path.join(outdir, "training.csv"), buf.getvalue())
    mmd = [problem.mmd(th) for th in theta]
    steps = hist.log[-1][0]
    return write_summary(
        outdir, "train", "completed", size, started,
        features=tr.features, data=tr.data, method=tr.method, width=tr.width,
        steps=steps, seconds_per_step=wall / max(1, steps), train_time_s=round(wall, 3),
        final_loss=hist.loss[-1], final_risk=hist.log[-1][3],
        output_times=hist.times, loss=hist.loss,
        mmd_to_teacher=[m[0] for m in mmd], mmd_to_sigma=[m[1] for m in mmd],
    )
