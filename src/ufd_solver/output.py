"""Writers of a PDE run: ParaView series, snapshots.npz and diagnostics.csv.

``RunWriter`` is a context manager.  At every output time it writes the named
fields ``rho``, ``sigma`` and ``ratio`` (= ρ/σ) on the original P-space to

* ``rho.bp``  — VTX (ADIOS2, BP4); open in ParaView with *ADIOS2VTXReader*;
* ``rho.xdmf`` (+ ``.h5``) — XDMF; open with *Xdmf3ReaderT*;

(with ``mesh.degree = 2`` VTX keeps P2, XDMF and the snapshots hold the P1
interpolant at the vertices)

and gathers ρ on rank 0 for ``snapshots.npz``: ``times`` (T), ``points``
(n × gdim vertex coordinates, global order), ``rho`` (T × n), ``sigma`` (n) and
``cells`` (global dof connectivity, for plotting).  ``diagnostics.csv`` gets
one row per accepted step (rank 0), flushed as it goes.
"""

from __future__ import annotations

import csv
import os

import numpy as np
from mpi4py import MPI

import dolfinx
import dolfinx.io

from .timestepping import DIAGNOSTIC_COLUMNS


class Gatherer:
    """Gather owned dof values of a space on rank 0 in global dof order."""

    def __init__(self, V: dolfinx.fem.FunctionSpace):
        self.comm = V.mesh.comm
        imap = V.dofmap.index_map
        self.n_owned = imap.size_local
        self.global_ids = imap.local_to_global(np.arange(self.n_owned, dtype=np.int32))
        self.n_global = imap.size_global
        all_ids = self.comm.gather(self.global_ids, root=0)
        self.order = np.concatenate(all_ids) if self.comm.rank == 0 else None

    def gather(self, local: np.ndarray) -> np.ndarray | None:
        parts = self.comm.gather(np.ascontiguousarray(local[: self.n_owned]), root=0)
        if self.comm.rank != 0:
            return None
        data = np.concatenate(parts)
        out = np.empty((self.n_global,) + data.shape[1:], dtype=data.dtype)
        out[self.order] = data
        return out

    def cells(self, V) -> np.ndarray | None:
        mesh = V.mesh
        tdim = mesh.topology.dim
        nc = mesh.topology.index_map(tdim).size_local
        dofs = V.dofmap.list[:nc]
        imap = V.dofmap.index_map
        n_all = imap.size_local + imap.num_ghosts
        l2g = imap.local_to_global(np.arange(n_all, dtype=np.int32))
        parts = self.comm.gather(l2g[dofs], root=0)
        return np.concatenate(parts) if self.comm.rank == 0 else None


class RunWriter:
    """Write a PDE run's outputs in ``outdir`` (collective)."""

    def __init__(self, problem, outdir: str, vtx: bool = True, xdmf: bool = True):
        self.problem = problem
        self.outdir = outdir
        self.comm = problem.comm
        V = problem.V
        self.V = V
        self.rho = dolfinx.fem.Function(V, name="rho")
        self.sigma = dolfinx.fem.Function(V, name="sigma")
        self.ratio = dolfinx.fem.Function(V, name="ratio")
        self._tmp = dolfinx.fem.Function(problem.W)
        self.sigma.interpolate(problem.sigma)
        # XDMF and snapshots hold vertex values (P1); VTX the native degree
        if problem.degree == 1:
            self.V1, self.rho1, self.sigma1, self.ratio1 = V, self.rho, self.sigma, self.ratio
        else:
            self.V1 = dolfinx.fem.functionspace(problem.mesh, ("Lagrange", 1))
            self.rho1 = dolfinx.fem.Function(self.V1, name="rho")
            self.sigma1 = dolfinx.fem.Function(self.V1, name="sigma")
            self.ratio1 = dolfinx.fem.Function(self.V1, name="ratio")
            self.sigma1.interpolate(self.sigma)
        self.use_vtx, self.use_xdmf = vtx, xdmf
        self.vtx = self.xdmf = None
        self.gatherer = Gatherer(self.V1)
        self.times: list[float] = []
        self.rhos: list[np.ndarray] = []
        self.csv_file = None
        self.csv = None

    def __enter__(self):
        comm = self.comm
        if self.use_vtx:
            self.vtx = dolfinx.io.VTXWriter(comm, os.path.join(self.outdir, "rho.bp"),
                                            [self.rho, self.sigma, self.ratio], engine="BP4")
        if self.use_xdmf:
            self.xdmf = dolfinx.io.XDMFFile(comm, os.path.join(self.outdir, "rho.xdmf"), "w")
            self.xdmf.write_mesh(self.problem.mesh)
        if comm.rank == 0:
            self.csv_file = open(os.path.join(self.outdir, "diagnostics.csv"), "w", newline="")
            self.csv = csv.DictWriter(self.csv_file, fieldnames=DIAGNOSTIC_COLUMNS)
            self.csv.writeheader()
        return self

    def _update_fields(self, rho_values: np.ndarray) -> None:
        self._tmp.x.array[:] = rho_values
        self.rho.interpolate(self._tmp)
        self.rho.x.scatter_forward()
        self.ratio.x.array[:] = self.rho.x.array / self.sigma.x.array
        if self.rho1 is not self.rho:
            self.rho1.interpolate(self.rho)
            self.ratio1.x.array[:] = self.rho1.x.array / self.sigma1.x.array

    def write(self, t: float, rho_values: np.ndarray) -> None:
        """Write ρ (nodal values on the problem's space) at time t."""
        if not np.all(np.isfinite(rho_values)):
            raise FloatingPointError("refusing to write a non-finite density")
        self._update_fields(rho_values)
        if self.vtx is not None:
            self.vtx.write(t)
        if self.xdmf is not None:
            self.xdmf.write_function(self.rho1, t)
            self.xdmf.write_function(self.sigma1, t)
            self.xdmf.write_function(self.ratio1, t)
        g = self.gatherer.gather(self.rho1.x.array)
        if self.comm.rank == 0:
            self.times.append(t)
            self.rhos.append(g)

    def record(self, row: dict) -> None:
        if self.csv is not None:
            self.csv.writerow({k: row.get(k, "") for k in DIAGNOSTIC_COLUMNS})
            self.csv_file.flush()

    def save_snapshots(self) -> None:
        """Write snapshots.npz (rank 0; the others only take part in the gathers)."""
        V = self.V1
        points = self.gatherer.gather(V.tabulate_dof_coordinates()[:, : V.mesh.geometry.dim])
        sigma = self.gatherer.gather(self.sigma1.x.array)
        cells = self.gatherer.cells(V)
        if self.comm.rank == 0:
            path = os.path.join(self.outdir, "snapshots.npz")
            tmp = path + ".tmp.npz"
            np.savez(tmp, times=np.array(self.times), points=points,
                     rho=np.array(self.rhos), sigma=sigma, cells=cells)
            os.replace(tmp, path)

    def __exit__(self, *exc):
        if self.vtx is not None:
            self.vtx.close()
        if self.xdmf is not None:
            self.xdmf.close()
        if self.csv_file is not None:
            self.csv_file.close()
        return False
