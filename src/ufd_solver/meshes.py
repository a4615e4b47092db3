"""Meshes of the feature spaces (dolfinx).

* circle: ``resolution`` interval cells with vertices on the unit circle in
  R² (a closed 1D manifold; the polygon's perimeter is N·2 sin(π/N) → 2π).
* sphere: geodesic icosphere, ``resolution`` = refinement level (10·4^r + 2
  vertices projected to the unit sphere); triangles in R³.
* torus / box: the box [−L/2, L/2]^d, ``resolution`` cells per side
  (intervals, triangles or tetrahedra); the torus gets periodic constraints
  in :mod:`ufd_solver.periodic`.
* file: gmsh ``.msh`` (``mesh.dim`` = geometric dimension of its points) or
  XDMF (mesh named "mesh" or the first grid).

Cells and coordinates are created on rank 0 and distributed by dolfinx, so the
mesh (and every result) does not depend on the number of ranks except through
the partition.
"""

from __future__ import annotations

import os

import numpy as np
from mpi4py import MPI

import basix.ufl
import dolfinx
import dolfinx.la
import ufl

from .config import MeshConfig
from .errors import ConfigError


def _create(comm: MPI.Comm, cells: np.ndarray, x: np.ndarray, cell: str, gdim: int) -> dolfinx.mesh.Mesh:
    domain = ufl.Mesh(basix.ufl.element("Lagrange", cell, 1, shape=(gdim,)))
    if comm.rank != 0:
        nv = cells.shape[1] if cells.ndim == 2 else {"interval": 2, "triangle": 3}[cell]
        cells = np.empty((0, nv), dtype=np.int64)
        x = np.empty((0, gdim), dtype=np.float64)
    return dolfinx.mesh.create_mesh(comm, cells.astype(np.int64), x.astype(np.float64), domain)


def circle_mesh(comm: MPI.Comm, n: int) -> dolfinx.mesh.Mesh:
    """Closed polygon of ``n`` cells with vertices on the unit circle, θ_i = −π + 2πi/n."""
    theta = -np.pi + 2.0 * np.pi * np.arange(n) / n
    x = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    cells = np.stack([np.arange(n), (np.arange(n) + 1) % n], axis=1)
    return _create(comm, cells, x, "interval", 2)


def icosphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of the geodesic icosphere of refinement ``level``."""
    t = (1.0 + np.sqrt(5.0)) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
                  [8, 6, 7], [9, 8, 1]], dtype=np.int64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(level):
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        edges.sort(axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        mid = v[unique[:, 0]] + v[unique[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = len(f)
        a, b, c = (len(v) + inverse[:m], len(v) + inverse[m:2 * m], len(v) + inverse[2 * m:])
        v = np.concatenate([v, mid])
        f = np.concatenate([np.stack([f[:, 0], a, c], 1), np.stack([f[:, 1], b, a], 1),
                            np.stack([f[:, 2], c, b], 1), np.stack([a, b, c], 1)])
    return v, f


def sphere_mesh(comm: MPI.Comm, level: int) -> dolfinx.mesh.Mesh:
    """Geodesic icosphere of refinement ``level`` on the unit sphere."""
    x, cells = icosphere(level) if comm.rank == 0 else (np.empty((0, 3)), np.empty((0, 3), np.int64))
    return _create(comm, cells, x, "triangle", 3)


def box_mesh(comm: MPI.Comm, dim: int, n: int, length: float) -> dolfinx.mesh.Mesh:
    """[−L/2, L/2]^d with ``n`` cells per side."""
    h = 0.5 * length
    if dim == 1:
        return dolfinx.mesh.create_interval(comm, n, [-h, h])
    if dim == 2:
        return dolfinx.mesh.create_rectangle(comm, [[-h, -h], [h, h]], [n, n],
                                             dolfinx.mesh.CellType.triangle,
                                             diagonal=dolfinx.mesh.DiagonalType.right)
    return dolfinx.mesh.create_box(comm, [[-h, -h, -h], [h, h, h]], [n, n, n],
                                   dolfinx.mesh.CellType.tetrahedron)


def file_mesh(comm: MPI.Comm, path: str, gdim: int) -> dolfinx.mesh.Mesh:
    """Read a gmsh ``.msh`` or XDMF mesh."""
    key = "mesh.file"
    if not os.path.isfile(path):
        raise ConfigError(key, f"file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".msh":
            from dolfinx.io import gmshio

            mesh = gmshio.read_from_msh(path, comm, 0, gdim=3)[0]
            x = mesh.geometry.x
            extra = comm.allreduce(float(np.abs(x[:, gdim:]).max()) if x.size and gdim < 3 else 0.0,
                                   op=MPI.MAX)
            if extra > 0:
                raise ConfigError("mesh.dim", f"the points of {path!r} use {gdim + 1} or more "
                                  f"coordinates but mesh.dim = {gdim}")
            if gdim < 3:
                mesh = gmshio.read_from_msh(path, comm, 0, gdim=gdim)[0]
            return mesh
        if ext == ".xdmf":
            with dolfinx.io.XDMFFile(comm, path, "r") as fh:
                try:
                    return fh.read_mesh(name="mesh")
                except RuntimeError:
                    return fh.read_mesh(name="Grid")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input
        raise ConfigError(key, f"cannot read mesh {path!r}: {exc}") from None
    raise ConfigError(key, f"unsupported mesh format {ext!r}; allowed: .msh, .xdmf")


def build_mesh(comm: MPI.Comm, cfg: MeshConfig) -> dolfinx.mesh.Mesh:
    """The mesh described by ``[mesh]``, checked (non-empty, positive cell sizes)."""
    if cfg.kind == "circle":
        mesh = circle_mesh(comm, cfg.resolution)
    elif cfg.kind == "sphere":
        mesh = sphere_mesh(comm, cfg.resolution)
    elif cfg.kind in ("torus", "box"):
        mesh = box_mesh(comm, cfg.dim, cfg.resolution, cfg.length)
    else:
        mesh = file_mesh(comm, cfg.file, cfg.dim)
    check_mesh(mesh, cfg)
    return mesh


def check_mesh(mesh: dolfinx.mesh.Mesh, cfg: MeshConfig) -> None:
    """Reject empty meshes, degenerate cells and more ranks than cells."""
    comm = mesh.comm
    tdim = mesh.topology.dim
    n_local = mesh.topology.index_map(tdim).size_local
    n_global = comm.allreduce(n_local, op=MPI.SUM)
    key = "mesh.file" if cfg.kind == "file" else "mesh.resolution"
    if n_global == 0:
        raise ConfigError(key, "the mesh has no cells")
    if comm.allreduce(int(n_local == 0), op=MPI.SUM):
        raise ConfigError(key, f"too many ranks ({comm.size}) for a mesh of {n_global} cells: "
                          "some rank owns no cell; use fewer ranks or a finer mesh")
    # cell volumes |det J|/d!: zero for degenerate (collapsed or flattened) cells.
    # Orientation itself is irrelevant: dolfinx orders simplex vertices by index.
    DG0 = dolfinx.fem.functionspace(mesh, ("DG", 0))
    vols = dolfinx.fem.assemble_vector(dolfinx.fem.form(ufl.TestFunction(DG0) * ufl.dx)).array[:n_local]
    h = mesh.h(tdim, np.arange(n_local, dtype=np.int32))
    bad = int(np.sum(~(vols > 1e-12 * h**tdim)))
    if comm.allreduce(bad, op=MPI.SUM):
        raise ConfigError(key, f"the mesh has {comm.allreduce(bad, op=MPI.SUM)} degenerate cells "
                          "(zero volume)")
    if cfg.kind in ("circle", "sphere", "file") and tdim < mesh.geometry.dim:
        if count_boundary_facets(mesh):
            raise ConfigError(key, "a manifold mesh must be closed (it has boundary facets)")


def count_boundary_facets(mesh: dolfinx.mesh.Mesh) -> int:
    """Global number of facets with exactly one cell.

    Counts cells per facet locally and sums them on the owning rank through
    the facet index map (``exterior_facet_indices`` miscounts process-boundary
    vertices of interval meshes in parallel).
    """
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    imap = mesh.topology.index_map(tdim - 1)
    f2c = mesh.topology.connectivity(tdim - 1, tdim)
    counts = dolfinx.la.vector(imap, 1, dtype=np.float64)
    counts.array[:] = np.diff(f2c.offsets)
    counts.scatter_reverse(dolfinx.la.InsertMode.add)
    local = int(np.sum(counts.array[: imap.size_local] == 1))
    return mesh.comm.allreduce(local, op=MPI.SUM)


def mesh_space(mesh: dolfinx.mesh.Mesh, cfg: MeshConfig):
    """The :class:`~ufd_solver.geometry.FeatureSpace` of a built mesh."""
    from .geometry import make_space

    if cfg.kind == "file":
        return make_space("file", mesh.topology.dim, cfg.length, mesh.geometry.dim)
    return cfg.space()


def write_mesh(mesh: dolfinx.mesh.Mesh, path: str) -> None:
    """Write ``mesh`` as XDMF (name "mesh")."""
    with dolfinx.io.XDMFFile(mesh.comm, path, "w") as fh:
        mesh.name = "mesh"
        fh.write_mesh(mesh)
