"""The training objective and its gradients, sampled or population (MATH.md §2).

    L_λ(c, θ) = (1/(2λ)) E_x[(f − y)²] + (1/M) Σ_j R(c_j),  R(c) = (c − c₀)²/2

with c₀ = 0 ("biased") or 1 ("unbiased").  Each evaluation returns a
:class:`State` holding, besides c, the loss and the risk E[(f − y)²],

    grad[j] = E_x[(f − y) ∇_θ φ(θ_j, x)]     (M × D, ambient)
    h[j]    = E_x[(f − y) φ(θ_j, x)]          (M,)

so that dθ_j/dt = −(c_j/λ) P_θ grad[j] and the 2TS outer step is
c ← c − η (h + λ (c − c₀)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import ReLU
from .relu2d import ReLUCircleData
from .relu_circle_pop import FourierPCG, SortedCircle
from .varpro import StaleCholeskyCG, ridge_dual, ridge_primal, solve_spd_shifted
from .vonmises_circle_pop import FourierCircleTerm, solve_low_rank
from .vonmises_sphere_pop import HarmonicSphereTerm


@dataclass
class State:
    c: np.ndarray
    loss: float
    risk: float
    grad: np.ndarray
    h: np.ndarray


class Objective:
    """``solver``: "cholesky" (a fresh factorisation every step) or "pcg"
    (:class:`~.varpro.StaleCholeskyCG`, the same solution to 1e-12 relative
    residual at O(M²) per step between refactorisations)."""

    def __init__(self, lam: float, c0: float, solver: str = "cholesky"):
        self.lam = float(lam)
        self.c0 = float(c0)
        self.set_solver(solver)

    def set_solver(self, solver: str) -> None:
        self.solver = solver
        self._pcg = StaleCholeskyCG(self.lam) if solver == "pcg" else None

    def _primal(self, G, rhs, M):
        if self._pcg is not None:
            return self._pcg(G, rhs, M)
        return ridge_primal(G, rhs, self.lam, M)

    def _state(self, c, risk, grad, h):
        M = c.size
        loss = 0.5 * risk / self.lam + 0.5 * float(((c - self.c0) ** 2).sum()) / M
        return State(c, loss, risk, grad, h)


class Sampled(Objective):
    """E_x is the mean over N data points; y_i = (1/M*) Σ_k φ(θ*_k, x_i)."""

    def __init__(self, feature, x, y, lam, c0, fast=True, solver="cholesky"):
        super().__init__(lam, c0, solver)
        self.feature, self.x, self.y = feature, x, y
        self.N = x.shape[0]
        self.fast = None
        if fast and isinstance(feature, ReLU) and feature.space.kind == "circle":
            self.fast = ReLUCircleData(x, y)

    def varpro(self, theta):
        M = theta.shape[0]
        if self.fast is not None and self.N >= M:
            G, b = self.fast.gram(theta)
            c = self._primal(G, b + self.lam * self.c0, M)
            return self.fixed(theta, c)
        Phi = self.feature.evaluate(theta, self.x)
        c0 = np.full(M, self.c0)
        if self.N < M:
            c = ridge_dual(Phi, self.y, c0, self.lam)
        else:
            c = self._primal(Phi.T @ Phi / self.N, Phi.T @ self.y / self.N + self.lam * c0, M)
        return self._fixed(theta, c, Phi)

    def fixed(self, theta, c):
        if self.fast is not None:
            r, grad, h = self.fast.residual(theta, c)
            return self._state(c, float(r @ r) / self.N, grad, h)
        return self._fixed(theta, c, self.feature.evaluate(theta, self.x))

    def _fixed(self, theta, c, Phi):
        M = theta.shape[0]
        r = Phi @ c / M - self.y
        grad = self.feature.grad_dot(theta, self.x, r / self.N)
        return self._state(c, float(r @ r) / self.N, grad, Phi.T @ r / self.N)


class Population(Objective):
    """E_x exact: G = K(θ, θ), b and E[y²] from σ (:mod:`.population`).

    ReLU features on the circle take the structured path of
    :mod:`.relu_circle_pop`: G c and the feature gradient in O(M) after a sort,
    and with ``solver="pcg"`` the ridge system by CG preconditioned with the
    kernel's truncated Fourier series (:class:`~.relu_circle_pop.FourierPCG`,
    true relative residual ≤ 1e-12); with ``"cholesky"`` the dense G (angles
    subtracted, no arccos) is factored afresh every step.

    Von Mises features on the circle (``term`` a
    :class:`~.vonmises_circle_pop.FourierCircleTerm`) use the exact finite
    Fourier factorisation G = F Fᵀ: O(M n) per step, whatever ``solver``.
    Von Mises features on the sphere (``term`` a
    :class:`~.vonmises_sphere_pop.HarmonicSphereTerm`) likewise use the exact
    spherical-harmonic factorisation G = F Fᵀ (r = (L + 1)² columns): O(M r²)
    per step, whatever ``solver``.
    """

    def __init__(self, feature, term, lam, c0, solver="cholesky"):
        self.feature, self.term = feature, term
        self.circle = isinstance(feature, ReLU) and feature.space.kind == "circle"
        self.fourier = isinstance(term, FourierCircleTerm)
        self.harmonic = isinstance(term, HarmonicSphereTerm)
        super().__init__(lam, c0, solver)

    def set_solver(self, solver: str) -> None:
        if getattr(self, "circle", False):
            self.solver = solver
            self._pcg = FourierPCG(self.lam) if solver == "pcg" else None
            return
        super().set_solver(solver)

    def varpro(self, theta):
        M = theta.shape[0]
        if self.harmonic:
            return self._state(*self.term.state(theta, self.lam, self.c0))
        if self.fourier:
            a, F, dF, b, db = self._fourier_parts(theta)
            c = solve_low_rank(F, b + self.lam * self.c0, self.lam)
            return self._fixed_fourier(a, F, dF, c, b, db)
        if self.circle:
            circ = SortedCircle(theta)
            b, db = self.term(theta)
            rhs = b + self.lam * self.c0
            if self._pcg is not None:
                c = self._pcg(circ, rhs)
            else:
                A = circ.dense_gram()
                A /= M
                cs = solve_spd_shifted(A, self.lam, rhs[circ.order])
                c = np.empty_like(cs)
                c[circ.order] = cs
            return self._fixed_circle(circ, c, b, db)
        G, kgrad = self.feature.kernel_with_grad(theta, theta)
        b, db = self.term(theta)
        c = self._primal(G, b + self.lam * self.c0, M)
        return self._fixed(theta, c, G, kgrad, b, db)

    def fixed(self, theta, c):
        if self.harmonic:
            return self._state(*self.term.state(theta, self.lam, self.c0, c))
        if self.fourier:
            a, F, dF, b, db = self._fourier_parts(theta)
            return self._fixed_fourier(a, F, dF, c, b, db)
        b, db = self.term(theta)
        if self.circle:
            return self._fixed_circle(SortedCircle(theta), c, b, db)
        return self._fixed(theta, c, *self.feature.kernel_with_grad(theta, theta), b, db)

    def _fixed_circle(self, circ, c, b, db):
        M = c.size
        o = circ.order
        Gs, gs = circ.matvec_and_grad(c[o] / M)
        Gc = np.empty(M)
        Gc[o] = Gs
        grad = np.empty((M, 2))
        grad[o] = gs
        grad -= db
        risk = float(c @ Gc) / M - 2.0 * float(c @ b) / M + self.term.yy
        return self._state(c, risk, grad, Gc - b)

    def _fourier_parts(self, theta):
        a = np.arctan2(theta[:, 1], theta[:, 0])
        F, dF = self.term.features(a)
        return a, F, dF, F @ self.term.beta, dF @ self.term.beta

    def _fixed_fourier(self, a, F, dF, c, b, db):
        M = c.size
        u = F.T @ c / M
        Gc = F @ u
        risk = float(c @ Gc) / M - 2.0 * float(c @ b) / M + self.term.yy
        grad = (dF @ u - db)[:, None] * np.stack([-np.sin(a), np.cos(a)], axis=1)
        return self._state(c, risk, grad, Gc - b)

    def _fixed(self, theta, c, G, kgrad, b, db):
        M = theta.shape[0]
        Gc = G @ c / M
        risk = float(c @ Gc) / M - 2.0 * float(c @ b) / M + self.term.yy
        grad = kgrad(np.broadcast_to(c / M, (M, M))) - db
        return self._state(c, risk, grad, Gc - b)
