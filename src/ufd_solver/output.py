"""Writers of a PDE run: ParaView series, snapshots.npz and diagnostics.csv.

``RunWriter`` is a context manager.  At every output time it writes the named
fields ``rho``, ``sigma`` and ``ratio`` (= ρ/σ) on the original P-space to

* ``rho.bp``  — VTX (ADIOS2, BP4); open in ParaView with *ADIOS2VTXReader*;
* ``rho.xdmf`` (+ ``.h5``) — XDMF; open with *Xdmf3ReaderT*;

(with ``mesh.degree = 2`` VTX keeps P2, XDMF and the snapshots hold the P1
interpolant at the vertices)

and gathers ρ on rank 0 for ``snapshots.npz``: ``times`` (T), ``points``
(n × gdim vertex coordinates in the mesh's input order, the same for any
number of ranks), ``rho`` (T × n), ``sigma`` (n) and ``cells`` (cell → vertex
connectivity, for plotting).  ``diagnostics.csv`` gets
one row per accepted step (rank 0), flushed as it goes.
"""

from __future__ import annotations

import csv
import os

import numpy as np

import dolfinx
import dolfinx.io

from .timestepping import DIAGNOSTIC_COLUMNS


class Gatherer:
    """Gather owned P1 dof values on rank 0 in the mesh's *input* vertex order.

    The input order (the order of the vertices given to dolfinx by the mesh
    builder or the mesh file) does not depend on the number of ranks or the
    partition, so ``snapshots.npz`` is the same on 1 and N ranks.
    """

    def __init__(self, V1: dolfinx.fem.FunctionSpace):
        mesh = V1.mesh
        self.comm = mesh.comm
        imap = V1.dofmap.index_map
        self.n_owned = imap.size_local
        tdim = mesh.topology.dim
        n_cells = mesh.topology.index_map(tdim).size_local + mesh.topology.index_map(tdim).num_ghosts
        cell_dofs = V1.dofmap.list[:n_cells]
        geom_nodes = mesh.geometry.dofmap[:n_cells]
        inputs = np.asarray(mesh.geometry.input_global_indices, dtype=np.int64)
        dof_input = np.empty(self.n_owned + imap.num_ghosts, dtype=np.int64)
        dof_input[cell_dofs.ravel()] = inputs[geom_nodes.ravel()]
        self.dof_input = dof_input
        self.n_global = imap.size_global
        all_ids = self.comm.gather(dof_input[: self.n_owned], root=0)
        self.order = np.concatenate(all_ids) if self.comm.rank == 0 else None
        n_local_cells = mesh.topology.index_map(tdim).size_local
        self._cells = self.comm.gather(dof_input[cell_dofs[:n_local_cells]], root=0)
        self._cell_order = self.comm.gather(
            np.asarray(mesh.topology.original_cell_index[:n_local_cells], dtype=np.int64), root=0)

    def gather(self, local: np.ndarray) -> np.ndarray | None:
        parts = self.comm.gather(np.ascontiguousarray(local[: self.n_owned]), root=0)
        if self.comm.rank != 0:
            return None
        data = np.concatenate(parts)
        out = np.empty((self.n_global,) + data.shape[1:], dtype=data.dtype)
        out[self.order] = data
        return out

    def scatter(self, values: np.ndarray | None, out: np.ndarray) -> None:
        """Inverse of :meth:`gather`: global input-ordered ``values`` (rank 0) into
        the local dof array ``out`` (owned and ghost entries)."""
        values = self.comm.bcast(values, root=0)
        out[: len(self.dof_input)] = values[self.dof_input]

    def cells(self) -> np.ndarray | None:
        """Cell → vertex connectivity in input vertex numbers (rank 0)."""
        if self.comm.rank != 0:
            return None
        cells = np.concatenate(self._cells)
        return cells[np.argsort(np.concatenate(self._cell_order), kind="stable")]


