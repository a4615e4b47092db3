"""Run configuration: frozen, validated dataclasses built from TOML or the CLI.

One TOML file drives ``ufd run`` (PDE) and ``ufd train`` (particles)::

    [mesh]      kind, resolution, dim, length, file, degree
    [teacher]   density            (σ)
    [initial]   density            (ρ₀)
    [solver]    scheme, t_end, output_times, num_outputs, dt0, dt_min, dt_max,
                rtol, atol, safety, max_growth, newton_rtol, newton_max_it,
                max_retries, ksp_type, pc_type, petsc_options
    [output]    directory, vtx, xdmf, progress
    [checkpoint] every_steps, every_seconds
    [training]  see :class:`TrainingConfig`

Every key has a default (see ``ufd run --help`` and the README), so an empty
file is a valid configuration: the paper's circle case.  Invalid input raises
:class:`~ufd_solver.errors.ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .densities import Density, parse_density
from .errors import ConfigError
from .geometry import KINDS, FeatureSpace, make_space

DEFAULT_RESOLUTION = {"circle": 1000, "sphere": 5, 1: 256, 2: 32, 3: 12}


# ---------------------------------------------------------------------------
# small typed readers
def _get(table: dict, name: str, default, key: str, kind, *, choices=None, positive=False,
         nonneg=False, minimum=None, maximum=None):
    full = f"{key}.{name}"
    v = table.get(name, default)
    if kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(full, f"expected a number, got {v!r}")
        v = float(v)
        if math.isnan(v):
            raise ConfigError(full, "expected a number, got nan")
    elif kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ConfigError(full, f"expected an integer, got {v!r}")
    elif kind is bool:
        if not isinstance(v, bool):
            raise ConfigError(full, f"expected true or false, got {v!r}")
    elif kind is str:
        if not isinstance(v, str):
            raise ConfigError(full, f"expected a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(full, f"got {v!r}; allowed: {', '.join(map(repr, choices))}")
    if positive and not v > 0:
        raise ConfigError(full, f"must be > 0, got {v!r}")
    if nonneg and not v >= 0:
        raise ConfigError(full, f"must be >= 0, got {v!r}")
    if minimum is not None and v < minimum:
        raise ConfigError(full, f"must be >= {minimum}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ConfigError(full, f"must be <= {maximum}, got {v!r}")
    if kind is float and math.isinf(v) and name not in ("dt_max",):
        raise ConfigError(full, f"must be finite, got {v!r}")
    return v


def _check_keys(table: dict, allowed, key: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(key, f"expected a table [{key}], got {type(table).__name__}")
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}", f"unknown key; allowed: {', '.join(allowed)}")


def _times(value, key: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of times, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(key, f"expected finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def resolve_output_times(times: tuple[float, ...], num: int, t_end: float, key: str) -> tuple[float, ...]:
    """Sorted output times with t = 0 and t_end always included."""
    for t in times:
        if t < 0 or t > t_end:
            raise ConfigError(key, f"output time {t!r} outside [0, t_end = {t_end!r}]")
    if not times:
        times = tuple(t_end * i / num for i in range(1, num + 1))
    return tuple(sorted({0.0, float(t_end), *times}))


# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MeshConfig:
    """``[mesh]``: the feature space Θ and its discretisation.

    kind: circle | sphere | torus | box | file.
    resolution: circle: number of cells; sphere: refinement level of an
        icosahedron (10·4^r + 2 vertices); torus/box: cells per side.
    dim: torus/box dimension (1, 2, 3).
    length: torus/box side L; the domain is [−L/2, L/2)^d.
    file: mesh file (.msh or .xdmf) for kind = "file".
    degree: Lagrange degree of the density (1 or 2).
    periodic: with kind = "file", make a box-shaped mesh periodic (its
        bounding box; opposite faces must match); always true for the torus.
    """

    kind: str = "circle"
    resolution: int = 1000
    dim: int = 2
    length: float = 4.0
    file: str = ""
    degree: int = 1
    periodic: bool = False

    KEYS = ("kind", "resolution", "dim", "length", "file", "degree", "periodic")

    @classmethod
    def from_table(cls, t: dict) -> MeshConfig:
        key = "mesh"
        _check_keys(t, cls.KEYS, key)
        kind = _get(t, "kind", "circle", key, str, choices=KINDS)
        dim = _get(t, "dim", {"circle": 1, "sphere": 2}.get(kind, 2), key, int, minimum=1, maximum=3)
        if kind == "circle":
            dim = 1
        elif kind == "sphere":
            dim = 2
        default_res = DEFAULT_RESOLUTION.get(kind, DEFAULT_RESOLUTION.get(dim))
        res = _get(t, "resolution", default_res, key, int, positive=True)
        if kind == "sphere" and res > 9:
            raise ConfigError("mesh.resolution", f"sphere refinement level must be <= 9, got {res}")
        if kind == "circle" and res < 3:
            raise ConfigError("mesh.resolution", f"a circle needs at least 3 cells, got {res}")
        length = _get(t, "length", 4.0, key, float, positive=True)
        file = _get(t, "file", "", key, str)
        if kind == "file" and not file:
            raise ConfigError("mesh.file", "required when mesh.kind = 'file' (.msh or .xdmf)")
        if kind != "file" and file:
            raise ConfigError("mesh.file", f"only used with mesh.kind = 'file' (kind is {kind!r})")
        degree = _get(t, "degree", 1, key, int, choices=(1, 2))
        periodic = _get(t, "periodic", kind == "torus", key, bool)
        if kind == "torus" and not periodic:
            raise ConfigError("mesh.periodic", "kind 'torus' is always periodic; use kind 'box' for a wall")
        if periodic and kind not in ("torus", "file"):
            raise ConfigError("mesh.periodic", f"allowed with kind 'file' (a box mesh) or 'torus', "
                              f"not with {kind!r}")
        return cls(kind, res, dim, length, file, degree, periodic)

    def space(self, gdim: int | None = None) -> FeatureSpace:
        return make_space(self.kind, self.dim, self.length, gdim)


@dataclass(frozen=True)
class DensityConfig:
    """``[teacher]`` / ``[initial]``: a density specification."""

    density: Density

    @classmethod
    def from_table(cls, t: dict, key: str, default: Any, allow_samples: bool) -> DensityConfig:
        _check_keys(t, ("density",), key)
        return cls(parse_density(t.get("density", default), f"{key}.density", allow_samples))


@dataclass(frozen=True)
class SolverConfig:
    """``[solver]``: time integration of the PDE.

    scheme: "bdf2" (variable-step BDF2, default) or "be" (backward Euler).
    t_end: final time.  output_times: times written (t = 0 and t_end always
    are); when empty, ``num_outputs`` equally spaced times in (0, t_end].
    dt0, dt_min, dt_max: first, smallest and largest step (dt_max = 0: none).
    rtol, atol: local error tolerances on ρ (relative, absolute).
    safety, max_growth: step controller factor and largest step growth.
    newton_rtol: Newton stops when the residual falls below newton_rtol times
    the mass-scale of the step (or stagnates at round-off).
    newton_max_it, max_retries: Newton iterations per solve; step cuts in a row
    before giving up.  adaptive: false for fixed steps dt0 (output times are
    still hit exactly).  ksp_type, pc_type, petsc_options: linear solver (under
    the options prefix ``ufd_``).
    """

    scheme: str = "bdf2"
    t_end: float = 31.25
    output_times: tuple[float, ...] = ()
    num_outputs: int = 10
    dt0: float = 1e-4
    dt_min: float = 1e-12
    dt_max: float = 0.0
    rtol: float = 1e-3
    atol: float = 1e-6
    safety: float = 0.9
    max_growth: float = 3.0
    newton_rtol: float = 1e-11
    newton_max_it: int = 30
    max_retries: int = 12
    adaptive: bool = True
    ksp_type: str = "cg"
    pc_type: str = "hypre"
    petsc_options: dict = field(default_factory=dict, hash=False)

    KEYS = ("scheme", "t_end", "output_times", "num_outputs", "dt0", "dt_min", "dt_max",
            "rtol", "atol", "safety", "max_growth", "newton_rtol", "newton_max_it",
            "max_retries", "adaptive", "ksp_type", "pc_type", "petsc_options")

    @classmethod
    def from_table(cls, t: dict) -> SolverConfig:
        key = "solver"
        _check_keys(t, cls.KEYS, key)
        d = cls()
        scheme = _get(t, "scheme", d.scheme, key, str, choices=("bdf2", "be"))
        t_end = _get(t, "t_end", d.t_end, key, float, positive=True)
        num = _get(t, "num_outputs", d.num_outputs, key, int, positive=True)
        times = resolve_output_times(_times(t.get("output_times", []), "solver.output_times"),
                                     num, t_end, "solver.output_times")
        dt0 = _get(t, "dt0", d.dt0, key, float, positive=True)
        dt_min = _get(t, "dt_min", d.dt_min, key, float, positive=True)
        dt_max = _get(t, "dt_max", d.dt_max, key, float, nonneg=True)
        if dt0 < dt_min:
            raise ConfigError("solver.dt0", f"must be >= solver.dt_min = {dt_min!r}, got {dt0!r}")
        if dt_max and dt_max < dt_min:
            raise ConfigError("solver.dt_max", f"must be 0 (no limit) or >= dt_min, got {dt_max!r}")
        rtol = _get(t, "rtol", d.rtol, key, float, positive=True)
        atol = _get(t, "atol", d.atol, key, float, positive=True)
        safety = _get(t, "safety", d.safety, key, float, positive=True, maximum=1.0)
        growth = _get(t, "max_growth", d.max_growth, key, float, minimum=1.0)
        newton_rtol = _get(t, "newton_rtol", d.newton_rtol, key, float, positive=True)
        newton_max_it = _get(t, "newton_max_it", d.newton_max_it, key, int, positive=True)
        retries = _get(t, "max_retries", d.max_retries, key, int, nonneg=True)
        adaptive = _get(t, "adaptive", d.adaptive, key, bool)
        ksp = _get(t, "ksp_type", d.ksp_type, key, str, choices=("cg", "gmres", "preonly"))
        pc = _get(t, "pc_type", d.pc_type, key, str, choices=("hypre", "gamg", "lu", "jacobi", "ilu"))
        opts = t.get("petsc_options", {})
        if not isinstance(opts, dict):
            raise ConfigError("solver.petsc_options", "expected a table of PETSc option = value")
        for k, v in opts.items():
            if isinstance(v, (dict, list)):
                raise ConfigError(f"solver.petsc_options.{k}", "expected a string, number or boolean")
        return cls(scheme, t_end, times, num, dt0, dt_min, dt_max, rtol, atol, safety, growth,
                   newton_rtol, newton_max_it, retries, adaptive, ksp, pc, dict(opts))


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: directory (overridden by ``-o``), ParaView formats, progress bar."""

    directory: str = "ufd-output"
    vtx: bool = True
    xdmf: bool = True
    progress: bool = True

    KEYS = ("directory", "vtx", "xdmf", "progress")

    @classmethod
    def from_table(cls, t: dict) -> OutputConfig:
        key = "output"
        _check_keys(t, cls.KEYS, key)
        d = cls()
        directory = _get(t, "directory", d.directory, key, str)
        if not directory:
            raise ConfigError("output.directory", "must be a non-empty path")
        return cls(directory, _get(t, "vtx", d.vtx, key, bool), _get(t, "xdmf", d.xdmf, key, bool),
                   _get(t, "progress", d.progress, key, bool))


