"""Checkpoints of a PDE run, readable on any number of ranks.

``OUTDIR/checkpoint/`` holds

* ``state.bp`` — adios4dolfinx: the mesh in input order and the history
  functions ``rho<k>``/``p<k>`` (k = 0, 1, 2, newest last) written with
  ``write_function_on_input_mesh``, so they can be read back onto the same mesh
  built again from the configuration on a different number of ranks;
* ``state.json`` — time, proposed step, output index, step history, counters,
  the number of diagnostics rows already written;
* ``snapshots.npz`` — the snapshots gathered so far (input vertex order).

A checkpoint is written into ``checkpoint.tmp/`` and then renamed over the
previous one (the old one is moved to ``checkpoint.old/`` first and removed
afterwards), so a run killed at any moment leaves one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

import adios4dolfinx
import dolfinx

from .errors import ConfigError
from .timestepping import IntegratorState

STATE = "state.json"


def _dirs(outdir):
    return (os.path.join(outdir, "checkpoint"), os.path.join(outdir, "checkpoint.tmp"),
            os.path.join(outdir, "checkpoint.old"))


def write_checkpoint(outdir: str, problem, state: IntegratorState, extra: dict,
                     snapshots: tuple | None) -> None:
    """Write a complete checkpoint atomically (collective)."""
    comm = problem.comm
    final, tmp, old = _dirs(outdir)
    if comm.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    comm.Barrier()
    path = os.path.join(tmp, "state.bp")
    adios4dolfinx.write_mesh_input_order(path, problem.mesh)
    f = dolfinx.fem.Function(problem.V)
    w = dolfinx.fem.Function(problem.W)
    for k, (rho, p) in enumerate(zip(state.hist_rho, state.hist_p)):
        for name, values in ((f"rho{k}", rho), (f"p{k}", p)):
            if values is None:
                continue
            w.x.array[:] = values
            f.interpolate(w)
            adios4dolfinx.write_function_on_input_mesh(path, f, time=0.0, name=name)
    if comm.rank == 0:
        meta = {
            "t": state.t, "dt": state.dt, "k_out": state.k_out, "hist_t": state.hist_t,
            "hist_dt": state.hist_dt, "has_p": [p is not None for p in state.hist_p],
            "steps": state.steps, "rejected_total": state.rejected_total,
            "failed_solves": state.failed_solves, **extra,
        }
        with open(os.path.join(tmp, STATE), "w") as fh:
            json.dump(meta, fh, indent=1)
        times, rhos = snapshots if snapshots is not None else ([], [])
        np.savez(os.path.join(tmp, "snapshots.npz"), times=np.array(times), rho=np.array(rhos))
        shutil.rmtree(old, ignore_errors=True)
        if os.path.isdir(final):
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    comm.Barrier()


def find_checkpoint(outdir: str) -> str:
    """The directory of the newest complete checkpoint in ``outdir``."""
    final, _, old = _dirs(outdir)
    for d in (final, old):
        if os.path.isfile(os.path.join(d, STATE)):
            return d
    raise ConfigError(outdir, "no checkpoint to restart from (run with [checkpoint] enabled)")


def read_checkpoint(outdir: str, problem) -> tuple[IntegratorState, dict, tuple]:
    """Read the state written by :func:`write_checkpoint` (collective)."""
    comm = problem.comm
    d = comm.bcast(find_checkpoint(outdir) if comm.rank == 0 else None, root=0)
    meta = None
    snaps = None
    if comm.rank == 0:
        with open(os.path.join(d, STATE)) as fh:
            meta = json.load(fh)
        with np.load(os.path.join(d, "snapshots.npz")) as z:
            snaps = (list(z["times"]), list(z["rho"]))
    meta = comm.bcast(meta, root=0)
    path = os.path.join(d, "state.bp")
    f = dolfinx.fem.Function(problem.V)
    w = dolfinx.fem.Function(problem.W)
    hist_rho, hist_p = [], []
    for k, has_p in enumerate(meta["has_p"]):
        for name, target in ((f"rho{k}", hist_rho), (f"p{k}", hist_p)):
            if name.startswith("p") and not has_p:
                target.append(None)
                continue
            adios4dolfinx.read_function(path, f, time=0.0, name=name)
            w.interpolate(f)
            target.append(w.x.array.copy())
    state = IntegratorState(
        t=meta["t"], dt=meta["dt"], k_out=meta["k_out"], hist_t=list(meta["hist_t"]),
        hist_dt=list(meta["hist_dt"]), hist_rho=hist_rho, hist_p=hist_p, steps=meta["steps"],
        rejected_total=meta["rejected_total"], failed_solves=meta["failed_solves"])
    return state, meta, snaps
