"""Projection of a particle cloud onto a feature-space mesh.

Three estimators of the density of M particles θ_1..θ_M ∈ Θ, each returning a
:class:`dolfinx.fem.Function` of unit mass on the mesh (docs/validation.md):

``"kde"``
    kernel density estimate with a kernel native to the space
    (:func:`ufd_solver.densities.kde`: von Mises with κ = 1/h² on S¹/S²,
    wrapped Gaussian of std h on the torus, Gaussian reflected at the walls
    in a box), evaluated at the dof coordinates and normalised to unit mass on
    the mesh.  The bandwidth is ``bandwidth`` or the Scott-type rule
    h = s·M^(−1/(d+4)) of :func:`ufd_solver.densities.default_bandwidth`.
    On the torus the wrapped kernel is periodic, so the nodal values on
    periodic images agree by construction.
``"l2"``
    L²-projection of the empirical measure: u ∈ V with
    ∫ u v dx = (1/M) Σ_j v(θ_j) for all v ∈ V (consistent mass matrix, CG).
    Taking v = 1 gives ∫u = 1 exactly.  The projection may be negative where
    there are few particles; ``smoothing_steps`` implicit heat steps
    (M + s K) uⁿ⁺¹ = M uⁿ (s = ``smoothing_time``/steps, default total time
    h_max², mass preserved because K·1 = 0) smooth it.  On the torus pass the
    problem's ``mpc``: the right-hand side is condensed onto the masters
    (slave entries added to their master) and the solution back-substituted,
    i.e. the projection onto the periodic space.
``"histogram"``
    cell histogram: a DG0 function equal to (number of particles in K)/(M |K|).

Particles
    an (M × gdim) array in ambient coordinates (angles are accepted on the
    circle as a 1-D array) that every rank passes **identically**
    (replicated, as the trainer produces them), or, with ``root=r``, the
    array on rank r only (other ranks pass anything, e.g. None): it is then
    broadcast once.  Particles are first snapped to Θ
    (:meth:`FeatureSpace.project`: normalised on S¹/S², wrapped into the
    box [−L/2, L/2)^d on the torus, clipped in the box).

Point location (:func:`locate_particles`) is vectorised: one bounding-box
tree of the owned cells (padded by h² on manifolds, where the unit circle or
sphere lies outside the flat cells), :func:`dolfinx.geometry.compute_collisions_points`
for candidate cells, then one batched affine pull-back of all
(particle, candidate) pairs.  On flat meshes that is X = J⁻¹(x − x₀); on
manifold meshes (tdim = gdim − 1) the particle is snapped *radially* onto the
cell, i.e. [J | −x][X; s] = −x₀ is solved for the reference coordinates X and
the scaling s (the radial projection of the unit circle/sphere onto the
polygon/polyhedron — exact for meshes star-shaped around the origin, which all
built-in manifold meshes are).  This replaces
``compute_colliding_cells``, which gives no reference coordinates and would
not see points lying off a manifold cell.  A particle found on several ranks
(on an interface) is kept by the lowest rank: one ``allreduce(MIN)`` of an
M-vector.  The finite-element contributions are then summed with one reverse
ghost scatter.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import ufl

from .densities import default_bandwidth, kde
from .geometry import FeatureSpace

log = logging.getLogger(__name__)

METHODS = ("kde", "l2", "histogram")


# ---------------------------------------------------------------------------
# inputs
def _space_and_mpc(target, mpc):
    """(V, mpc): V the space the result lives on (the MPC space when periodic)."""
    if hasattr(target, "W") and hasattr(target, "mpc"):  # a UFDProblem
        mpc = target.mpc if mpc is None else mpc
        return (mpc.function_space if mpc is not None else target.V), mpc
    if isinstance(target, dolfinx.mesh.Mesh):
        V = dolfinx.fem.functionspace(target, ("Lagrange", 1))
        return V, mpc
    V = target
    if mpc is not None:
        V = mpc.function_space
    return V, mpc


def prepare_particles(particles, space: FeatureSpace, comm: MPI.Comm, root: int | None = None) -> np.ndarray:
    """Particles as an (M × gdim) float array snapped onto Θ, the same on every rank."""
    if root is not None:
        particles = comm.bcast(None if comm.rank != root else np.asarray(particles, dtype=float), root=root)
    pts = np.asarray(particles, dtype=float)
    if space.kind == "circle" and pts.ndim == 1:
        pts = space.angle_points(pts)
    pts = np.atleast_2d(pts)
    if pts.ndim != 2 or pts.shape[1] != space.gdim:
        raise ValueError(f"particles must have shape (M, {space.gdim}), got {pts.shape}")
    if pts.shape[0] == 0:
        raise ValueError("no particles")
    if not np.all(np.isfinite(pts)):
        raise ValueError("particles contain NaN or inf")
    return space.project(pts)


# ---------------------------------------------------------------------------
# point location
def _cell_geometry(mesh, cells):
    """x₀ and the Jacobians (n × gdim × tdim) of affine simplex cells."""
    gdim, tdim = mesh.geometry.dim, mesh.topology.dim
    gdm = mesh.geometry.dofmap
    if gdm.shape[1] != tdim + 1:
        raise NotImplementedError("particle location needs affine (P1-geometry) simplex cells")
    x = mesh.geometry.x[:, :gdim]
    nodes = gdm[cells]
    x0 = x[nodes[:, 0]]
    J = np.transpose(x[nodes[:, 1:]] - x0[:, None, :], (0, 2, 1))
    return x0, J


def cell_volumes(mesh, cells) -> np.ndarray:
    """Measures |K| of affine simplex cells (sqrt det JᵀJ / tdim!)."""
    _, J = _cell_geometry(mesh, cells)
    tdim = mesh.topology.dim
    g = np.einsum("nij,nik->njk", J, J)
    return np.sqrt(np.abs(np.linalg.det(g))) / math.factorial(tdim)


def locate_particles(mesh, points: np.ndarray, tol: float = 1e-10):
    """Owned cells and reference coordinates of (already snapped) particles.

    Returns ``(index, cells, X, n_lost)``: the indices into ``points`` of the
    particles this rank owns, their local cells, their reference coordinates
    (n × tdim) and the global number of particles no rank found.  Every
    particle is owned by exactly one rank.  Collective.
    """
    comm = mesh.comm
    gdim, tdim = mesh.geometry.dim, mesh.topology.dim
    n_owned = mesh.topology.index_map(tdim).size_local
    manifold = tdim < gdim
    owned = np.arange(n_owned, dtype=np.int32)
    if manifold:
        h = mesh.h(tdim, owned) if n_owned else np.zeros(0)
        padding = float(h.max()) ** 2 + 1e-12 if h.size else 0.0
    else:
        extent = np.ptp(mesh.geometry.x[:, :gdim], axis=0).max() if mesh.geometry.x.size else 1.0
        padding = 1e-10 * float(extent)
    m = points.shape[0]
    p3 = np.zeros((m, 3))
    p3[:, :gdim] = points
    found_cell = np.full(m, -1, dtype=np.int32)
    X_all = np.zeros((m, tdim))
    if n_owned:
        tree = dolfinx.geometry.bb_tree(mesh, tdim, owned, padding=padding)
        coll = dolfinx.geometry.compute_collisions_points(tree, p3)
        counts = np.diff(coll.offsets)
        pidx = np.repeat(np.arange(m), counts)
        cidx = coll.array.astype(np.int32)
        if pidx.size:
            x0, J = _cell_geometry(mesh, cidx)
            p = points[pidx]
            if manifold:
                A = np.concatenate([J, -p[:, :, None]], axis=2)
                sol = np.linalg.solve(A, -x0[:, :, None])[:, :, 0]
                X, s = sol[:, :tdim], sol[:, tdim]
                ok = s > 0
            else:
                if tdim == gdim:
                    X = np.linalg.solve(J, (p - x0)[:, :, None])[:, :, 0]
                ok = np.ones(pidx.size, dtype=bool)
            ok &= np.all(X >= -tol, axis=1) & (X.sum(axis=1) <= 1 + tol)
            first = np.unique(pidx[ok], return_index=True)[1]
            sel = np.flatnonzero(ok)[first]
            found_cell[pidx[sel]] = cidx[sel]
            Xs = np.clip(X[sel], 0.0, None)
            ssum = Xs.sum(axis=1, keepdims=True)
            X_all[pidx[sel]] = np.where(ssum > 1.0, Xs / np.maximum(ssum, 1e-300), Xs)
    claim = np.where(found_cell >= 0, comm.rank, comm.size).astype(np.int32)
    owner = np.empty_like(claim)
    comm.Allreduce(claim, owner, op=MPI.MIN)
    n_lost = int(np.sum(owner == comm.size))
    index = np.flatnonzero(owner == comm.rank)
    return index, found_cell[index], X_all[index], n_lost


# ---------------------------------------------------------------------------
# linear algebra helpers
def _mass_matrix(V, mpc, weight=None, stiffness=0.0):
    """Assembled (M + s K) on V (MPC-condensed when ``mpc``)."""
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    deg = V.ufl_element().embedded_superdegree
    a = u * v * ufl.dx(metadata={"quadrature_degree": 2 * deg})
    if stiffness:
        s = dolfinx.fem.Constant(V.mesh, float(stiffness))
        a = a + s * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx(metadata={"quadrature_degree": 2 * deg})
    form = dolfinx.fem.form(a)
    if mpc is None:
        A = dolfinx.fem.petsc.assemble_matrix(form)
    else:
        import dolfinx_mpc

        A = dolfinx_mpc.assemble_matrix(form, mpc, diagval=1.0)
    A.assemble()
    return A


def _solver(A, prefix):
    ksp = PETSc.KSP().create(A.getComm())
    ksp.setOperators(A)
    ksp.setOptionsPrefix(prefix)
    ksp.setType("cg")
    ksp.getPC().setType("jacobi")
    ksp.setTolerances(rtol=1e-13, atol=1e-300, max_it=5000)
    ksp.setFromOptions()
    return ksp


def _condense(vec, mpc, V):
    """Move owned slave entries of an assembled vector onto their masters."""
    imap = V.dofmap.index_map
    n = imap.size_local * V.dofmap.index_map_bs
    slaves = np.asarray(mpc.slaves)
    masters = mpc.masters
    coeffs, offsets = mpc.coefficients()
    with vec.localForm() as loc:
        arr = loc.array
        arr[n:] = 0.0
        for s in slaves[slaves < n]:
            ms = masters.links(s)
            arr[ms] += coeffs[offsets[s]:offsets[s + 1]] * arr[s]
            arr[s] = 0.0
    vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)


def _solve_into(A, b, u, mpc, prefix):
    ksp = _solver(A, prefix)
    x = dolfinx.la.create_petsc_vector_wrap(u.x)
    ksp.solve(b, x)
    reason = ksp.getConvergedReason()
    ksp.destroy()
    x.destroy()
    if reason < 0:
        raise RuntimeError(f"projection solve did not converge (KSP reason {reason})")
    u.x.scatter_forward()
    if mpc is not None:
        mpc.backsubstitution(u)


def _integral(u) -> float:
    deg = u.function_space.ufl_element().embedded_superdegree
    form = dolfinx.fem.form(u * ufl.dx(metadata={"quadrature_degree": max(deg, 1)}))
    return u.function_space.mesh.comm.allreduce(dolfinx.fem.assemble_scalar(form), op=MPI.SUM)


def heat_smoothing(u, steps: int, total_time: float | None = None, mpc=None) -> None:
    """``steps`` implicit heat steps (M + s K) uⁿ⁺¹ = M uⁿ in place (mass preserved)."""
    if steps <= 0:
        return
    V = u.function_space
    mesh = V.mesh
    if total_time is None:
        tdim = mesh.topology.dim
        n = mesh.topology.index_map(tdim).size_local
        h = mesh.h(tdim, np.arange(n, dtype=np.int32))
        total_time = mesh.comm.allreduce(float(h.max()) if h.size else 0.0, op=MPI.MAX) ** 2
    s = float(total_time) / steps
    A = _mass_matrix(V, mpc, stiffness=s)
    v = ufl.TestFunction(V)
    deg = V.ufl_element().embedded_superdegree
    old = dolfinx.fem.Function(V)
    L = dolfinx.fem.form(old * v * ufl.dx(metadata={"quadrature_degree": 2 * deg}))
    for _ in range(steps):
        old.x.array[:] = u.x.array
        if mpc is None:
            b = dolfinx.fem.petsc.assemble_vector(L)
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        else:
            import dolfinx_mpc

            b = dolfinx_mpc.assemble_vector(L, mpc)
            b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        _solve_into(A, b, u, mpc, "ufd_projection_heat_")
        b.destroy()
    A.destroy()


# ---------------------------------------------------------------------------
# the estimators
def project_particles(target, particles, space: FeatureSpace, method: str = "kde", bandwidth=None,
                      smoothing_steps: int = 0, smoothing_time: float | None = None, mpc=None,
                      root: int | None = None) -> dolfinx.fem.Function:
    """Unit-mass density Function estimated from a particle cloud.

    Parameters
    ----------
    target: a Lagrange FunctionSpace V, a :class:`~ufd_solver.problem.UFDProblem`
        (its space W and ``mpc`` are used, so the result compares directly
        with ``problem.rho()``), or a mesh (P1 is used).  Ignored by
        ``"histogram"`` except for its mesh (the result is DG0).
    particles: (M × gdim) ambient coordinates (1-D angles on the circle),
        replicated on every rank, or on rank ``root`` only.
    space: the :class:`~ufd_solver.geometry.FeatureSpace` of the mesh.
    method: ``"kde"``, ``"l2"`` or ``"histogram"`` (module docstring).
    bandwidth: KDE bandwidth h (default: Scott-type rule).
    smoothing_steps, smoothing_time: implicit heat steps after ``"l2"`` or
        ``"kde"`` (default total time h_max²).
    mpc: the periodic constraint of a torus (``problem.mpc``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; allowed: {METHODS}")
    V, mpc = _space_and_mpc(target, mpc)
    mesh = V.mesh
    comm = mesh.comm
    pts = prepare_particles(particles, space, comm, root)
    m = pts.shape[0]

    if method == "kde":
        h = float(bandwidth) if bandwidth else default_bandwidth(space, pts)
        u = dolfinx.fem.Function(V, name="rho_kde")
        xdof = V.tabulate_dof_coordinates()[:, : mesh.geometry.dim]
        u.x.array[:] = kde(space, pts, space.project(xdof), h)
    else:
        index, cells, X, n_lost = locate_particles(mesh, pts)
        if n_lost:
            log.warning("%d of %d particles lie on no cell of the mesh; ignored", n_lost, m)
        m_found = m - n_lost
        if m_found == 0:
            raise ValueError("no particle lies on the mesh")
        if method == "histogram":
            if smoothing_steps:
                raise ValueError("smoothing needs a continuous space; use method 'l2' or 'kde'")
            Q = dolfinx.fem.functionspace(mesh, ("DG", 0))
            u = dolfinx.fem.Function(Q, name="rho_histogram")
            n_owned = mesh.topology.index_map(mesh.topology.dim).size_local
            counts = np.bincount(cells, minlength=n_owned).astype(float)
            vol = cell_volumes(mesh, np.arange(n_owned, dtype=np.int32))
            u.x.array[:n_owned] = counts / (m_found * vol)
            u.x.scatter_forward()
            return u
        # L² projection of the empirical measure
        if V.dofmap.index_map_bs != 1 or V.element.needs_dof_transformations:
            raise NotImplementedError("L² projection supports scalar Lagrange spaces of degree ≤ 2")
        u = dolfinx.fem.Function(V, name="rho_l2")
        b = dolfinx.la.create_petsc_vector(V.dofmap.index_map, 1)
        with b.localForm() as loc:
            loc.set(0.0)
            if index.size:
                phi = V.ufl_element().tabulate(0, X)[0]  # (n, ndofs per cell)
                dofs = V.dofmap.list[cells]
                np.add.at(loc.array, dofs.ravel(), phi.ravel() / m_found)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        if mpc is not None:
            _condense(b, mpc, V)
        A = _mass_matrix(V, mpc)
        _solve_into(A, b, u, mpc, "ufd_projection_l2_")
        A.destroy()
        b.destroy()
    if smoothing_steps:
        heat_smoothing(u, int(smoothing_steps), smoothing_time, mpc)
    mass = _integral(u)
    if not mass > 0:
        raise ValueError("the projected density has no mass on the mesh")
    u.x.array[:] /= mass
    return u
