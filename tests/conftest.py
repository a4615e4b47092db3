"""MPI-aware pytest fixtures.

The suite runs serially (``python3 -m pytest``) and under
``mpirun -n 2 python3 -m pytest -m "not serial"``: fixtures that create files
broadcast one temporary directory from rank 0, and every test ends with a
garbage collection and a barrier so PETSc objects are destroyed collectively.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys

import pytest
from mpi4py import MPI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)


@pytest.fixture
def comm():
    return MPI.COMM_WORLD


@pytest.fixture
def mpi_tmp_path(tmp_path_factory):
    """One temporary directory shared by all ranks."""
    c = MPI.COMM_WORLD
    path = str(tmp_path_factory.mktemp("mpi")) if c.rank == 0 else None
    return c.bcast(path, root=0)


@pytest.fixture
def run_study(mpi_tmp_path):
    """Run ``demos/<name>.py --small`` in-process (collective); return (module, study.json, outdir)."""

    def run(name):
        demos = os.path.join(ROOT, "demos")
        if demos not in sys.path:
            sys.path.insert(0, demos)
        study = importlib.import_module(name)
        out = os.path.join(mpi_tmp_path, name)
        assert study.main(["--small", "-o", out, "-q"]) == 0
        with open(os.path.join(out, "study.json")) as fh:
            return study, json.load(fh), out

    return run


@pytest.fixture(autouse=True)
def _collect_and_sync():
    yield
    gc.collect()
    MPI.COMM_WORLD.Barrier()


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size > 1:
        skip = pytest.mark.skip(reason="serial-only test (runs without mpirun)")
        for item in items:
            if "serial" in item.keywords:
                item.add_marker(skip)
