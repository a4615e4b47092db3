"""The one module that owns the nonlinear solver (PETSc SNES) and its options.

:class:`NewtonSolver` wraps a PETSc SNES (``newtonls``, no line search, a
positivity-preserving pre-check) around residual and Jacobian callbacks of
:class:`Assembler` objects: plain dolfinx assembly, or dolfinx_mpc assembly
for periodic spaces.  All PETSc options live under one prefix (``ufd_`` by
default, ``-ufd_ksp_type`` etc.), set from a dict and never leaked into the
global options database of other solvers.

Stopping test (round-off aware).  The residual of a step is a vector of
masses, so its scale is ``mass_scale`` = ‖M ρⁿ‖₂.  Newton stops when

* ‖R‖ ≤ rtol · mass_scale and the mass defect |Σ_i R_i| ≤ mass_tol · Σ M ρⁿ
  (converged), or
* the update is at round-off, ‖δ‖ ≤ 1e3 ε ‖p‖, or
* ‖R‖ stagnates (‖R_k‖ > ½ ‖R_{k−1}‖) while already below 1e-7 · mass_scale,
  i.e. quadratic convergence has hit the floor of floating-point assembly.

The discrete mass defect of a step equals the sum of the final residual, so
this test decides mass conservation.
"""

from __future__ import annotations

import logging

import numpy as np
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import dolfinx.la

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "basic",
    "ksp_type": "cg",
    "ksp_rtol": 1e-9,
    "ksp_atol": 1e-30,
    "ksp_max_it": 500,
    "pc_type": "hypre",
    "pc_hypre_type": "boomeramg",
}


class Assembler:
    """Residual/Jacobian assembly into PETSc objects for forms on ``V``.

    ``u`` is the unknown Function; its values are taken from the SNES vector
    before each assembly.
    """

    def __init__(self, residual, jacobian, u: dolfinx.fem.Function):
        self.L = dolfinx.fem.form(residual)
        self.a = dolfinx.fem.form(jacobian)
        self.u = u

    def create_vector(self) -> PETSc.Vec:
        return dolfinx.fem.petsc.create_vector(self.L)

    def create_matrix(self) -> PETSc.Mat:
        return dolfinx.fem.petsc.create_matrix(self.a)

    def set_state(self, x: PETSc.Vec) -> None:
        x.copy(self.u.x.petsc_vec)
        self.u.x.scatter_forward()

    def residual(self, b: PETSc.Vec) -> None:
        with b.localForm() as bl:
            bl.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, self.L)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)

    def jacobian(self, A: PETSc.Mat) -> None:
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, self.a)
        A.assemble()

    def finalize(self, u: dolfinx.fem.Function) -> None:
        u.x.scatter_forward()


class MPCAssembler(Assembler):
    """Assembly with a dolfinx_mpc MultiPointConstraint (periodic spaces).

    Slave rows of the residual are zero and of the Jacobian the identity, so
    Newton never moves slave dofs; the unknown is back-substituted from its
    masters before every assembly.
    """

    def __init__(self, residual, jacobian, u, mpc):
        super().__init__(residual, jacobian, u)
        self.mpc = mpc

    def create_vector(self) -> PETSc.Vec:
        V = self.mpc.function_space
        return dolfinx.la.create_petsc_vector(V.dofmap.index_map, V.dofmap.index_map_bs)

    def create_matrix(self) -> PETSc.Mat:
        import dolfinx_mpc

        return dolfinx_mpc.cpp.mpc.create_matrix(self.a._cpp_object, self.mpc._cpp_object)

    def set_state(self, x: PETSc.Vec) -> None:
        super().set_state(x)
        self.mpc.backsubstitution(self.u)

    def residual(self, b: PETSc.Vec) -> None:
        import dolfinx_mpc

        with b.localForm() as bl:
            bl.set(0.0)
        dolfinx_mpc.assemble_vector(self.L, self.mpc, b=b)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)

    def jacobian(self, A: PETSc.Mat) -> None:
        import dolfinx_mpc

        A.zeroEntries()
        dolfinx_mpc.assemble_matrix(self.a, self.mpc, bcs=[], A=A)
        A.assemble()

    def finalize(self, u) -> None:
        u.x.scatter_forward()
        self.mpc.backsubstitution(u)


