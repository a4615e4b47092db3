"""Predicted long-time rate: the weighted Poincaré constant of σ.

Linearising ρ = σ(1 + ε) in ∂_tρ = −∇·(σ∇(σ/ρ)) gives σ∂_tε = ∇·(σ∇ε)
(MATH.md §3), so ε decays like e^{−κt} (and F like e^{−2κt}) with κ the first
non-zero eigenvalue of

    ∫ σ ∇u·∇v dx = κ ∫ σ u v dx      for all v.

Discretisation: the same Lagrange space as the PDE, the **consistent**
weighted mass matrix B.  With consistent B the discrete problem is the
Rayleigh–Ritz approximation of the continuous one on a conforming subspace,
so κ_h ≥ κ (on a fixed domain) and κ_h − κ = O(h^{2p}): a clean, one-sided,
second-order convergence for P1.  (The lumped mass used by the PDE's time
discretisation is also O(h²) but has no sign, which makes refinement studies
harder to read; the two differ by O(h²), below the accuracy the long-time
rate is ever compared with.)

Solver: SLEPc generalized Hermitian eigenproblem A u = κ B u, shift-and-invert
at a small negative target τ (A − τB is SPD even though A is singular on a
closed manifold, a periodic torus or a no-flux box), direct factorisation
(MUMPS in parallel), under the options prefix ``ufd_poincare_``.  The zero
eigenvalue of the constants is skipped.

Periodic torus: pass ``mpc`` (``problem.mpc``); A and B are assembled with
``dolfinx_mpc.assemble_matrix``.  Slave rows then carry only a diagonal
entry (1 in A, 10⁻⁸ in B) so their spurious eigenvalues sit at 10⁸, far from
the target.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc  # noqa: F401 - initialised before slepc4py

import dolfinx
import dolfinx.fem.petsc
import ufl

_SLAVE_B = 1e-8


def _matrices(V, sigma, mpc, degree):
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    dx = ufl.dx(metadata={"quadrature_degree": degree})
    a = dolfinx.fem.form(sigma * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx)
    b = dolfinx.fem.form(sigma * u * v * dx)
    if mpc is None:
        A = dolfinx.fem.petsc.assemble_matrix(a)
        B = dolfinx.fem.petsc.assemble_matrix(b)
    else:
        import dolfinx_mpc

        A = dolfinx_mpc.assemble_matrix(a, mpc, diagval=1.0)
        B = dolfinx_mpc.assemble_matrix(b, mpc, diagval=_SLAVE_B)
    A.assemble()
    B.assemble()
    return A, B


def poincare_eigenvalues(mesh, sigma=None, mpc=None, nev: int = 4, degree: int = 1,
                         target: float = -0.1) -> np.ndarray:
    """The ``nev`` eigenvalues of ∫σ∇u·∇v = κ∫σuv nearest ``target`` (sorted, zero mode included).

    ``sigma``: a Function (its space is used; on the torus a Function on
    ``mpc.function_space``), a UFL expression, or None (σ = 1, P``degree``).
    """
    from slepc4py import SLEPc

    if isinstance(sigma, dolfinx.fem.Function):
        V = sigma.function_space
        p = V.ufl_element().embedded_superdegree
    else:
        V = mpc.function_space if mpc is not None else dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
        p = degree
        if sigma is None:
            sigma = dolfinx.fem.Constant(mesh, 1.0)
    A, B = _matrices(V, sigma, mpc, 3 * p)
    eps = SLEPc.EPS().create(mesh.comm)
    eps.setOptionsPrefix("ufd_poincare_")
    eps.setOperators(A, B)
    eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
    eps.setDimensions(nev=nev)
    eps.setTarget(target)
    eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_MAGNITUDE)
    eps.setTolerances(tol=1e-12, max_it=500)
    st = eps.getST()
    st.setType(SLEPc.ST.Type.SINVERT)
    st.setShift(target)
    ksp = st.getKSP()
    ksp.setType("preonly")
    pc = ksp.getPC()
    pc.setType("cholesky" if mesh.comm.size == 1 else "lu")
    if mesh.comm.size > 1:
        pc.setFactorSolverType("mumps")
    eps.setFromOptions()
    eps.solve()
    nconv = eps.getConverged()
    if nconv < 2:
        eps.destroy()
        A.destroy()
        B.destroy()
        raise RuntimeError(f"SLEPc found {nconv} eigenpair(s) of the Poincaré problem; need 2")
    vals = np.sort(np.array([eps.getEigenvalue(i).real for i in range(nconv)]))
    eps.destroy()
    A.destroy()
    B.destroy()
    return vals


def poincare_constant(mesh, sigma_function=None, mpc=None, degree: int = 1, target: float = -0.1) -> float:
    """First non-zero eigenvalue κ of ∫σ∇u·∇v = κ∫σuv (the predicted rate ε ~ e^{−κt})."""
    return float(nonzero_eigenvalues(mesh, sigma_function, mpc, 2, degree, target)[0])


def nonzero_eigenvalues(mesh, sigma_function=None, mpc=None, count: int = 4, degree: int = 1,
                        target: float = -0.1) -> np.ndarray:
    """The ``count`` smallest non-zero eigenvalues of ∫σ∇u·∇v = κ∫σuv, sorted.

    The smallest eigenvalue is the constant mode (κ = 0 on a connected closed
    manifold, periodic torus or no-flux box) and is skipped; a check that it
    is indeed ≈ 0 guards against a disconnected mesh or a wrong target.
    """
    vals = poincare_eigenvalues(mesh, sigma_function, mpc, nev=count + 1, degree=degree, target=target)
    if abs(vals[0]) > 1e-6 * max(abs(vals[1]), 1.0):
        raise RuntimeError(f"the smallest eigenvalue {vals[0]:.3g} is not the zero mode of the constants")
    if vals[1] < 1e-8 * max(abs(vals[-1]), 1.0):
        raise RuntimeError("more than one zero eigenvalue: is the mesh connected?")
    return vals[1:count + 1]
