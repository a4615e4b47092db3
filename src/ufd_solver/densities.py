"""Density specifications shared by ``[teacher] density`` and ``[initial] density``.

A density is given in the configuration as one of

* ``"uniform"``;
* an expression in the coordinates, e.g. ``"1 + 0.5*cos(theta)"`` (``theta``
  on the circle; ``x, y, z`` everywhere), see :mod:`ufd_solver.expressions`;
* a preset table: ``{preset = "paper-circle", gamma = 100}`` (MATH.md §4:
  σ(θ) ∝ 1/(1 + γ sin²(θ/2)) + 0.5/(1 + γ sin²((θ − 0.4π)/2))), or
  ``{preset = "paper-torus", std = 0.25}`` (two wrapped Gaussian modes at
  (−1, 0) and (1, 1) on the 2D torus, MATH.md Appendix B case);
* a mixture: ``{mixture = "vonmises", centers = [...], kappa = 10, weights = [...]}``
  on the circle (centres as angles or points) or the sphere (points), or
  ``{mixture = "gaussian", centers = [[...], ...], std = 0.3}`` (wrapped on the
  torus, plain Gaussian in a box);
* a table file: ``{file = "sigma.csv"}`` with columns of coordinates and a
  last column of values (``theta, value`` is accepted on the circle);
  values are interpolated;
* for ``[initial]`` only, particle samples: ``{samples = "x.npz", key = "theta",
  frame = 0, bandwidth = 0.1}``, smoothed by a kernel native to the space
  (von Mises on S¹/S², wrapped Gaussian on the torus, reflected Gaussian in a
  box).

Evaluation returns *unnormalised* values at ambient points; the solver
normalises on the mesh and the trainer on the continuous space.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from .errors import ConfigError
from .expressions import compile_expression
from .geometry import FeatureSpace

PRESETS = ("uniform", "paper-circle", "paper-torus")
MIXTURES = ("vonmises", "gaussian")
SPEC_KINDS = ("uniform", "expression", "preset", "mixture", "file", "samples")


@dataclass(frozen=True)
class Density:
    """A validated density specification.

    ``kind`` is one of :data:`SPEC_KINDS`; ``params`` holds the validated
    parameters.  Use :func:`parse_density` to build one from a TOML value and
    :meth:`evaluate` to compute values at points.
    """

    kind: str
    params: dict = field(default_factory=dict, hash=False, compare=False)
    raw: Any = None
    key: str = "density"

    # -- serialisation ----------------------------------------------------
    def to_toml(self):
        return self.raw

    # -- evaluation -------------------------------------------------------
    def evaluate(self, space: FeatureSpace, points: np.ndarray) -> np.ndarray:
        """Unnormalised density values at ``points`` (n × gdim)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        n = points.shape[0]
        p = self.params
        if self.kind == "uniform":
            return np.ones(n)
        if self.kind == "expression":
            fn = compile_expression(p["text"], space.variables, self.key)
            values = fn(space.coordinates(points))
            return np.broadcast_to(values, (n,)).astype(float).copy()
        if self.kind == "preset":
            return _evaluate_preset(p, space, points, self.key)
        if self.kind == "mixture":
            return _evaluate_mixture(p, space, points, self.key)
        if self.kind == "file":
            return _evaluate_table(p, space, points, self.key)
        if self.kind == "samples":
            samples = load_samples(p, space, self.key)
            return kde(space, samples, points, p.get("bandwidth"))
        raise AssertionError(self.kind)  # pragma: no cover

    def check_space(self, space: FeatureSpace) -> None:
        """Raise :class:`ConfigError` if this density cannot live on ``space``."""
        p = self.params
        if self.kind == "expression":
            compile_expression(p["text"], space.variables, self.key)
        elif self.kind == "preset":
            need = {"paper-circle": ("circle",), "paper-torus": ("torus",)}.get(p["preset"])
            if need and space.kind not in need:
                raise ConfigError(
                    self.key, f"preset {p['preset']!r} is defined on kind {need[0]!r}, "
                    f"not on {space.kind!r}"
                )
            if p["preset"] == "paper-torus" and space.dim != 2:
                raise ConfigError(self.key, "preset 'paper-torus' needs a 2D torus (mesh.dim = 2)")
        elif self.kind == "mixture":
            fam = p["mixture"]
            if fam == "vonmises" and space.kind not in ("circle", "sphere"):
                raise ConfigError(self.key, "mixture 'vonmises' is defined on 'circle' and 'sphere'")
            if fam == "gaussian" and space.kind not in ("torus", "box", "file"):
                raise ConfigError(self.key, "mixture 'gaussian' is defined on 'torus', 'box' and 'file'")
            _mixture_centers(p, space, self.key)