@dataclass(frozen=True)
class CheckpointConfig:
    """``[checkpoint]``: periodic restart files of ``ufd run``.

    every_steps: write a checkpoint every K accepted steps (0: never by count).
    every_seconds: and whenever W wall-clock seconds have passed since the
    last one (0: never by time).  SIGINT/SIGTERM always write a final one.
    """

    every_steps: int = 0
    every_seconds: float = 600.0

    KEYS = ("every_steps", "every_seconds")

    @classmethod
    def from_table(cls, t: dict) -> CheckpointConfig:
        key = "checkpoint"
        _check_keys(t, cls.KEYS, key)
        d = cls()
        return cls(_get(t, "every_steps", d.every_steps, key, int, nonneg=True),
                   _get(t, "every_seconds", d.every_seconds, key, float, nonneg=True))


FEATURES = ("relu", "vonmises", "gaussian", "radial")


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``: the particle trainer (MATH.md §2).

    features: relu | vonmises | gaussian | radial | "module:function".
    data: "sampled" (``samples`` data points, seeded) or "population".
    method: "varpro" or "2ts"; outer_step: 2TS outer step η.
    regularization: "biased" (R = c²/2) or "unbiased" (R = (c − 1)²/2).
    lambda: λ > 0.  width: M.  teacher_width: M*.
    init: "random" or "quantile".  step_size: τ.  t_end: training time.
    output_times / num_outputs: when particles are stored.
    kappa: von Mises concentration; std: periodic Gaussian width;
    scale: radial feature width s.  seed: random seed.
    solver: VarPro ridge solve, "cholesky" (a fresh factorisation every step)
    or "pcg" (conjugate gradients preconditioned by an earlier step's Cholesky
    factor, stopped at a true relative residual ≤ 1e-12; refactorises when
    it needs more than 8 iterations).
    """

    features: str = "relu"
    data: str = "sampled"
    samples: int = 4096
    method: str = "varpro"
    outer_step: float = 1.0
    regularization: str = "biased"
    lam: float = 1e-3
    width: int = 1024
    teacher_width: int = 4096
    init: str = "random"
    step_size: float = 2.0**-10
    t_end: float = 31.25
    output_times: tuple[float, ...] = ()
    num_outputs: int = 10
    kappa: float = 2.0
    std: float = 0.3
    scale: float = 0.5
    seed: int = 0
    solver: str = "cholesky"

    KEYS = ("features", "data", "samples", "method", "outer_step", "regularization", "lambda",
            "width", "teacher_width", "init", "step_size", "t_end", "output_times",
            "num_outputs", "kappa", "std", "scale", "seed", "solver")

    @classmethod
    def from_table(cls, t: dict) -> TrainingConfig:
        key = "training"
        _check_keys(t, cls.KEYS, key)
        d = cls()
        features = _get(t, "features", d.features, key, str)
        if features not in FEATURES and (":" not in features or features.startswith(":")
                                         or features.endswith(":")):
            raise ConfigError("training.features",
                              f"got {features!r}; allowed: {', '.join(FEATURES)} or 'module:function'")
        data = _get(t, "data", d.data, key, str, choices=("sampled", "population"))
        samples = _get(t, "samples", d.samples, key, int, positive=True)
        method = _get(t, "method", d.method, key, str, choices=("varpro", "2ts"))
        outer = _get(t, "outer_step", d.outer_step, key, float, positive=True)
        reg = _get(t, "regularization", d.regularization, key, str, choices=("biased", "unbiased"))
        lam = _get(t, "lambda", d.lam, key, float, positive=True)
        width = _get(t, "width", d.width, key, int, positive=True)
        twidth = _get(t, "teacher_width", d.teacher_width, key, int, positive=True)
        init = _get(t, "init", d.init, key, str, choices=("random", "quantile"))
        tau = _get(t, "step_size", d.step_size, key, float, positive=True)
        t_end = _get(t, "t_end", d.t_end, key, float, positive=True)
        num = _get(t, "num_outputs", d.num_outputs, key, int, positive=True)
        times = resolve_output_times(_times(t.get("output_times", []), "training.output_times"),
                                     num, t_end, "training.output_times")
        kappa = _get(t, "kappa", d.kappa, key, float, positive=True)
        std = _get(t, "std", d.std, key, float, positive=True)
        scale = _get(t, "scale", d.scale, key, float, positive=True)
        seed = _get(t, "seed", d.seed, key, int, nonneg=True)
        solver = _get(t, "solver", d.solver, key, str, choices=("cholesky", "pcg"))
        return cls(features, data, samples, method, outer, reg, lam, width, twidth, init, tau,
                   t_end, times, num, kappa, std, scale, seed, solver)


SECTIONS = ("mesh", "teacher", "initial", "solver", "output", "checkpoint", "training")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    mesh: MeshConfig = field(default_factory=MeshConfig)
    teacher: DensityConfig = None  # type: ignore[assignment]
    initial: DensityConfig = None  # type: ignore[assignment]
    solver: SolverConfig = field(default_factory=SolverConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    raw: dict = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        if not isinstance(data, dict):
            raise ConfigError("", "configuration must be a TOML table")
        for k, v in data.items():
            if k not in SECTIONS:
                raise ConfigError(k, f"unknown section; allowed: {', '.join(SECTIONS)}")
            if not isinstance(v, dict):
                raise ConfigError(k, f"expected a table [{k}], got a {type(v).__name__}")
        mesh = MeshConfig.from_table(data.get("mesh", {}))
        default_teacher = {"preset": "paper-circle", "gamma": 100.0} if mesh.kind == "circle" else "uniform"
        teacher = DensityConfig.from_table(data.get("teacher", {}), "teacher", default_teacher, False)
        initial = DensityConfig.from_table(data.get("initial", {}), "initial", "uniform", True)
        space = mesh.space()
        if mesh.kind != "file":
            teacher.density.check_space(space)
            initial.density.check_space(space)
        return cls(mesh, teacher, initial, SolverConfig.from_table(data.get("solver", {})),
                   OutputConfig.from_table(data.get("output", {})),
                   CheckpointConfig.from_table(data.get("checkpoint", {})),
                   TrainingConfig.from_table(data.get("training", {})), data)

    def replace(self, **sections) -> Config:
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict:
        """The resolved configuration (all defaults filled in), TOML-ready."""
        out = {
            "mesh": {k: getattr(self.mesh, k) for k in MeshConfig.KEYS},
            "teacher": {"density": self.teacher.density.to_toml()},
            "initial": {"density": self.initial.density.to_toml()},
            "solver": {k: (list(getattr(self.solver, k)) if k == "output_times" else getattr(self.solver, k))
                       for k in SolverConfig.KEYS},
            "output": {k: getattr(self.output, k) for k in OutputConfig.KEYS},
            "checkpoint": {k: getattr(self.checkpoint, k) for k in CheckpointConfig.KEYS},
            "training": {k: (list(getattr(self.training, "lam" if k == "lambda" else k))
                             if k == "output_times" else getattr(self.training, "lam" if k == "lambda" else k))
                         for k in TrainingConfig.KEYS},
        }
        if not out["mesh"]["file"]:
            del out["mesh"]["file"]
        return out


# ---------------------------------------------------------------------------
def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value as a TOML value, else a plain string)."""
    if "=" not in item:
        raise ConfigError(item, "--set expects section.key=value")
    lhs, rhs = item.split("=", 1)
    path = [p.strip() for p in lhs.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigError(lhs, "--set expects section.key=value (e.g. solver.t_end=10)")
    try:
        value = tomllib.loads(f"v = {rhs.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = rhs.strip()
    return path, value


def load_config(path: str | None = None, overrides=(), data: dict | None = None) -> Config:
    """Read a TOML file (or ``data``), apply ``--set`` overrides and validate."""
    if data is None:
        data = {}
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    data = tomllib.load(fh)
            except FileNotFoundError:
                raise ConfigError(str(path), "configuration file does not exist") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(str(path), f"malformed TOML: {exc}") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(str(path), f"cannot read configuration: {exc}") from None
    data = _deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(keys), "cannot set a key inside a non-table value")
        node[keys[-1]] = value
    return Config.from_dict(data)


def _deepcopy(d):
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


# ---------------------------------------------------------------------------
def dumps_toml(data: dict) -> str:
    """Serialise nested dicts of scalars/lists as TOML (enough for our configs)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{_k(k)} = {value(x)}" for k, x in v.items()) + "}"
        if hasattr(v, "tolist"):
            return value(v.tolist())
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        for k, v in table.items():
            lines.append(f"{_k(k)} = {value(v)}")
        lines.append("")
    return "\n".join(lines)


def _k(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else f'"{k}"'
