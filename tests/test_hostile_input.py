"""Hostile input: one clear line naming the key or file, exit code 2, no output."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from mpi4py import MPI

pytestmark = pytest.mark.serial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ufd(*args, ranks=1):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "ufd_solver", *args]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def refused(tmp_path, *args, fragment, ranks=1):
    out = tmp_path / "out"
    r = ufd("run", *args, "-o", str(out), ranks=ranks)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("ufd run: error:")]
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def write_xdmf(path, cells, x, cell="triangle"):
    import basix.ufl
    import dolfinx
    import ufl

    domain = ufl.Mesh(basix.ufl.element("Lagrange", cell, 1, shape=(x.shape[1],)))
    mesh = dolfinx.mesh.create_mesh(MPI.COMM_SELF, cells, x, domain)
    with dolfinx.io.XDMFFile(MPI.COMM_SELF, str(path), "w") as fh:
        mesh.name = "mesh"
        fh.write_mesh(mesh)


def file_args(path, dim):
    return ["--set", "mesh.kind='file'", "--set", f"mesh.file='{path}'", "--set", f"mesh.dim={dim}",
            "--set", "teacher.density='2 + x'", "--set", "solver.t_end=0.1"]


def test_open_surface_is_not_a_closed_manifold(tmp_path):
    from ufd_solver.meshes import icosphere

    v, f = icosphere(2)
    keep = v[f].mean(axis=1)[:, 2] > 0.1
    used, cells = np.unique(f[keep], return_inverse=True)
    path = tmp_path / "cap.xdmf"
    write_xdmf(path, cells.reshape(-1, 3).astype(np.int64), v[used])
    refused(tmp_path, *file_args(path, 3), fragment="must be closed")


def test_degenerate_cells(tmp_path):
    x = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [2, 0]], dtype=float)
    cells = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4]], dtype=np.int64)  # last one is flat
    path = tmp_path / "flat.xdmf"
    write_xdmf(path, cells, x)
    refused(tmp_path, *file_args(path, 2), fragment="degenerate cells")


def test_empty_and_unreadable_mesh_files(tmp_path):
    import gmsh

    path = tmp_path / "empty.msh"
    gmsh.initialize(["-v", "0"])
    gmsh.model.add("empty")
    gmsh.model.geo.addPoint(0, 0, 0)
    gmsh.model.geo.synchronize()
    gmsh.write(str(path))
    gmsh.finalize()
    refused(tmp_path, *file_args(path, 2), fragment="mesh.file")
    junk = tmp_path / "junk.xdmf"
    junk.write_text("<not xdmf")
    refused(tmp_path, *file_args(junk, 2), fragment="cannot read mesh")
    refused(tmp_path, *file_args(tmp_path / "x.vtk", 2), fragment="does not exist")


def test_wrong_dimension(tmp_path):
    sphere = os.path.join(ROOT, "meshes", "sphere_gmsh.msh")
    refused(tmp_path, *file_args(sphere, 2), fragment="mesh.dim")


def test_periodic_request_on_a_non_box_mesh(tmp_path):
    x = np.array([[0, 0], [1, 0], [0, 1]], dtype=float)  # a triangle is not a box
    path = tmp_path / "tri.xdmf"
    write_xdmf(path, np.array([[0, 1, 2]], dtype=np.int64), x)
    refused(tmp_path, *file_args(path, 2), "--set", "mesh.periodic=true", fragment="not a box")
    refused(tmp_path, "--set", "mesh.periodic=true", fragment="mesh.periodic")
    sphere = os.path.join(ROOT, "meshes", "sphere3.xdmf")
    refused(tmp_path, *file_args(sphere, 3), "--set", "mesh.periodic=true", fragment="flat box")


def test_nan_in_particle_samples(tmp_path):
    path = tmp_path / "p.npz"
    theta = np.linspace(-3, 3, 50)
    theta[7] = np.nan
    np.savez(path, theta=theta)
    refused(tmp_path, "--set", f"initial.density={{samples='{path}'}}", fragment="NaN")
    np.savez(path, other=np.zeros((4, 3)))
    refused(tmp_path, "--set", f"initial.density={{samples='{path}', key='theta'}}",
            fragment="no array 'theta'")


@pytest.mark.parametrize("value,fragment", [
    ("mesh.resolution=-5", "mesh.resolution: must be > 0"),
    ("solver.dt0=0", "solver.dt0: must be > 0"),
    ("solver.t_end=inf", "solver.t_end: must be finite"),
    ("solver.num_outputs=0", "solver.num_outputs: must be > 0"),
    ("teacher.density='sin(theta)**2'", "σ must be strictly positive"),
    ("teacher.density='getattr(x, 1)'", "function 'getattr' is not allowed"),
    ("teacher.density='().__class__.__bases__'", "not allowed"),
    ("initial.density='log(0*x)'", "NaN or inf"),
    ("checkpoint.every_steps=-1", "checkpoint.every_steps: must be >= 0"),
])
def test_bad_values(tmp_path, value, fragment):
    refused(tmp_path, "--set", value, fragment=fragment)


def test_too_many_ranks_for_the_mesh(tmp_path):
    refused(tmp_path, "--set", "mesh.resolution=3", fragment="too many ranks", ranks=4)
