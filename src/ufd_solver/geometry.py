"""Feature spaces Θ as pure-numpy geometry (no dolfinx needed).

The PDE solver and the particle trainer share these definitions, so one
configuration describes the same space for both.

=========  ==============================  ===================  =========
kind       Θ                                ambient coordinates   volume
=========  ==============================  ===================  =========
circle     unit circle S¹ ⊂ R²              (x, y); θ = atan2     2π
sphere     unit sphere S² ⊂ R³              (x, y, z)             4π
torus      flat torus [−L/2, L/2)^d         d coordinates         L^d
box        box [−L/2, L/2]^d, no-flux wall  d coordinates         L^d
file       a mesh read from disk            the mesh's gdim       (mesh)
=========  ==============================  ===================  =========
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("circle", "sphere", "torus", "box", "file")
COORDINATE_NAMES = ("x", "y", "z")


@dataclass(frozen=True)
class FeatureSpace:
    """Geometry of a feature space.

    Parameters
    ----------
    kind: one of :data:`KINDS`.
    dim: topological dimension (1 circle, 2 sphere, d for torus/box).
    gdim: dimension of the ambient coordinates.
    length: side L of the torus/box (ignored on circle and sphere).
    """

    kind: str
    dim: int
    gdim: int
    length: float = 1.0

    @property
    def volume(self) -> float:
        if self.kind == "circle":
            return 2.0 * np.pi
        if self.kind == "sphere":
            return 4.0 * np.pi
        if self.kind in ("torus", "box"):
            return float(self.length) ** self.dim
        raise ValueError("the volume of a 'file' space is the mesh volume")

    @property
    def periodic(self) -> bool:
        return self.kind == "torus"

    @property
    def variables(self) -> tuple[str, ...]:
        """Names usable in density expressions."""
        names = COORDINATE_NAMES[: self.gdim]
        return ("theta", *names) if self.kind == "circle" else names

    def coordinates(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """Variables of density expressions at ``points`` (n × gdim)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        env = {n: points[:, i] for i, n in enumerate(COORDINATE_NAMES[: self.gdim])}
        if self.kind == "circle":
            env["theta"] = np.arctan2(points[:, 1], points[:, 0])
        return env

    def project(self, points: np.ndarray) -> np.ndarray:
        """Retract points onto Θ: normalise on S¹/S², wrap on the torus, clip in the box."""
        points = np.asarray(points, dtype=float)
        if self.kind in ("circle", "sphere"):
            return points / np.linalg.norm(points, axis=-1, keepdims=True)
        half = 0.5 * self.length
        if self.kind == "torus":
            return np.mod(points + half, self.length) - half
        if self.kind == "box":
            return np.clip(points, -half, half)
        return points

    def difference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a − b in ambient coordinates, the shortest periodic image on the torus."""
        d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        if self.kind == "torus":
            d = d - self.length * np.round(d / self.length)
        return d

    def angle_points(self, theta: np.ndarray) -> np.ndarray:
        """Points of the unit circle at angles ``theta``."""
        theta = np.asarray(theta, dtype=float)
        return np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def make_space(kind: str, dim: int = 2, length: float = 4.0, gdim: int | None = None) -> FeatureSpace:
    """Build the :class:`FeatureSpace` of a mesh kind."""
    if kind == "circle":
        return FeatureSpace("circle", 1, 2)
    if kind == "sphere":
        return FeatureSpace("sphere", 2, 3)
    if kind in ("torus", "box"):
        return FeatureSpace(kind, int(dim), int(dim), float(length))
    if kind == "file":
        g = int(gdim if gdim is not None else dim)
        return FeatureSpace("file", int(dim), g, float(length))
    raise ValueError(f"unknown feature space kind {kind!r}; allowed: {KINDS}")
