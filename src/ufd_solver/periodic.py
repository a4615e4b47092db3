"""Periodic constraints of the flat torus through dolfinx_mpc.

One geometric constraint maps every dof on a "high" face (x_i = +L/2 for
some i) to its image with L subtracted from *each* coordinate that sits on
its high face.  A corner (or edge) dof is therefore slaved once, directly to
the fully wrapped master on the low faces, never through a chain of two
constraints.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

import dolfinx
import dolfinx_mpc

from .errors import ConfigError


def periodic_constraint(V: dolfinx.fem.FunctionSpace, length: float, dim: int) -> dolfinx_mpc.MultiPointConstraint:
    """A finalised MultiPointConstraint making V periodic on [−L/2, L/2)^dim."""
    half = 0.5 * length
    return box_periodic_constraint(V, np.full(dim, -half), np.full(dim, half))


def box_periodic_constraint(V: dolfinx.fem.FunctionSpace, lo, hi) -> dolfinx_mpc.MultiPointConstraint:
    """Periodic constraint on the box Π [lo_i, hi_i]: x_i = hi_i is slaved to x_i = lo_i."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    dim = len(lo)
    tol = 1e-8 * float(np.max(hi - lo))

    def on_high(x):
        mask = np.zeros(x.shape[1], dtype=bool)
        for i in range(dim):
            mask |= np.isclose(x[i], hi[i], atol=tol)
        return mask

    def relation(x):
        out = x.copy()
        for i in range(dim):
            high = np.isclose(x[i], hi[i], atol=tol)
            out[i] = np.where(high, x[i] - (hi[i] - lo[i]), x[i])
        return out

    mpc = dolfinx_mpc.MultiPointConstraint(V)
    mpc.create_periodic_constraint_geometrical(V, on_high, relation, [])
    mpc.finalize()
    _check_matched(V, mpc, on_high)
    return mpc


def _check_matched(V, mpc, on_high) -> None:
    """Every dof on a high face must have become a slave (a matching master exists)."""
    comm = V.mesh.comm
    n = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:n].T
    on_faces = comm.allreduce(int(on_high(x).sum()), op=MPI.SUM)
    slaves = np.asarray(mpc.slaves)
    n_slaves = comm.allreduce(int((slaves < n).sum()), op=MPI.SUM)
    if n_slaves != on_faces:
        raise ConfigError("mesh.periodic", f"the vertices of opposite faces do not match "
                          f"({on_faces - n_slaves} of {on_faces} face vertices have no periodic image)")


def bounding_box(mesh: dolfinx.mesh.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Global bounds of the mesh vertices."""
    gdim = mesh.geometry.dim
    x = mesh.geometry.x[:, :gdim]
    lo = mesh.comm.allreduce(x.min(axis=0) if len(x) else np.full(gdim, np.inf), op=MPI.MIN)
    hi = mesh.comm.allreduce(x.max(axis=0) if len(x) else np.full(gdim, -np.inf), op=MPI.MAX)
    return lo, hi


def check_box(mesh: dolfinx.mesh.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of a mesh that fills a box exactly, or ConfigError (``mesh.periodic``).

    A box: topological dimension = geometric dimension and every boundary facet
    lies in one face of the bounding box.
    """
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    if tdim != gdim:
        raise ConfigError("mesh.periodic", f"periodicity needs a flat box mesh; this mesh is a "
                          f"{tdim}D manifold in R^{gdim}")
    lo, hi = bounding_box(mesh)
    tol = 1e-8 * float(np.max(hi - lo))
    mesh.topology.create_connectivity(tdim - 1, 0)
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    f2v = mesh.topology.connectivity(tdim - 1, 0)
    nvf = tdim  # vertices per facet of a simplex
    verts = f2v.array.reshape(-1, nvf)[facets]
    pts = mesh.geometry.x[_vertex_nodes(mesh)[verts], :gdim]  # (facets, nvf, gdim)
    on_face = np.zeros(len(facets), dtype=bool)
    for i in range(gdim):
        on_face |= np.all(np.isclose(pts[:, :, i], lo[i], atol=tol), axis=1)
        on_face |= np.all(np.isclose(pts[:, :, i], hi[i], atol=tol), axis=1)
    if mesh.comm.allreduce(int((~on_face).sum()), op=MPI.SUM):
        raise ConfigError("mesh.periodic", "the mesh is not a box: some boundary facets lie "
                          "inside its bounding box")
    return lo, hi


def _vertex_nodes(mesh) -> np.ndarray:
    """Geometry node index of every local topology vertex (P1 geometry: the
    cell's vertices and its geometry dofs come in the same order)."""
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim, 0)
    c2v = mesh.topology.connectivity(tdim, 0)
    n_cells = mesh.topology.index_map(tdim).size_local + mesh.topology.index_map(tdim).num_ghosts
    nv = tdim + 1
    imap = mesh.topology.index_map(0)
    v2n = np.empty(imap.size_local + imap.num_ghosts, dtype=np.int64)
    v2n[c2v.array.reshape(-1, nv)[:n_cells].ravel()] = mesh.geometry.dofmap[:n_cells, :nv].ravel()
    return v2n
