"""Quadrature grids on Θ and densities on them.

Two kinds of grid, both with the uniform measure of their coordinates:

* *cell grids* for inverse CDFs (sampling, quantile placement): the angle on
  S¹, (z = cos polar angle, azimuth) on S² (dz dψ is the area element), the box
  coordinates on the torus;
* *quadrature rules* (points, weights) for integrals against σ: the uniform
  grid on S¹ (trapezoidal, spectrally accurate for periodic integrands),
  Gauss–Legendre in z × uniform azimuth on S², the uniform grid on the torus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..geometry import FeatureSpace

CIRCLE_NODES = 2**16
SPHERE_GL = 48
TORUS_NODES = {1: 4096, 2: 128, 3: 40}


@dataclass
class CellGrid:
    """A tensor grid of cells: ``edges[k]`` are the cell edges along coordinate k."""

    edges: list

    @property
    def centers(self):
        return [0.5 * (e[1:] + e[:-1]) for e in self.edges]

    @property
    def shape(self):
        return tuple(len(e) - 1 for e in self.edges)


def cell_grid(space: FeatureSpace, resolution: int | None = None) -> CellGrid:
    if space.kind == "circle":
        n = resolution or 2**14
        return CellGrid([np.linspace(-np.pi, np.pi, n + 1)])
    if space.kind == "sphere":
        n = resolution or 256
        return CellGrid([np.linspace(-1.0, 1.0, n + 1), np.linspace(-np.pi, np.pi, 2 * n + 1)])
    if space.kind == "torus":
        n = resolution or {1: 2**14, 2: 512, 3: 64}[space.dim]
        h = 0.5 * space.length
        return CellGrid([np.linspace(-h, h, n + 1) for _ in range(space.dim)])
    raise ValueError(space.kind)


def to_ambient(space: FeatureSpace, coords: list) -> np.ndarray:
    """Grid coordinates (angle; z, azimuth; box) → ambient points."""
    if space.kind == "circle":
        return space.angle_points(coords[0])
    if space.kind == "sphere":
        z, psi = coords
        rho = np.sqrt(np.maximum(1.0 - z * z, 0.0))
        return np.stack([rho * np.cos(psi), rho * np.sin(psi), z], axis=-1)
    return np.stack(coords, axis=-1)


def density_values(density, space: FeatureSpace, points: np.ndarray, key: str) -> np.ndarray:
    """Unnormalised density values, checked finite, non-negative and not all zero."""
    values = np.asarray(density.evaluate(space, points), dtype=float)
    if not np.all(np.isfinite(values)):
        raise ConfigError(key, "density is not finite everywhere on the feature space")
    if values.min() < 0:
        raise ConfigError(key, f"density takes negative values (min {values.min():.3g})")
    if values.max() <= 0:
        raise ConfigError(key, "density is zero everywhere")
    return values


def cell_masses(density, space, grid: CellGrid, key: str) -> np.ndarray:
    """Probabilities of the cells (density at the centre × cell measure, normalised)."""
    mesh = np.meshgrid(*grid.centers, indexing="ij")
    pts = to_ambient(space, [m.ravel() for m in mesh])
    vol = np.ones(grid.shape)
    for k, e in enumerate(grid.edges):
        shape = [1] * len(grid.edges)
        shape[k] = -1
        vol = vol * np.diff(e).reshape(shape)
    mass = density_values(density, space, pts, key).reshape(grid.shape) * vol
    return mass / mass.sum()


def rosenblatt(grid: CellGrid, mass: np.ndarray, u: np.ndarray) -> list:
    """Map points u ∈ [0, 1)^d to grid coordinates by the sequential inverse CDF.

    Coordinate k is drawn from the conditional law given the cells already
    chosen for coordinates < k (piecewise-constant density within a cell).
    """
    d = len(grid.edges)
    n = u.shape[0]
    idx: list = []
    coords = []
    rows_n = np.arange(n)
    for k in range(d):
        marg = mass.sum(axis=tuple(range(k + 1, d))) if k + 1 < d else mass
        uk = np.clip(u[:, k], 0.0, np.nextafter(1.0, 0.0))
        if k == 0:  # one CDF for all points
            cdf = np.cumsum(marg)
            cdf /= cdf[-1]
            cell = np.minimum(np.searchsorted(cdf, uk, side="right"), cdf.size - 1)
            hi = cdf[cell]
            lo = np.where(cell > 0, cdf[np.maximum(cell - 1, 0)], 0.0)
        else:  # the conditional CDF of each point's row
            cdf = np.cumsum(marg[tuple(idx)], axis=1)
            total = cdf[:, -1:]
            cdf = cdf / np.where(total > 0, total, 1.0)
            cell = np.minimum((cdf <= uk[:, None]).sum(axis=1), cdf.shape[1] - 1)
            lo = np.where(cell > 0, cdf[rows_n, np.maximum(cell - 1, 0)], 0.0)
            hi = cdf[rows_n, cell]
        frac = np.where(hi > lo, (uk - lo) / np.where(hi > lo, hi - lo, 1.0), 0.5)
        e = grid.edges[k]
        coords.append(e[cell] + np.clip(frac, 0.0, 1.0) * (e[cell + 1] - e[cell]))
        idx.append(cell)
    return coords


def quadrature(space: FeatureSpace, n: int | None = None):
    """A quadrature rule (points Q × D, weights Q) on Θ; the weights sum to the volume."""
    if space.kind == "circle":
        q = n or CIRCLE_NODES
        a = -np.pi + 2.0 * np.pi * np.arange(q) / q
        return space.angle_points(a), np.full(q, 2.0 * np.pi / q)
    if space.kind == "sphere":
        m = n or SPHERE_GL
        z, wz = np.polynomial.legendre.leggauss(m)
        psi = -np.pi + 2.0 * np.pi * (np.arange(2 * m) + 0.5) / (2 * m)
        Z, P = np.meshgrid(z, psi, indexing="ij")
        W = np.outer(wz, np.full(2 * m, 2.0 * np.pi / (2 * m)))
        return to_ambient(space, [Z.ravel(), P.ravel()]), W.ravel()
    if space.kind == "torus":
        m = n or TORUS_NODES[space.dim]
        g = torus_axis(space, m)
        mesh = np.meshgrid(*([g] * space.dim), indexing="ij")
        return np.stack([x.ravel() for x in mesh], axis=-1), np.full(m**space.dim, (space.length / m) ** space.dim)
    raise ValueError(space.kind)


def torus_axis(space: FeatureSpace, m: int) -> np.ndarray:
    return -0.5 * space.length + space.length * np.arange(m) / m


def probabilities(density, space, points, weights, key: str) -> np.ndarray:
    """σ(z_q) w_q normalised to sum 1: a discrete probability approximating σ."""
    p = density_values(density, space, points, key) * weights
    return p / p.sum()