class RunWriter:
    """Write a PDE run's outputs in ``outdir`` (collective)."""

    def __init__(self, problem, outdir: str, vtx: bool = True, xdmf: bool = True,
                 resume: tuple | None = None):
        """``resume = (csv_rows, (times, rhos))`` continues a checkpointed run:
        diagnostics.csv keeps its header and first ``csv_rows`` rows, and the
        ParaView series are written again from the saved snapshots."""
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
        self.resume = resume
        self.rows = 0

    def __enter__(self):
        comm = self.comm
        if self.use_vtx:
            self.vtx = dolfinx.io.VTXWriter(comm, os.path.join(self.outdir, "rho.bp"),
                                            [self.rho, self.sigma, self.ratio], engine="BP4")
        if self.use_xdmf:
            self.xdmf = dolfinx.io.XDMFFile(comm, os.path.join(self.outdir, "rho.xdmf"), "w")
            self.xdmf.write_mesh(self.problem.mesh)
        path = os.path.join(self.outdir, "diagnostics.csv")
        if self.resume is None:
            if comm.rank == 0:
                self.csv_file = open(path, "w", newline="")
                self.csv = csv.DictWriter(self.csv_file, fieldnames=DIAGNOSTIC_COLUMNS)
                self.csv.writeheader()
            return self
        rows, snaps = self.resume
        times, rhos = snaps if snaps is not None else ([], [])
        if comm.rank == 0:
            with open(path, newline="") as fh:
                kept = fh.readlines()[: 1 + rows]
            self.csv_file = open(path, "w", newline="")
            self.csv_file.writelines(kept)
            self.csv_file.flush()
            self.csv = csv.DictWriter(self.csv_file, fieldnames=DIAGNOSTIC_COLUMNS)
        self.rows = rows
        n = comm.bcast(len(times) if comm.rank == 0 else None, root=0)
        for k in range(n):
            t = comm.bcast(float(times[k]) if comm.rank == 0 else None, root=0)
            self.gatherer.scatter(rhos[k] if comm.rank == 0 else None, self.rho1.x.array)
            self.rho1.x.scatter_forward()
            if self.rho1 is not self.rho:
                self.rho.interpolate(self.rho1)
            self._write_series(t)
            if comm.rank == 0:
                self.times.append(t)
                self.rhos.append(np.asarray(rhos[k]))
        return self

    def _write_series(self, t: float) -> None:
        self.ratio.x.array[:] = self.rho.x.array / self.sigma.x.array
        if self.rho1 is not self.rho:
            self.ratio1.x.array[:] = self.rho1.x.array / self.sigma1.x.array
        if self.vtx is not None:
            self.vtx.write(t)
        if self.xdmf is not None:
            self.xdmf.write_function(self.rho1, t)
            self.xdmf.write_function(self.sigma1, t)
            self.xdmf.write_function(self.ratio1, t)

    def write(self, t: float, rho_values: np.ndarray) -> None:
        """Write ρ (nodal values on the problem's space) at time t."""
        if not np.all(np.isfinite(rho_values)):
            raise FloatingPointError("refusing to write a non-finite density")
        self._tmp.x.array[:] = rho_values
        self.rho.interpolate(self._tmp)
        self.rho.x.scatter_forward()
        if self.rho1 is not self.rho:
            self.rho1.interpolate(self.rho)
        self._write_series(t)
        g = self.gatherer.gather(self.rho1.x.array)
        if self.comm.rank == 0:
            self.times.append(t)
            self.rhos.append(g)

    def record(self, row: dict) -> None:
        self.rows += 1
        if self.csv is not None:
            self.csv.writerow({k: row.get(k, "") for k in DIAGNOSTIC_COLUMNS})
            self.csv_file.flush()

    def snapshots(self) -> tuple | None:
        """(times, rhos) gathered so far (rank 0; None elsewhere)."""
        return (list(self.times), list(self.rhos)) if self.comm.rank == 0 else None

    def save_snapshots(self) -> None:
        """Write snapshots.npz (rank 0; the others only take part in the gathers)."""
        V = self.V1
        points = self.gatherer.gather(V.tabulate_dof_coordinates()[:, : V.mesh.geometry.dim])
        sigma = self.gatherer.gather(self.sigma1.x.array)
        cells = self.gatherer.cells()
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
