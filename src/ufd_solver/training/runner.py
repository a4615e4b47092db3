"""``ufd train``: validate, build the problem, train, write the outputs.

Files in OUTDIR: ``particles.npz`` (times T, theta T × M × D, c T × M, loss T,
at the output times only), ``teacher.npz`` (theta M* × D), ``config.toml``,
``summary.json`` and ``training.csv`` (one row every ~1/1000 of the run and at
every output time).

Under MPI rank 0 trains and writes while the other ranks wait for its
summary (polling, so they do not spin), so results do not depend on the
number of ranks.

Checkpoints (``[checkpoint]`` every_steps training steps / every_seconds wall
seconds) go to ``OUTDIR/checkpoint/`` (:mod:`.checkpoint`);
``train(..., restart=True)`` continues from the last one (any number of
ranks).  SIGINT/SIGTERM on any rank stop rank 0 after the current step: a
final checkpoint, ``"status": "interrupted"``, exit code 128 + signal.  Random numbers
come from independent streams of one ``SeedSequence(seed)`` (teacher,
initialisation, data), so the same seed gives the same numbers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import numpy as np

from ..errors import ConfigError, RunInterrupted, SolverError
from ..log import Progress
from ..runinfo import StopFlag, prepare_outdir, summary_command, write_config, write_summary
from .checkpoint import find_checkpoint, read_checkpoint, read_meta, write_checkpoint
from .features import UserFeature, make_feature
from .grids import cell_grid, density_values, probabilities, quadrature, to_ambient
from .metrics import EnergyMMD
from .objective import Population, Sampled
from .population import teacher_term
from .sampling import initial_particles, sample
from .trainer import LOG_COLUMNS, schedule, train_loop

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

    def run(self, progress=None, callback=None, **kw):
        """:func:`~.trainer.train_loop` on this problem (``kw``: start, on_row, after_step)."""
        tr = self.config.training
        return train_loop(self.objective, self.space, self.theta0, method=tr.method, lam=tr.lam,
                          tau=tr.step_size, outer_step=tr.outer_step, output_times=tr.output_times,
                          t_end=tr.t_end, progress=progress, callback=callback, **kw)

    def rng_states(self):
        """States of the random streams (after :meth:`build`, nothing else is drawn)."""
        return [r.bit_generator.state for r in (self.rng_teacher, self.rng_init, self.rng_data)]


TAG_STOP, TAG_RESULT = 71, 72


def train(config, outdir=None, comm=None, restart=False) -> dict:
    """Train the particle network of ``config``; write OUTDIR; return the summary.

    Raises :class:`ConfigError` before writing anything when the
    configuration cannot be trained; :class:`SolverError` if training
    diverges; :class:`RunInterrupted` (exit code 128 + signal) after a final
    checkpoint when SIGINT/SIGTERM stopped it.  ``restart=True`` continues
    the run in ``outdir`` from its checkpoint (``config`` should be the
    run's own ``config.toml``).  Collective over ``comm``.
    """
    outdir = outdir or config.output.directory
    size = 1 if comm is None else comm.size
    rank = 0 if comm is None else comm.rank
    problem = Problem(config)  # validation on every rank: same error everywhere
    if restart:
        error = None
        if rank == 0:
            try:
                _check_restart_dir(outdir)
            except ConfigError as exc:
                error = exc
        if comm is not None and size > 1:
            error = comm.bcast(error, root=0)
        if error is not None:
            raise error
        outdir = os.path.abspath(outdir)
    else:
        outdir = prepare_outdir(outdir, "train", comm)
    started = time.time()
    peer = comm.Dup() if comm is not None and size > 1 else None
    try:
        with StopFlag() as stop:
            if rank == 0:
                result = _guarded_rank0(problem, outdir, size, started, peer, stop, restart)
                if peer is not None:
                    while peer.iprobe(source=_any_source(), tag=TAG_STOP):
                        peer.recv(source=_any_source(), tag=TAG_STOP)  # late stop requests
                    for r in range(1, size):
                        peer.send(result, dest=r, tag=TAG_RESULT)
            else:
                result = _wait_for_rank0(peer, stop)
    finally:
        if peer is not None:
            peer.Free()
    kind, value = result
    if kind == "interrupted":
        raise RunInterrupted(*value)
    if kind == "error":
        raise value
    return value


def _any_source():
    from mpi4py import MPI

    return MPI.ANY_SOURCE


def _check_restart_dir(outdir):
    if summary_command(outdir) != "train":
        raise ConfigError(outdir, "not the output directory of a 'ufd train' (summary.json)")
    find_checkpoint(outdir)


def _guarded_rank0(problem, outdir, size, started, peer, stop, restart):
    """Run rank 0's part; return what the other ranks are sent: (kind, value)."""
    try:
        return ("ok", _train_rank0(problem, outdir, size, started, peer, stop, restart))
    except RunInterrupted as exc:
        return ("interrupted", (str(exc), exc.exit_code))
    except ConfigError as exc:
        if not restart:
            _failed_summary(outdir, size, started, exc)
        return ("error", exc)  # a refused restart leaves the directory as it was
    except BaseException as exc:  # noqa: BLE001 - reported on every rank, then re-raised
        _failed_summary(outdir, size, started, exc)
        return ("error", exc)


def _failed_summary(outdir, size, started, exc):
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        write_summary(outdir, "train", status, size, started, error=str(exc))
    except OSError:
        pass


def _wait_for_rank0(peer, stop):
    """Wait (sleeping, not spinning) for rank 0's result; forward a stop signal to it."""
    asked = None
    while not peer.iprobe(source=0, tag=TAG_RESULT):
        if stop.signum and asked is None:
            asked = peer.isend(stop.signum, dest=0, tag=TAG_STOP)
        time.sleep(0.02)
    return peer.recv(source=0, tag=TAG_RESULT)


class TrainingLog:
    """``training.csv``, one row appended and flushed as it is recorded.

    Numbers are written as the shortest decimal that reads back as the same
    double (``repr``), so the file is an exact record; wall_s to 6 digits.
    With ``keep = (rows, log)`` an existing file is cut back to its header
    and first ``rows`` rows (rewritten from ``log`` if it holds fewer).
    """

    def __init__(self, path, keep=None):
        self.path = path
        header = ",".join(LOG_COLUMNS) + "\n"
        if keep is None:
            self.fh = open(path, "w")
            self.fh.write(header)
            self.rows = 0
        else:
            rows, log = keep
            try:
                with open(path) as fh:
                    lines = fh.readlines()
            except OSError:
                lines = []
            kept = lines[:1 + rows]
            if len(kept) != 1 + rows or kept[0] != header or not all(ln.endswith("\n") for ln in kept):
                kept = [header] + [self.format(r) for r in log[:rows]]
            self.fh = open(path, "w")
            self.fh.writelines(kept)
            self.rows = rows
        self.fh.flush()

    @staticmethod
    def format(row):
        return (f"{row[0]:d}," + ",".join(repr(float(v)) for v in row[1:-1])
                + f",{row[-1]:.6g}\n")

    def write(self, row):
        self.fh.write(self.format(row))
        self.fh.flush()
        self.rows += 1

    def close(self):
        self.fh.close()


def _savez_atomic(path, **arrays):
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _train_rank0(problem, outdir, size, started, peer, stop, restart):
    cfg, tr, ck = problem.config, problem.config.training, problem.config.checkpoint
    meta, start, restarts = None, None, 0
    if restart:  # everything checked before the directory is touched
        meta = read_meta(outdir)
        restarts = int(meta.get("restarts", 0)) + 1
        problem.build()
        start = read_checkpoint(meta, problem.objective)
        _check_matches(problem, meta, start, problem.rng_states())
    write_config(outdir, cfg)
    write_summary(outdir, "train", "running", size, started, restarts=restarts)
    if restart:
        log.info("restarting from t = %.6g (step %d, checkpoint of %d rank(s))", start.t, start.k,
                 meta.get("ranks", 0))
    else:
        problem.build()
        log.info("training %s features (%s, %s, M = %d) on %s up to t = %g in %d outputs",
                 tr.features, tr.data, tr.method, tr.width, cfg.mesh.kind, tr.t_end,
                 len(tr.output_times))
    rngs = problem.rng_states()
    csv = TrainingLog(os.path.join(outdir, "training.csv"),
                      None if start is None else (meta["csv_rows"], start.hist.log))
    last_ck = [time.perf_counter()]
    where = [start]

    def checkpoint(st):
        write_checkpoint(outdir, st, problem.objective,
                         {"csv_rows": csv.rows, "ranks": size, "restarts": restarts, "rng": rngs})
        last_ck[0] = time.perf_counter()

    def stop_requested():
        if not stop.signum and peer is not None and peer.iprobe(source=_any_source(), tag=TAG_STOP):
            stop.signum = peer.recv(source=_any_source(), tag=TAG_STOP)
        return stop.signum

    def after_step(st):
        where[0] = st
        signum = stop_requested()
        due = ck.every_steps > 0 and st.k % ck.every_steps == 0
        due = due or (ck.every_seconds > 0 and time.perf_counter() - last_ck[0] >= ck.every_seconds)
        if signum or due:
            checkpoint(st)
        return bool(signum)

    progress = Progress(tr.t_end, "train", None, enabled=cfg.output.progress)
    t0 = time.perf_counter()
    try:
        with np.errstate(over="raise", invalid="raise"):
            hist = problem.run(progress, start=start, on_row=csv.write, after_step=after_step)
    except FloatingPointError as exc:
        raise SolverError(f"training diverged ({exc}); reduce training.step_size "
                          f"or training.outer_step") from None
    finally:
        progress.close()
        csv.close()
    wall = (0.0 if start is None else start.wall) + time.perf_counter() - t0
    theta = np.array(hist.theta)
    _savez_atomic(os.path.join(outdir, "particles.npz"), times=np.array(hist.times), theta=theta,
                  c=np.array(hist.c), loss=np.array(hist.loss))
    np.savez(os.path.join(outdir, "teacher.npz"), theta=problem.teacher)
    if hist.stopped:
        st = where[0]
        signame = signal.Signals(stop.signum).name
        message = (f"stopped by {signame} at t = {st.t:.6g} (step {st.k}); "
                   f"continue with: ufd train --restart {outdir}")
        log.warning("%s", message)
        write_summary(outdir, "train", "interrupted", size, started, message=message,
                      restarts=restarts, steps=st.k, t_final=st.t, train_time_s=round(wall, 3),
                      output_times=hist.times, loss=hist.loss)
        raise RunInterrupted(message, 128 + stop.signum)
    mmd = [problem.mmd(th) for th in theta]
    steps = hist.log[-1][0]
    return write_summary(
        outdir, "train", "completed", size, started, restarts=restarts,
        features=tr.features, data=tr.data, method=tr.method, width=tr.width,
        steps=steps, seconds_per_step=wall / max(1, steps), train_time_s=round(wall, 3),
        final_loss=hist.loss[-1], final_risk=hist.log[-1][3],
        output_times=hist.times, loss=hist.loss,
        mmd_to_teacher=[m[0] for m in mmd], mmd_to_sigma=[m[1] for m in mmd],
    )


def _check_matches(problem, meta, start, rngs):
    """The checkpoint belongs to this configuration (same schedule, shapes, random draws)."""
    tr = problem.config.training
    times = schedule(tr.step_size, tr.t_end, tr.output_times)
    M, D = problem.theta0.shape
    ok = (meta["width"] == M and meta["dim"] == D and start.theta.shape == (M, D)
          and 0 <= start.k < len(times) and float(times[start.k]) == start.t
          and meta["has_c"] == (tr.method == "2ts") and meta.get("rng") == _jsonable(rngs))
    if not ok:
        raise ConfigError(meta["directory"], "the checkpoint does not belong to this run's config.toml")


def _jsonable(x):
    return json.loads(json.dumps(x))
