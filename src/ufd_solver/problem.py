"""Finite-element discretisation of the weighted ultra-fast diffusion equation.

    ∂_t ρ = −∇·(σ ∇(σ/ρ))            on Θ (closed manifold, torus, or no-flux box)

We solve for the *pressure* p = σ/ρ.  Testing ∂_t ρ = −∇·(σ∇p) with v and
integrating by parts (no boundary term: closed manifold, periodic, or the
no-flux wall σ ∂_n p = 0) gives, for a step t_n → t_{n+1} = t_n + Δt with
BDF coefficients (β₀, β₁, β₂) (backward Euler: (1, −1, 0); variable-step
BDF2 with ω = Δt_n/Δt_{n−1}: ((1+2ω)/(1+ω), −(1+ω), ω²/(1+ω))):

    R(p; v) = Δt ∫ σ ∇p·∇v dx − ∫ (β₀ σ/p + β₁ ρⁿ + β₂ ρⁿ⁻¹) v dx_L = 0,

with ρⁿ⁺¹ = σ/p and dx_L the vertex ("lumped") quadrature.  Properties:

* R = ∂E/∂p of E(p) = ½Δt∫σ|∇p|² − β₀∫σ log p dx_L − ∫(β₁ρⁿ + β₂ρⁿ⁻¹) p dx_L,
  strictly convex on p > 0 with a log barrier: a unique solution with p > 0
  exists, and the Jacobian Δt K + β₀ M_L σ/p² is symmetric positive definite
  (CG + algebraic multigrid).  This is why p and not ρ is the unknown.
* Mass: with v = 1, Σ_i R_i = −Σ_i m_i (β₀ρⁿ⁺¹ + β₁ρⁿ + β₂ρⁿ⁻¹)_i, and
  β₀ + β₁ + β₂ = 0, so the lumped mass Σ m_i ρ_i is conserved up to the final
  Newton residual.
* Positivity: ρ_i = σ_i/p_i > 0 at every vertex, for any Δt, from any ρⁿ ≥ 0
  (so ρ₀ may vanish on open sets).
* Energy: F(ρ) = ½∫σ²/ρ − ½ = ½∫σ p dx_L − ½ is convex in ρ and, for
  backward Euler on meshes whose stiffness matrix has non-positive
  off-diagonal entries (no obtuse angles), F(ρⁿ⁺¹) − F(ρⁿ) ≤
  −½Δt Σ_{ij} (−K_ij)(p_i + p_j)(p_i − p_j)² ≤ 0.

With P1 elements the flux term ∫σ∇p·∇v is integrated exactly by a degree-1
rule.  P2 (``mesh.degree = 2``) uses full quadrature instead of lumping:
mass is still conserved, positivity holds at quadrature points only.
"""

from __future__ import annotations

import logging

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import dolfinx.la
import ufl

from .nls import Assembler, MPCAssembler, NewtonSolver, SplitAssembler

log = logging.getLogger(__name__)


