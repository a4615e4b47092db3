"""Small helpers shared by the study scripts ``demos/study_*.py``.

Each study runs :func:`ufd_solver.validate.validate` for several cases, reusing
one PDE run where the PDE does not change, and writes ``study.md`` and
``study.json`` into its output directory.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if SRC not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, SRC)


def setup(doc, name, toml, full, small, argv=None):
    """Command line of a study: ``--small`` (test size), ``-o OUTDIR``, ``-q``.

    Returns ``(comm, base, size, out)``: MPI.COMM_WORLD, the configuration
    ``demos/<toml>`` with the size's ``"overrides"`` applied, the chosen size
    table (``full`` or ``small``) and the absolute output directory
    (default ``results/<name>``).
    """
    import argparse
    import logging

    from mpi4py import MPI

    from ufd_solver.config import load_config
    from ufd_solver.log import setup_logging

    ap = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    ap.add_argument("--small", action="store_true", help="test size (seconds)")
    ap.add_argument("-o", "--output", default=os.path.join("results", name), help="output directory")
    ap.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    setup_logging(comm, logging.WARNING if args.quiet else logging.INFO)
    size = small if args.small else full
    quiet = ["output.progress=false"] if args.quiet else []
    base = load_config(os.path.join(HERE, toml), size["overrides"] + quiet)
    return comm, base, size, os.path.abspath(args.output)


def with_training(config, **changes):
    """``config`` with ``[training]`` values replaced (``width=``, ``lam=``, ``init=`` ...)."""
    return config.replace(training=dataclasses.replace(config.training, **changes))


def with_teacher(config, density):
    """``config`` with another teacher density (a :class:`~ufd_solver.densities.Density` spec)."""
    from ufd_solver.config import DensityConfig

    return config.replace(teacher=DensityConfig.from_table({"density": density}, "teacher", None, False))


def series(summary, key):
    """The column ``key`` of a validation summary's rows, as an array over the output times."""
    return np.array([r[key] for r in summary["rows"]])


def loglog_slope(x, y):
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_pictures(paths, out):
    lines = ["## Pictures", ""]
    for p in paths:
        lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, out)})", ""]
    return lines


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]
