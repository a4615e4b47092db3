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
* the update is at round-off, ‖δ‖ ≤ 1e3 ε ‖p‖, while ‖R‖ ≤ 1e-7 · mass_scale
  and the step was not shortened by the positivity pre-check, or
* ‖R‖ stagnates (‖R_k‖ > ½ ‖R_{k−1}‖) while already below 1e-7 · mass_scale,
  i.e. quadratic convergence has hit the floor of floating-point assembly.

The discrete mass defect of a step equals the sum of the final residual, so
this test decides mass conservation.

Preconditioner reuse (options ``pc_reuse`` = never | step | auto, default
auto, and ``pc_reuse_ratio``, default 1.5; handled here, not by PETSc).  The
KSP preconditions with a separate matrix P, a copy of the Jacobian refreshed
only on demand (PCSetUp rebuilds BoomerAMG only when P changes).  "never":
P = J, rebuilt at every Newton iteration (the old behaviour); "step": once per
solve; "auto": across Newton iterations and time steps until a linear solve
needs more than ``pc_reuse_ratio`` times the Krylov iterations per decade of
residual reduction of the first solve after the last rebuild, or a solve
fails (a failed solve that reused P is retried once with a fresh one).
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
    "ksp_rtol": 1e-6,  # per Newton step; the Newton test decides the final accuracy
    "ksp_atol": 1e-30,
    "ksp_max_it": 500,
    "pc_type": "hypre",
    "pc_hypre_type": "boomeramg",
    # handled by NewtonSolver itself, not PETSc (see the module doc)
    "pc_reuse": "auto",
    "pc_reuse_ratio": 1.5,
}

#: keys of the options dict that NewtonSolver handles (never put into PETSc's database)
SOLVER_KEYS = ("pc_reuse", "pc_reuse_ratio")
PC_REUSE = ("never", "step", "auto")


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