class UFDProblem:
    """Function spaces, unknowns and forms of one UFD discretisation.

    Parameters
    ----------
    mesh: the feature-space mesh.
    sigma, rho0: callables mapping dof coordinates (n × gdim) to values;
        both are normalised here to unit (discrete) mass.
    degree: Lagrange degree.
    periodic: (lo, hi) bounds of a periodic box (flat torus), or None.
    solver_options: PETSc options for the SNES/KSP under the ``ufd_`` prefix.
    source: optional callable (mesh, t) -> UFL expression f added to the
        right-hand side, ∂_tρ = −∇·(σ∇(σ/ρ)) + f (manufactured solutions);
        ``t`` is a Constant holding t_{n+1}.
    """

    def __init__(self, mesh, sigma, rho0, degree: int = 1, periodic=None,
                 solver_options: dict | None = None, newton_rtol: float = 1e-11,
                 newton_max_it: int = 30, source=None):
        self.mesh = mesh
        self.comm = mesh.comm
        self.degree = degree
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
        self.mpc = None
        if periodic is not None:
            from .periodic import box_periodic_constraint

            self.mpc = box_periodic_constraint(self.V, *periodic)
        W = self.mpc.function_space if self.mpc is not None else self.V
        self.W = W
        gdim = mesh.geometry.dim
        self.points = W.tabulate_dof_coordinates()[:, :gdim]

        if degree == 1:
            self.dxL = ufl.dx(metadata={"quadrature_rule": "vertex", "quadrature_degree": 1})
            dxK = ufl.dx(metadata={"quadrature_degree": 1})
            self.dxQ = ufl.dx(metadata={"quadrature_degree": 2})
        else:
            self.dxL = ufl.dx(metadata={"quadrature_degree": 4 * degree})
            dxK = ufl.dx(metadata={"quadrature_degree": 3 * degree - 2})
            self.dxQ = ufl.dx(metadata={"quadrature_degree": 4 * degree})

        self.sigma = dolfinx.fem.Function(W, name="sigma")
        self.p = dolfinx.fem.Function(W, name="p")
        self.rho_n = dolfinx.fem.Function(W, name="rho_n")
        self.rho_nm1 = dolfinx.fem.Function(W, name="rho_nm1")
        # history as pressures: ρ = σ/p at quadrature points, so that the mass
        # of the history equals the mass of the previous unknown (needed for
        # P2 without lumping; with lumped P1 both are the same nodal values)
        self.p_n = dolfinx.fem.Function(W, name="p_n")
        self.p_nm1 = dolfinx.fem.Function(W, name="p_nm1")
        self.from_p = [dolfinx.fem.Constant(mesh, 0.0), dolfinx.fem.Constant(mesh, 0.0)]
        self.dt = dolfinx.fem.Constant(mesh, 1.0)
        self.beta = [dolfinx.fem.Constant(mesh, c) for c in (1.0, -1.0, 0.0)]

        self._nodal_fn = dolfinx.fem.Function(W)
        self._nodal_form = dolfinx.fem.form(self._nodal_fn * ufl.TestFunction(self.V) * self.dxL)
        self._sum_vec = dolfinx.la.vector(self.V.dofmap.index_map, 1, dtype=np.float64)
        self.sigma.x.array[:] = self._nodal(sigma, "teacher.density", strict=True)
        rho0_vals = self._nodal(rho0, "initial.density", strict=False)
        sigma_mass = self.integrate_nodal(self.sigma.x.array)
        rho0_mass = self.integrate_nodal(rho0_vals)
        log.info("normalising to unit mass: ∫σ = %.6g, ∫ρ₀ = %.6g on the mesh", sigma_mass, rho0_mass)
        self.sigma.x.array[:] /= sigma_mass
        self.rho_n.x.array[:] = rho0_vals / rho0_mass
        self.rho_nm1.x.array[:] = self.rho_n.x.array
        self.p.x.array[:] = self.sigma.x.array / np.maximum(self.rho_n.x.array, 1e-3 * self.sigma.x.array)

        v = ufl.TestFunction(self.V)
        du = ufl.TrialFunction(self.V)
        p, s = self.p, self.sigma
        b0, b1, b2 = self.beta
        self.p_n.x.array[:] = 1.0
        self.p_nm1.x.array[:] = 1.0
        c1, c2 = self.from_p
        hist1 = (1 - c1) * self.rho_n + c1 * s / self.p_n
        hist2 = (1 - c2) * self.rho_nm1 + c2 * s / self.p_nm1
        R = (self.dt * s * ufl.inner(ufl.grad(p), ufl.grad(v)) * dxK
             - (b0 * s / p + b1 * hist1 + b2 * hist2) * v * self.dxL)
        self.time = dolfinx.fem.Constant(mesh, 0.0)
        if source is not None:
            R = R + self.dt * source(mesh, self.time) * v * ufl.dx(metadata={"quadrature_degree": 4 + 2 * degree})
        J = ufl.derivative(R, p, du)
        self._weights = self._lumped_weights()
        if degree == 1 and source is None and (self.mpc is None or self._periodic_data(rho0_vals)):
            # R = Δt K p + r(p) with K fixed and r nodal (lumped): one MatMult per
            # residual and a diagonal update per Jacobian instead of assemblies
            K_form = dolfinx.fem.form(s * ufl.inner(ufl.grad(du), ufl.grad(v)) * dxK)
            if self.mpc is None:
                K = dolfinx.fem.petsc.assemble_matrix(K_form)
                K.assemble()
            else:
                import dolfinx_mpc

                K = dolfinx_mpc.assemble_matrix(K_form, self.mpc, bcs=[])
            assembler = SplitAssembler(K, lambda: float(self.dt.value), self._nodal_residual, p,
                                       weights=self._weights, mpc=self.mpc)
        elif self.mpc is not None:
            assembler = MPCAssembler(R, J, p, self.mpc)
        else:
            assembler = Assembler(R, J, p)
        self.solver = NewtonSolver(self.comm, assembler, solver_options, rtol=newton_rtol,
                                   max_it=newton_max_it)

        # diagnostics forms
        self._mass_form = dolfinx.fem.form(s / p * v * self.dxL)  # summed by _integral
        self._energy_form = dolfinx.fem.form(0.5 * s * p * self.dxL)
        self._diss_form = dolfinx.fem.form(s * p * ufl.inner(ufl.grad(p), ufl.grad(p)) * self.dxQ)
        self._l1_form = dolfinx.fem.form(abs(s / p - s) * self.dxL)

    # -- helpers --------------------------------------------------------------
    def _nodal(self, fn, key, strict):
        from .errors import ConfigError

        vals = np.asarray(fn(self.points), dtype=float)
        bad = ~np.isfinite(vals)
        bad = self.comm.allreduce(int(bad.any()), op=MPI.SUM)
        if bad:
            raise ConfigError(key, "density evaluates to NaN or inf on the mesh")
        vmin = self.comm.allreduce(float(vals.min()) if vals.size else np.inf, op=MPI.MIN)
        if strict and not vmin > 0:
            raise ConfigError(key, f"σ must be strictly positive on the mesh (minimum {vmin:.3g})")
        if not strict and vmin < 0:
            raise ConfigError(key, f"ρ₀ must be non-negative on the mesh (minimum {vmin:.3g})")
        return vals

    def integrate_nodal(self, values: np.ndarray) -> float:
        """∫ of the function with these dof values (lumped quadrature)."""
        self._nodal_fn.x.array[:] = values
        total = self._integral(self._nodal_form)
        if not total > 0:
            from .errors import ConfigError

            raise ConfigError("initial.density", "ρ₀ has no mass on the mesh (its integral is not positive)")
        return total

    def _integral(self, form) -> float:
        """∫ f of a linear form ∫ f v (v the test function of V): per-dof sums of a few
        cells, then a pairwise sum over dofs.  (A scalar assembly accumulates all cells
        in one running sum, ~N ε: 4e-10 at 1.3·10⁷ tetrahedra, which hid the 1e-15
        mass conservation of large runs.)"""
        b = self._sum_vec
        b.array[:] = 0.0
        dolfinx.fem.assemble_vector(b.array, form)
        b.scatter_reverse(dolfinx.la.InsertMode.add)
        return self.comm.allreduce(float(np.sum(b.array[: self.V.dofmap.index_map.size_local])),
                                   op=MPI.SUM)

    def _lumped_weights(self) -> np.ndarray:
        """Lumped-mass weights m_i of owned dofs (for error norms; slaves get 0)."""
        v = ufl.TestFunction(self.V)
        form = dolfinx.fem.form(v * self.dxL)
        if self.mpc is None:
            vec = dolfinx.fem.petsc.assemble_vector(form)
        else:
            import dolfinx_mpc

            vec = dolfinx_mpc.assemble_vector(form, self.mpc)
        vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        n = self.W.dofmap.index_map.size_local
        w = vec.array_r[:n].copy()
        vec.destroy()
        if self.degree > 1:
            # consistent P2 row sums vanish or change sign at vertices: use
            # equal weights (total volume / number of dofs) for norms instead
            total = self.comm.allreduce(float(w.sum()), op=MPI.SUM)
            ndofs = self.W.dofmap.index_map.size_global
            w = np.full(n, total / ndofs)
            w[self._slave_mask(n)] = 0.0
        return w

    def _periodic_data(self, rho0_vals) -> bool:
        """σ and ρ₀ take their masters' values at the slave dofs (periodic densities).

        Then the lumped terms of the MPC residual are nodal on the masters, with
        the periodic lumped weights, and the split assembly applies; otherwise
        (a non-periodic expression on the torus) the MPC assembly keeps the
        slaves' own values."""
        f = dolfinx.fem.Function(self.W)
        n = self.n_owned
        ok = True
        for vals in (self.sigma.x.array, rho0_vals):
            f.x.array[:] = vals
            f.x.scatter_forward()  # (masters ghosted only for the MPC have no local cell)
            self.mpc.backsubstitution(f)
            ok = ok and bool(np.all(np.abs(f.x.array[:n] - vals[:n])
                                    <= 1e-12 * np.abs(vals[:n]).max(initial=0.0)))
        return bool(self.comm.allreduce(int(ok), op=MPI.MIN))

    def _slave_mask(self, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        if self.mpc is not None:
            slaves = np.asarray(self.mpc.slaves)
            mask[slaves[slaves < n]] = True
        return mask

    def _nodal_residual(self, p_owned: np.ndarray):
        """Lumped part of R and its derivative at owned dofs (P1):
        r_i = −m_i(β₀σ_i/p_i + β₁ρⁿ_i + β₂ρⁿ⁻¹_i), r'_i = β₀ m_i σ_i/p_i²."""
        n = self.n_owned
        m, sig = self._weights, self.sigma.x.array[:n]
        b0, b1, b2 = (float(c.value) for c in self.beta)
        r = -m * (b0 * sig / p_owned + b1 * self.rho_n.x.array[:n] + b2 * self.rho_nm1.x.array[:n])
        return r, b0 * m * sig / p_owned**2

    @property
    def n_owned(self) -> int:
        return self.W.dofmap.index_map.size_local

    # -- state ----------------------------------------------------------------
    def rho(self, p_values=None) -> np.ndarray:
        """Nodal density σ/p (all local dofs)."""
        p_values = self.p.x.array if p_values is None else p_values
        return self.sigma.x.array / p_values

    def set_history(self, rho_n, p_n=None, rho_nm1=None, p_nm1=None) -> None:
        """Previous states: nodal densities, and their pressures where they
        came from a solve (None for the initial density)."""
        rho_nm1 = rho_n if rho_nm1 is None else rho_nm1
        for rho_f, p_f, c, rho_v, p_v in ((self.rho_n, self.p_n, self.from_p[0], rho_n, p_n),
                                          (self.rho_nm1, self.p_nm1, self.from_p[1], rho_nm1, p_nm1)):
            rho_f.x.array[:] = rho_v
            use_p = p_v is not None and self.degree > 1
            c.value = 1.0 if use_p else 0.0
            p_f.x.array[:] = p_v if use_p else 1.0

    def set_coefficients(self, dt: float, beta, t_new: float = 0.0) -> None:
        self.dt.value = dt
        self.time.value = t_new
        for c, b in zip(self.beta, beta):
            c.value = b

    def solve_step(self):
        """One Newton solve for p from the current guess; (ok, newton its, krylov its)."""
        n = self.n_owned
        m_rho = self._weights * self.rho_n.x.array[:n]
        scale, mass = self.comm.allreduce(np.array([float(m_rho @ m_rho), float(m_rho.sum())]), op=MPI.SUM)
        return self.solver.solve(self.p, float(np.sqrt(scale)), float(mass))

    def diagnostics(self) -> dict:
        """mass, energy, dissipation, L¹ distance to σ and min ρ of the current p."""
        comm = self.comm
        a = dolfinx.fem.assemble_scalar
        mass = self._integral(self._mass_form)
        energy = comm.allreduce(a(self._energy_form), op=MPI.SUM) - 0.5
        diss = comm.allreduce(a(self._diss_form), op=MPI.SUM)
        l1 = comm.allreduce(a(self._l1_form), op=MPI.SUM)
        n = self.n_owned
        rho = self.rho()[:n]
        rmin = comm.allreduce(float(rho.min()) if rho.size else np.inf, op=MPI.MIN)
        return {"mass": mass, "energy": energy, "dissipation": diss, "l1_to_sigma": l1, "min_rho": rmin}

    def weighted_rms(self, e: np.ndarray, w: np.ndarray) -> float:
        """sqrt(Σ m_i (e_i/w_i)² / Σ m_i) over owned dofs, global."""
        n = self.n_owned
        m = self._weights
        num = float(np.sum(m * (e[:n] / w[:n]) ** 2))
        den = float(np.sum(m))
        num, den = self.comm.allreduce(np.array([num, den]), op=MPI.SUM)
        return float(np.sqrt(num / den))

    def destroy(self) -> None:
        self.solver.destroy()

