"""Particles drawn from densities: teacher features θ*_k ~ σ and student initialisation.

* circle: inverse CDF of a fine cell quadrature of the density (2¹⁴ cells);
* sphere, torus: rejection sampling from the uniform law with a bound found on
  a fine grid (×1.25); if a proposal ever exceeds the bound, the bound is
  raised and sampling restarts, so the accepted points follow the density
  exactly;
* ``quantile`` placement: a low-discrepancy point set of [0, 1)^d (midpoints
  (j + ½)/M on S¹, the Fibonacci lattice on S² and T², an R₂ sequence on T³)
  pushed through the sequential inverse CDF (Rosenblatt map) of ρ₀.  On the
  circle these are the quantiles of ρ₀; for a uniform ρ₀ on S² it is the
  Fibonacci sphere.
"""

from __future__ import annotations

import numpy as np

from ..geometry import FeatureSpace
from .grids import cell_grid, cell_masses, density_values, rosenblatt, to_ambient

GOLDEN = (1.0 + np.sqrt(5.0)) / 2.0
PLASTIC = 1.32471795724474602596  # root of x³ = x + 1 (R₂ sequence)


def uniform_points(space: FeatureSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    if space.kind in ("circle", "sphere"):
        z = rng.standard_normal((n, space.gdim))
        return z / np.linalg.norm(z, axis=1, keepdims=True)
    return (rng.random((n, space.dim)) - 0.5) * space.length


def sample(density, space: FeatureSpace, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """n i.i.d. points from ``density`` (ambient coordinates)."""
    if density.kind == "uniform":
        return uniform_points(space, n, rng)
    if space.kind == "circle":
        grid = cell_grid(space)
        mass = cell_masses(density, space, grid, key)
        return to_ambient(space, rosenblatt(grid, mass, rng.random((n, 1))))
    return _rejection(density, space, n, rng, key)


def _rejection(density, space, n, rng, key, batch=65536):
    grid = cell_grid(space, 128 if space.kind != "torus" or space.dim < 3 else 48)
    mesh = np.meshgrid(*grid.centers, indexing="ij")
    probe = to_ambient(space, [m.ravel() for m in mesh])
    bound = 1.25 * density_values(density, space, probe, key).max()
    while True:
        out, have = [], 0
        restart = False
        while have < n:
            x = uniform_points(space, batch, rng)
            f = density.evaluate(space, x)
            if f.max() > bound:
                bound = 1.5 * f.max()
                restart = True
                break
            keep = x[rng.random(batch) * bound < f]
            out.append(keep)
            have += keep.shape[0]
        if not restart:
            return np.concatenate(out)[:n]


def low_discrepancy(space: FeatureSpace, n: int) -> np.ndarray:
    """n points of [0, 1)^k, k the number of grid coordinates of ``space``."""
    j = np.arange(n)
    first = (j + 0.5) / n
    k = 1 if space.kind == "circle" else (2 if space.kind == "sphere" else space.dim)
    if k == 1:
        return first[:, None]
    if k == 2:
        return np.stack([first, np.mod(j / GOLDEN, 1.0)], axis=1)
    alpha = np.array([1.0 / PLASTIC, 1.0 / PLASTIC**2])
    return np.column_stack([first, np.mod(0.5 + np.outer(j, alpha), 1.0)])


def initial_particles(density, space: FeatureSpace, n: int, mode: str, rng, key="initial.density"):
    """Student features at t = 0: ``random`` (i.i.d.) or ``quantile`` (deterministic)."""
    if mode == "random":
        return sample(density, space, n, rng, key)
    grid = cell_grid(space)
    mass = cell_masses(density, space, grid, key)
    return space.project(to_ambient(space, rosenblatt(grid, mass, low_discrepancy(space, n))))
