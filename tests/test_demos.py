"""Demos and canonical meshes run as tests (small sizes)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ufd_solver.config import load_config
from ufd_solver.run import run_pde

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paper_circle_demo_small(comm, mpi_tmp_path):
    cfg = load_config(os.path.join(ROOT, "demos", "paper_circle.toml"),
                      ["mesh.resolution=200", "solver.t_end=16", "solver.output_times=[0.25, 1.0, 4.0]",
                       "output.progress=false"])
    out = os.path.join(mpi_tmp_path, "demo")
    s = run_pde(cfg, out, comm)
    assert s["status"] == "completed"
    assert abs(s["final"]["mass"] - 1) < 1e-12
    assert s["final"]["l1_to_sigma"] < 1e-3  # relaxed to σ
    if comm.rank == 0:
        z = np.load(os.path.join(out, "snapshots.npz"))
        np.testing.assert_allclose(z["times"], [0, 0.25, 1, 4, 16])


@pytest.mark.parametrize("mesh,dim,expected_dofs", [
    ("sphere_gmsh.msh", 3, 192), ("sphere3.xdmf", 3, 642), ("circle64.xdmf", 2, 64)])
def test_canonical_mesh_files(comm, mpi_tmp_path, mesh, dim, expected_dofs):
    cfg = load_config(data={}, overrides=[
        "mesh.kind='file'", f"mesh.file='{os.path.join(ROOT, 'meshes', mesh)}'", f"mesh.dim={dim}",
        "teacher.density='1.5 + x'", "solver.t_end=1", "output.progress=false"])
    s = run_pde(cfg, os.path.join(mpi_tmp_path, mesh), comm)
    assert s["dofs"] == expected_dofs
    assert abs(s["final"]["mass"] - 1) < 1e-12