class SplitAssembler(Assembler):
    """R(u) = c·K u + r(u), J = c·K + diag(r'(u)) with a fixed assembled matrix K.

    For residuals whose only non-nodal part is linear with a fixed operator
    times a scalar, e.g. the P1 pressure form with lumped mass terms:
    K = ∫σ∇u·∇v, c = Δt, r_i = −m_i(β₀σ_i/p_i + β₁ρⁿ_i + β₂ρⁿ⁻¹_i),
    r'_i = β₀ m_i σ_i/p_i².  One MatMult (residual) or one MatCopy + scale +
    diagonal update (Jacobian) replaces a finite-element assembly: ~30× cheaper
    at 1.6·10⁵ dofs.  ``scale()`` returns c; ``nodal(u_owned)`` returns the
    arrays (r, r') over owned dofs.

    Periodic spaces (``mpc``, a dolfinx_mpc MultiPointConstraint; K assembled
    with it, slave rows = identity): the slave rows of R are zero, r and r'
    vanish there (zero lumped weights), and the slaves are back-substituted
    from their masters, as in :class:`MPCAssembler`; the nodal terms must then
    use the masters' values (periodic σ and ρ₀).
    """

    def __init__(self, K: PETSc.Mat, scale, nodal, u: dolfinx.fem.Function, weights=None, mpc=None):
        self.K = K
        self.scale = scale
        self.nodal = nodal
        self.u = u
        self.mpc = mpc
        self.n = u.function_space.dofmap.index_map.size_local
        self.slaves = np.zeros(0, dtype=np.int32)
        if mpc is not None:
            slaves = np.asarray(mpc.slaves)
            self.slaves = slaves[slaves < self.n]
        self._d = K.createVecRight()
        self.comm = u.function_space.mesh.comm
        # conservative correction: K's rows sum to zero in exact arithmetic, so
        # Σ_i (K u)_i is pure round-off (~ε‖K‖‖u‖, large when Δt is); removing
        # it (distributed like the lumped masses) keeps Σ R equal to the mass
        # defect of the nodal part, which the Newton test drives to ~1e-14
        self.w = None if weights is None else weights / self.comm.allreduce(float(weights.sum()))

    def create_vector(self) -> PETSc.Vec:
        return dolfinx.la.create_petsc_vector(self.u.function_space.dofmap.index_map, 1)

    def create_matrix(self) -> PETSc.Mat:
        return self.K.duplicate(copy=True)

    def set_state(self, x: PETSc.Vec) -> None:
        super().set_state(x)
        if self.mpc is not None:
            self.mpc.backsubstitution(self.u)

    def finalize(self, u) -> None:
        u.x.scatter_forward()
        if self.mpc is not None:
            self.mpc.backsubstitution(u)

    def residual(self, b: PETSc.Vec) -> None:
        self.K.mult(self.u.x.petsc_vec, b)
        r, _ = self.nodal(self.u.x.array[:self.n])
        with b.localForm() as bl:
            ku = bl.array[:self.n]
            ku[self.slaves] = 0.0
            if self.w is not None:
                ku -= self.comm.allreduce(float(ku.sum())) * self.w
            bl.array[:self.n] = self.scale() * ku + r

    def jacobian(self, A: PETSc.Mat) -> None:
        self.K.copy(A, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        c = self.scale()
        A.scale(c)
        _, dr = self.nodal(self.u.x.array[:self.n])
        self._d.array[:] = dr
        self._d.array[self.slaves] += 1.0 - c  # slave rows: the identity, as MPC assembly
        A.setDiagonal(self._d, addv=PETSc.InsertMode.ADD_VALUES)


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
            if k not in SOLVER_KEYS:
                opts[k] = v
        opts.prefixPop()
        self.pc_reuse = str(merged["pc_reuse"]).lower()
        if self.pc_reuse not in PC_REUSE:
            from .errors import ConfigError

            raise ConfigError("solver.petsc_options.pc_reuse",
                              f"got {merged['pc_reuse']!r}; allowed: {', '.join(PC_REUSE)}")
        self.pc_reuse_ratio = float(merged["pc_reuse_ratio"])
        # preconditioner matrix: the Jacobian itself ("never": rebuilt at every
        # Newton iteration) or a separate copy refreshed only when we decide
        self.P = self.A if self.pc_reuse == "never" else assembler.create_matrix()
        self._build_pc = True       # copy A into P at the next Jacobian
        self._pc_built_now = False  # P was refreshed during the current solve
        self._pc_fresh = False      # next linear solve sets the reference rate
        self._rate_ref = None       # Krylov its per decade right after a rebuild
        self.pc_builds = 0
        self.snes.setFunction(self._F, self.b)
        self.snes.setJacobian(self._J, self.A, self.P)
        self.snes.setTolerances(rtol=0.0, atol=0.0, stol=0.0, max_it=max_it)
        self.snes.setConvergenceTest(self._converged)
        self.snes.setLineSearchPreCheck(self._precheck)
        self.snes.setFromOptions()
        self.ksp = self.snes.getKSP()
        self.ksp.setFromOptions()
        self.ksp.setConvergenceHistory(reset=True)
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
        if self.P is self.A:
            self.pc_builds += 1
        elif self._build_pc:
            # PCSetUp rebuilds BoomerAMG only when P's object state changes
            if self.pc_builds == 0:
                self.assembler.jacobian(P)  # P starts unassembled: MatCopy needs its pattern
            else:
                A.copy(P, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
            self._build_pc = False
            self._pc_built_now = True
            self._pc_fresh = True
            self.pc_builds += 1

    def _precheck(self, x, y):
        """Scale the Newton step y (x_new = x − y) so that p stays > 0."""
        xa, ya = x.array_r, y.array_r
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ya > 0, xa / ya, np.inf)
        alpha = self.comm.allreduce(float(ratio.min()) if ratio.size else np.inf, op=_min())
        self._clipped = alpha <= 1.0
        if alpha <= 1.0:
            y.scale(0.9 * alpha)
            return True
        return False

    def _record_linear_solve(self) -> None:
        """Preconditioner policy ("auto"), after every linear solve.

        The rate is Krylov iterations per decade of (preconditioned) residual
        reduction, which does not depend on the linear tolerance.  The first
        linear solve after a rebuild sets the reference; a later one whose rate
        exceeds ``pc_reuse_ratio`` times the reference has the preconditioner
        rebuilt at the next Jacobian (in this solve or the next one).
        Identical on all ranks (the KSP history is).
        """
        its = self.ksp.getIterationNumber()
        hist = self.ksp.getConvergenceHistory()
        if not (its > 0 and len(hist) >= 2 and hist[0] > 0 and hist[-1] > 0):
            return
        dec = np.log10(hist[0] / hist[-1])
        if dec < 0.3:
            return
        rate = its / dec
        if self._pc_fresh:
            self._rate_ref, self._pc_fresh = rate, False
        elif (self.pc_reuse == "auto" and self._rate_ref is not None
              and rate > self.pc_reuse_ratio * self._rate_ref):
            self._build_pc = True

    def _converged(self, snes, it, norms):
        xnorm, ynorm, fnorm = norms
        reason = PETSc.SNES.ConvergedReason
        if it > 0 and self.P is not self.A:
            self._record_linear_solve()
        if not np.isfinite(fnorm):
            return reason.DIVERGED_FNORM_NAN
        if fnorm <= self.rtol * self.mass_scale:
            defect = abs(self.b.sum())
            if defect <= self.mass_tol * self.mass or fnorm <= 1e-3 * self.rtol * self.mass_scale:
                self._prev_fnorm = fnorm
                return reason.CONVERGED_FNORM_ABS
        if (it > 0 and ynorm <= 1e3 * np.finfo(float).eps * xnorm and not self._clipped
                and fnorm <= 1e-7 * self.mass_scale):
            # (a step shortened by the positivity pre-check, or one far from the
            # solution, is not "at round-off": that reported false convergence)
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
        if self.pc_reuse == "step":
            self._build_pc = True
        reusing = self.P is not self.A and not self._build_pc
        guess = u.x.array.copy() if reusing else None
        ok, its, kits = self._solve_once(u)
        if not ok and reusing:
            # a reused preconditioner may be too far from this Jacobian (e.g. a
            # step much smaller than the one it was built for): retry once
            # from the same initial guess with a fresh one
            log.debug("Newton failed with a reused preconditioner; retrying with a fresh one")
            self._build_pc = True
            u.x.array[:] = guess
            ok, its2, kits2 = self._solve_once(u)
            its, kits = its + its2, kits + kits2
        if not ok:
            self._build_pc = True
        return ok, its, kits

    def _solve_once(self, u) -> tuple[bool, int, int]:
        self._prev_fnorm = np.inf
        self._clipped = False
        self._pc_built_now = False
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

    def reset_preconditioner(self) -> None:
        """Rebuild the preconditioner at the first Newton iteration of the next solve."""
        self._build_pc = True

    @property
    def options(self) -> dict:
        return dict(self._options)

    def destroy(self) -> None:
        objs = [self.snes, self.A, self.b, self.x]
        if self.P is not self.A:
            objs.append(self.P)
        for obj in objs:
            obj.destroy()


def _min():
    from mpi4py import MPI

    return MPI.MIN