def parse_density(value: Any, key: str, allow_samples: bool = False) -> Density:
    """Validate a TOML value as a density specification."""
    allowed = (
        '"uniform", an expression string, {preset = ...}, {mixture = ...}, {file = ...}'
        + (", {samples = ...}" if allow_samples else "")
    )
    if isinstance(value, str):
        if value.strip() == "uniform":
            return Density("uniform", {}, value, key)
        compile_expression(value, ("theta", "x", "y", "z"), key)
        return Density("expression", {"text": value}, value, key)
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected {allowed}, got {type(value).__name__}")
    heads = [k for k in ("preset", "mixture", "file", "samples") if k in value]
    if len(heads) != 1:
        raise ConfigError(key, f"expected exactly one of preset/mixture/file/samples; allowed: {allowed}")
    head = heads[0]
    if head == "preset":
        return Density("preset", _parse_preset(value, key), value, key)
    if head == "mixture":
        return Density("mixture", _parse_mixture(value, key), value, key)
    if head == "file":
        _only(value, {"file"}, key)
        path = _existing_file(value["file"], f"{key}.file")
        return Density("file", {"file": path, "table": _load_table(path, f"{key}.file")}, value, key)
    if not allow_samples:
        raise ConfigError(key, "particle samples are accepted for [initial] density only")
    _only(value, {"samples", "key", "frame", "bandwidth"}, key)
    params = {"samples": _existing_file(value["samples"], f"{key}.samples")}
    if "key" in value:
        if not isinstance(value["key"], str):
            raise ConfigError(f"{key}.key", "expected an array name (string)")
        params["key"] = value["key"]
    params["frame"] = _number(value.get("frame", 0), f"{key}.frame", integer=True)
    if "bandwidth" in value:
        params["bandwidth"] = _number(value["bandwidth"], f"{key}.bandwidth", positive=True)
    return Density("samples", params, value, key)


# ---------------------------------------------------------------------------
# validation helpers
def _only(value: dict, allowed: set, key: str) -> None:
    extra = sorted(set(value) - allowed)
    if extra:
        raise ConfigError(f"{key}.{extra[0]}", f"unknown key; allowed: {sorted(allowed)}")