class NewtonSolver:
    """PETSc SNES around an :class:`Assembler`, with its own options prefix."""

    _count = 0

    def __init__(self, comm, assembler: Assembler, options: dict | None = None,
                 prefix: str | None = None, rtol: float = 1e-11, max_it: int = 30,
                 mass_tol: float = 1e-14):
        self.comm = comm
        self.mass_tol = mass_tol
        self.assembler = assembler
        self.rtol = rtol
        self.max_it = max_it
        if prefix is None:
            prefix = "ufd_" if NewtonSolver._count == 0 else f"ufd{NewtonSolver._count}_"
        NewtonSolver._count += 1
        self.prefix = prefix
        self.b = assembler.create_vector()
        self.A = assembler.create_matrix()
        self.x = self.b.duplicate()
        self.snes = PETSc.SNES().create(comm)
        self.snes.setOptionsPrefix(prefix)
        opts = PETSc.Options()
        opts.prefixPush(prefix)
        merged = {**DEFAULT_OPTIONS, **(options or {})}
        for k, v in merged.items():
            opts[k] = v
        opts.prefixPop()
        self.snes.setFunction(self._F, self.b)
        self.snes.setJacobian(self._J, self.A)
        self.snes.setTolerances(rtol=0.0, atol=0.0, stol=0.0, max_it=max_it)
        self.snes.setConvergenceTest(self._converged)
        self.snes.setLineSearchPreCheck(self._precheck)
        self.snes.setFromOptions()
        self.snes.getKSP().setFromOptions()
        self._options = merged
        self.mass_scale = 1.0
        self._prev_fnorm = np.inf
        self.krylov_its = 0

    # -- callbacks ----------------------------------------------------------
    def _F(self, snes, x, b):
        self.assembler.set_state(x)
        self.assembler.residual(b)

    def _J(self, snes, x, A, P):
        self.assembler.set_state(x)
        self.assembler.jacobian(A)

    def _precheck(self, x, y):
        """Scale the Newton step y (x_new = x − y) so that p stays > 0."""
        xa, ya = x.array_r, y.array_r
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ya > 0, xa / ya, np.inf)
        alpha = self.comm.allreduce(float(ratio.min()) if ratio.size else np.inf, op=_min())
        if alpha <= 1.0:
            y.scale(0.9 * alpha)
            return True
        return False

    def _converged(self, snes, it, norms):
        xnorm, ynorm, fnorm = norms
        reason = PETSc.SNES.ConvergedReason
        if not np.isfinite(fnorm):
            return reason.DIVERGED_FNORM_NAN
        if fnorm <= self.rtol * self.mass_scale:
            defect = abs(self.b.sum())
            if defect <= self.mass_tol * self.mass or fnorm <= 1e-3 * self.rtol * self.mass_scale:
                self._prev_fnorm = fnorm
                return reason.CONVERGED_FNORM_ABS
        if it > 0 and ynorm <= 1e3 * np.finfo(float).eps * xnorm:
            return reason.CONVERGED_SNORM_RELATIVE
        if it > 1 and fnorm > 0.5 * self._prev_fnorm and fnorm <= 1e-7 * self.mass_scale:
            return reason.CONVERGED_FNORM_RELATIVE
        self._prev_fnorm = fnorm
        if it >= self.max_it:
            return reason.DIVERGED_MAX_IT
        return reason.ITERATING

    # -- public ---------------------------------------------------------------
    def solve(self, u: dolfinx.fem.Function, mass_scale: float, mass: float = 1.0) -> tuple[bool, int, int]:
        """Solve R(u) = 0 from the initial guess in ``u``.

        ``mass_scale`` = ‖M ρⁿ‖₂ scales the residual norm test, ``mass`` = Σ M ρⁿ
        the mass-defect test |Σ R| ≤ mass_tol · mass.

        Returns (converged, newton iterations, krylov iterations).  On failure
        ``u`` holds the last iterate and must not be used.
        """
        self.mass_scale = mass_scale
        self.mass = mass
        self._prev_fnorm = np.inf
        u.x.petsc_vec.copy(self.x)
        self.x.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
        try:
            self.snes.solve(None, self.x)
        except PETSc.Error as exc:  # e.g. KSP breakdown on a NaN
            log.debug("SNES raised %s", exc)
            return False, self.snes.getIterationNumber(), self.snes.getLinearSolveIterations()
        reason = self.snes.getConvergedReason()
        its = self.snes.getIterationNumber()
        kits = self.snes.getLinearSolveIterations()
        self.x.copy(u.x.petsc_vec)
        self.assembler.finalize(u)
        ok = reason > 0 and bool(np.isfinite(u.x.array).all())
        ok = bool(self.comm.allreduce(int(ok), op=_min()))
        return ok, its, kits

    @property
    def options(self) -> dict:
        return dict(self._options)

    def destroy(self) -> None:
        for obj in (self.snes, self.A, self.b, self.x):
            obj.destroy()


def _min():
    from mpi4py import MPI

    return MPI.MIN
