"""Checkpoints of a ``ufd train`` run (pure numpy: no dolfinx needed).

``OUTDIR/checkpoint/`` holds

* ``state.json`` — schedule index k and time t, width and dimension, method,
  the number of ``training.csv`` rows already written, the wall seconds of
  training so far, restart count, the states of the random streams after the
  problem was built (a check: nothing random is drawn during training), and
  the scalar state of the objective's linear solver;
* ``state.npz`` — θ (M × D), c (2TS), the particles, c and loss stored at
  the output times so far, the ``training.csv`` rows so far (full precision),
  and the arrays of the solver's state (the pcg preconditioner's Cholesky
  factor and its warm-start vectors), so that a restart repeats the same
  factor history and matches an uninterrupted run bit for bit.

The layout and the atomic update follow :mod:`ufd_solver.checkpoint`
(``ufd run``): a checkpoint is written into ``checkpoint.tmp/`` (``state.json``
last) and renamed over the previous one, which is moved to
``checkpoint.old/`` first and removed afterwards, so a run killed at any
moment leaves one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from ..errors import ConfigError
from .trainer import History, LoopState

STATE = "state.json"
ARRAYS = "state.npz"
FORMAT = 1


def _dirs(outdir):
    return (os.path.join(outdir, "checkpoint"), os.path.join(outdir, "checkpoint.tmp"),
            os.path.join(outdir, "checkpoint.old"))


def write_checkpoint(outdir: str, state: LoopState, objective, extra: dict) -> None:
    """Write the loop state, the objective's solver state and ``extra`` atomically."""
    final, tmp, old = _dirs(outdir)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    hist = state.hist
    M, D = state.theta.shape
    solver_meta, solver_arrays = solver_state(objective)
    arrays = {
        "theta": state.theta,
        "hist_times": np.array(hist.times, dtype=float),
        "hist_theta": np.array(hist.theta, dtype=float).reshape(len(hist.times), M, D),
        "hist_c": np.array(hist.c, dtype=float).reshape(len(hist.times), M),
        "hist_loss": np.array(hist.loss, dtype=float),
        "log": np.array(hist.log, dtype=float).reshape(len(hist.log), -1),
        **{f"solver.{k}": v for k, v in solver_arrays.items()},
    }
    if state.c is not None:
        arrays["c"] = state.c
    np.savez(os.path.join(tmp, ARRAYS), **arrays)
    meta = {"command": "train", "format": FORMAT, "k": state.k, "t": state.t, "width": M, "dim": D,
            "has_c": state.c is not None, "wall": state.wall, "solver": solver_meta, **extra}
    with open(os.path.join(tmp, STATE), "w") as fh:
        json.dump(meta, fh, indent=1)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(outdir: str) -> str:
    """The directory of the newest complete checkpoint in ``outdir``."""
    final, _, old = _dirs(outdir)
    for d in (final, old):
        if os.path.isfile(os.path.join(d, STATE)) and os.path.isfile(os.path.join(d, ARRAYS)):
            return d
    raise ConfigError(outdir, "no checkpoint to restart from (train with [checkpoint] enabled: "
                      "every_steps > 0 or every_seconds > 0)")


def read_meta(outdir: str) -> dict:
    d = find_checkpoint(outdir)
    try:
        with open(os.path.join(d, STATE)) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(d, f"unreadable checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("command") != "train" or meta.get("format") != FORMAT:
        raise ConfigError(d, "not a checkpoint of 'ufd train'")
    meta["directory"] = d
    return meta


def read_checkpoint(meta: dict, objective) -> LoopState:
    """The :class:`LoopState` of a checkpoint; restores the objective's solver state."""
    with np.load(os.path.join(meta["directory"], ARRAYS), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    hist = History(times=[float(t) for t in arrays["hist_times"]], theta=list(arrays["hist_theta"]),
                   c=list(arrays["hist_c"]), loss=[float(v) for v in arrays["hist_loss"]],
                   log=[(int(r[0]), *(float(v) for v in r[1:])) for r in arrays["log"]])
    restore_solver(objective, meta["solver"],
                   {k[len("solver."):]: v for k, v in arrays.items() if k.startswith("solver.")})
    return LoopState(k=int(meta["k"]), t=float(meta["t"]), theta=arrays["theta"],
                     c=arrays.get("c") if meta["has_c"] else None, hist=hist, wall=float(meta["wall"]))


def solver_state(objective) -> tuple[dict, dict]:
    """(scalars, arrays) of the objective's stateful linear solver (pcg), if any.

    Every attribute of the solver is saved: None, numbers, arrays, and the
    ``(factor, lower)`` pair of ``scipy.linalg.cho_factor``.
    """
    solver = getattr(objective, "_pcg", None)
    if solver is None:
        return {}, {}
    scalars, arrays = {"kind": type(solver).__name__, "attrs": {}}, {}
    for name, value in vars(solver).items():
        if value is None or isinstance(value, (bool, int, float, str)):
            scalars["attrs"][name] = value
        elif isinstance(value, np.ndarray):
            arrays[name] = value
            scalars["attrs"][name] = {"array": True}
        elif (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], np.ndarray)
              and isinstance(value[1], (bool, np.bool_))):
            arrays[name] = value[0]
            scalars["attrs"][name] = {"cho_factor": bool(value[1])}
        else:
            raise TypeError(f"cannot checkpoint {type(solver).__name__}.{name} ({type(value).__name__})")
    return scalars, arrays


def restore_solver(objective, scalars: dict, arrays: dict) -> None:
    solver = getattr(objective, "_pcg", None)
    if solver is None and not scalars:
        return
    if solver is None or scalars.get("kind") != type(solver).__name__:
        raise ConfigError("training.solver", "does not match the checkpoint's linear solver")
    for name, value in scalars["attrs"].items():
        if isinstance(value, dict) and "array" in value:
            value = arrays[name]
        elif isinstance(value, dict) and "cho_factor" in value:
            value = (arrays[name], value["cho_factor"])
        setattr(solver, name, value)