def _number(v, key, positive=False, integer=False, nonneg=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(key, f"expected a number, got {v!r}")
    if integer and not float(v).is_integer():
        raise ConfigError(key, f"expected an integer, got {v!r}")
    if not np.isfinite(v):
        raise ConfigError(key, f"expected a finite number, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(key, f"must be > 0, got {v!r}")
    if nonneg and v < 0:
        raise ConfigError(key, f"must be >= 0, got {v!r}")
    return int(v) if integer else float(v)


def _existing_file(path, key) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(key, "expected a file path (string)")
    if not os.path.isfile(path):
        raise ConfigError(key, f"file {path!r} does not exist")
    return os.path.abspath(path)


def _parse_preset(value, key):
    name = value["preset"]
    if name not in PRESETS:
        raise ConfigError(f"{key}.preset", f"unknown preset {name!r}; allowed: {list(PRESETS)}")
    if name == "paper-circle":
        _only(value, {"preset", "gamma"}, key)
        return {"preset": name, "gamma": _number(value.get("gamma", 100.0), f"{key}.gamma", positive=True)}
    if name == "paper-torus":
        _only(value, {"preset", "std"}, key)
        return {"preset": name, "std": _number(value.get("std", 0.25), f"{key}.std", positive=True)}
    _only(value, {"preset"}, key)
    return {"preset": name}


def _parse_mixture(value, key):
    fam = value["mixture"]
    if fam not in MIXTURES:
        raise ConfigError(f"{key}.mixture", f"unknown mixture {fam!r}; allowed: {list(MIXTURES)}")
    width = "kappa" if fam == "vonmises" else "std"
    _only(value, {"mixture", "centers", "weights", width}, key)
    if "centers" not in value:
        raise ConfigError(f"{key}.centers", "required: list of mixture centres")
    centers = value["centers"]
    if not isinstance(centers, list) or not centers:
        raise ConfigError(f"{key}.centers", "expected a non-empty list")
    try:
        arr = np.asarray(centers, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}.centers", "expected numbers or lists of numbers of equal length") from None
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{key}.centers", "centres must be finite")
    m = arr.shape[0]
    default_width = 10.0 if fam == "vonmises" else 0.3
    w = value.get(width, default_width)
    widths = list(w) if isinstance(w, list) else [w] * m
    if len(widths) != m:
        raise ConfigError(f"{key}.{width}", f"expected a number or a list of {m} numbers")
    widths = np.array([_number(x, f"{key}.{width}", positive=True) for x in widths])
    weights = value.get("weights", [1.0] * m)
    if not isinstance(weights, list) or len(weights) != m:
        raise ConfigError(f"{key}.weights", f"expected a list of {m} numbers")
    weights = np.array([_number(x, f"{key}.weights", nonneg=True) for x in weights])
    if weights.sum() <= 0:
        raise ConfigError(f"{key}.weights", "weights must have a positive sum")
    return {"mixture": fam, "centers": arr, "widths": widths, "weights": weights / weights.sum()}


def _mixture_centers(p, space: FeatureSpace, key):
    c = p["centers"]
    if space.kind == "circle" and c.ndim == 1:
        return space.angle_points(c)
    if c.ndim != 2 or c.shape[1] != space.gdim:
        raise ConfigError(
            f"{key}.centers", f"expected {space.gdim} coordinates per centre"
            + (" (or one angle per centre)" if space.kind == "circle" else "")
        )
    if space.kind in ("circle", "sphere"):
        norms = np.linalg.norm(c, axis=1)
        if np.any(norms == 0):
            raise ConfigError(f"{key}.centers", "centres on the circle/sphere must be non-zero")
        return c / norms[:, None]
    return c


def vonmises(space: FeatureSpace, points, center, kappa) -> np.ndarray:
    """Normalised von Mises(–Fisher) density on S¹ or S² (w.r.t. arc length/area)."""
    cosang = np.clip(points @ center, -1.0, 1.0)
    if space.kind == "circle":
        return np.exp(kappa * (cosang - 1.0)) / (2.0 * np.pi * special.i0e(kappa))
    return kappa / (2.0 * np.pi * -np.expm1(-2.0 * kappa)) * np.exp(kappa * (cosang - 1.0))


def gaussian(space: FeatureSpace, points, center, std) -> np.ndarray:
    """Normalised Gaussian, wrapped on the torus (sum over periodic images)."""
    d = points - center
    out = np.ones(points.shape[0])
    for i in range(points.shape[1]):
        if space.kind == "torus":
            L = space.length
            k = int(np.ceil(8.0 * std / L)) + 1
            di = d[:, i] - L * np.round(d[:, i] / L)
            s = sum(np.exp(-0.5 * ((di + j * L) / std) ** 2) for j in range(-k, k + 1))
        else:
            s = np.exp(-0.5 * (d[:, i] / std) ** 2)
        out *= s / (np.sqrt(2.0 * np.pi) * std)
    return out


def _evaluate_mixture(p, space, points, key):
    centers = _mixture_centers(p, space, key)
    kernel = vonmises if p["mixture"] == "vonmises" else gaussian
    return sum(w * kernel(space, points, c, s) for c, s, w in zip(centers, p["widths"], p["weights"]))


def paper_circle(theta: np.ndarray, gamma: float) -> np.ndarray:
    """The teacher density of MATH.md §4 (unnormalised)."""
    return 1.0 / (1.0 + gamma * np.sin(theta / 2) ** 2) + 0.5 / (
        1.0 + gamma * np.sin((theta - 0.4 * np.pi) / 2) ** 2
    )


def _evaluate_preset(p, space, points, key):
    if p["preset"] == "uniform":
        return np.ones(points.shape[0])
    if p["preset"] == "paper-circle":
        return paper_circle(np.arctan2(points[:, 1], points[:, 0]), p["gamma"])
    centers = np.array([[-1.0, 0.0], [1.0, 1.0]])
    return 0.5 * gaussian(space, points, centers[0], p["std"]) + 0.5 * gaussian(
        space, points, centers[1], p["std"]
    )


# ---------------------------------------------------------------------------
# table files
def _load_table(path, key) -> np.ndarray:
    try:
        data = np.genfromtxt(path, delimiter=",", comments="#", dtype=float)
    except (ValueError, OSError) as exc:
        raise ConfigError(key, f"cannot read {path!r} as CSV: {exc}") from None
    data = np.atleast_2d(data)
    if data.size and np.all(np.isnan(data[0])):  # header line
        data = data[1:]
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise ConfigError(key, f"{path!r}: expected at least 2 rows of 'coordinates..., value'")
    if not np.all(np.isfinite(data)):
        row = int(np.argwhere(~np.isfinite(data))[0, 0])
        raise ConfigError(key, f"{path!r}: NaN, inf or non-numeric entry in data row {row + 1}")
    return data


def _evaluate_table(p, space, points, key):
    data = p["table"]
    coords, values = data[:, :-1], data[:, -1]
    if space.kind == "circle" and coords.shape[1] == 1:
        order = np.argsort(coords[:, 0])
        th, v = coords[order, 0], values[order]
        theta = np.arctan2(points[:, 1], points[:, 0])
        return np.interp(theta, th, v, period=2 * np.pi)
    if coords.shape[1] != space.gdim:
        raise ConfigError(key, f"{p['file']!r}: expected {space.gdim} coordinate columns and a value column")
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    if space.kind in ("circle", "sphere") or coords.shape[1] == 1:
        from scipy.spatial import cKDTree

        tree = cKDTree(coords)
        k = min(4, len(values))
        dist, idx = tree.query(points, k=k)
        dist, idx = np.atleast_2d(dist), np.atleast_2d(idx)
        w = 1.0 / np.maximum(dist, 1e-12) ** 2
        return (w * values[idx]).sum(axis=1) / w.sum(axis=1)
    lin = LinearNDInterpolator(coords, values)(points)
    near = NearestNDInterpolator(coords, values)(points)
    return np.where(np.isnan(lin), near, lin)


# ---------------------------------------------------------------------------
# samples and kernel density estimates
def load_samples(p, space: FeatureSpace, key) -> np.ndarray:
    path = p["samples"]
    skey = f"{key}.samples"
    try:
        with np.load(path) as z:
            name = p.get("key") or ("theta" if "theta" in z.files else z.files[0])
            if name not in z.files:
                raise ConfigError(f"{key}.key", f"{path!r} has no array {name!r}; it has {z.files}")
            arr = np.asarray(z[name], dtype=float)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise ConfigError(skey, f"cannot read {path!r} as .npz: {exc}") from None
    if arr.ndim == 3:
        frame = p.get("frame", 0)
        if not -arr.shape[0] <= frame < arr.shape[0]:
            raise ConfigError(f"{key}.frame", f"frame {frame} outside 0..{arr.shape[0] - 1}")
        arr = arr[frame]
    if space.kind == "circle" and arr.ndim == 1:
        arr = space.angle_points(arr)
    if arr.ndim != 2 or arr.shape[1] != space.gdim or arr.shape[0] == 0:
        raise ConfigError(skey, f"expected an array of shape (M, {space.gdim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(skey, f"{path!r}: samples contain NaN or inf")
    return space.project(arr)


def default_bandwidth(space: FeatureSpace, samples: np.ndarray) -> float:
    """Scott-type rule h = s · M^(−1/(d+4)), s the RMS spread per ambient coordinate."""
    m = samples.shape[0]
    if space.kind in ("circle", "sphere"):
        mean = samples.mean(axis=0)
        s = np.sqrt(max(1.0 - float(mean @ mean), 1e-12) / space.dim)
    else:
        s = float(np.sqrt(np.mean(np.var(samples, axis=0))))
    return max(s, 1e-6) * m ** (-1.0 / (space.dim + 4))


def kde(space: FeatureSpace, samples: np.ndarray, points: np.ndarray, bandwidth=None) -> np.ndarray:
    """Kernel density estimate with a kernel native to the space.

    Von Mises with κ = 1/h² on S¹/S², wrapped Gaussian of std h on the
    torus, Gaussian reflected at the walls in a box.  Unit mass on Θ.
    """
    h = float(bandwidth) if bandwidth else default_bandwidth(space, samples)
    points = np.atleast_2d(points)
    out = np.zeros(points.shape[0])
    chunk = max(1, 2_000_000 // max(1, samples.shape[0]))
    for start in range(0, points.shape[0], chunk):
        pts = points[start:start + chunk]
        if space.kind in ("circle", "sphere"):
            kappa = 1.0 / h**2
            cosang = np.clip(pts @ samples.T, -1.0, 1.0)
            if space.kind == "circle":
                k = np.exp(kappa * (cosang - 1.0)) / (2 * np.pi * special.i0e(kappa))
            else:
                k = kappa / (2 * np.pi * -np.expm1(-2 * kappa)) * np.exp(kappa * (cosang - 1.0))
            out[start:start + chunk] = k.mean(axis=1)
            continue
        acc = np.ones((pts.shape[0], samples.shape[0]))
        for i in range(space.gdim):
            d = pts[:, i, None] - samples[None, :, i]
            if space.kind == "torus":
                L = space.length
                d = d - L * np.round(d / L)
                kk = int(np.ceil(8.0 * h / L)) + 1
                s = sum(np.exp(-0.5 * ((d + j * L) / h) ** 2) for j in range(-kk, kk + 1))
            elif space.kind == "box":
                half = 0.5 * space.length
                xs = samples[None, :, i]
                s = (np.exp(-0.5 * (d / h) ** 2)
                     + np.exp(-0.5 * ((pts[:, i, None] + xs - 2 * half) / h) ** 2)
                     + np.exp(-0.5 * ((pts[:, i, None] + xs + 2 * half) / h) ** 2))
            else:
                s = np.exp(-0.5 * (d / h) ** 2)
            acc *= s / (np.sqrt(2 * np.pi) * h)
        out[start:start + chunk] = acc.mean(axis=1)
    return out
