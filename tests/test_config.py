"""Configuration validation, safe expressions and density definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from ufd_solver.config import dumps_toml, load_config
from ufd_solver.densities import kde, paper_circle, parse_density
from ufd_solver.errors import ConfigError
from ufd_solver.geometry import make_space


def test_defaults_are_the_paper_circle_case():
    cfg = load_config()
    assert cfg.mesh.kind == "circle" and cfg.mesh.resolution == 1000
    assert cfg.teacher.density.params == {"preset": "paper-circle", "gamma": 100.0}
    assert cfg.solver.t_end == 31.25 and cfg.solver.scheme == "bdf2"
    assert cfg.solver.output_times[0] == 0.0 and cfg.solver.output_times[-1] == 31.25


def test_resolved_config_roundtrip(tmp_path):
    cfg = load_config(overrides=["mesh.kind='torus'", "solver.output_times=[1.5, 0.5]",
                                 "teacher.density={mixture='gaussian', centers=[[0.0, 0.0]], std=0.5}"])
    path = tmp_path / "c.toml"
    path.write_text(dumps_toml(cfg.to_dict()))
    again = load_config(str(path))
    assert again.to_dict() == cfg.to_dict()
    assert again.solver.output_times == (0.0, 0.5, 1.5, 31.25)


@pytest.mark.parametrize("override,key,fragment", [
    ("mesh.kind='cube'", "mesh.kind", "allowed: 'circle', 'sphere', 'torus', 'box', 'file'"),
    ("mesh.resolution=0", "mesh.resolution", "must be > 0"),
    ("mesh.resolution=2.5", "mesh.resolution", "expected an integer"),
    ("mesh.dim=4", "mesh.dim", "must be <= 3"),
    ("mesh.colour='red'", "mesh.colour", "unknown key"),
    ("solver.t_end=0", "solver.t_end", "must be > 0"),
    ("solver.t_end='long'", "solver.t_end", "expected a number"),
    ("solver.scheme='rk4'", "solver.scheme", "allowed: 'bdf2', 'be'"),
    ("solver.output_times=[-1.0]", "solver.output_times", "outside [0, t_end"),
    ("solver.output_times=[40.0]", "solver.output_times", "outside [0, t_end"),
    ("solver.dt0=1e-20", "solver.dt0", "must be >= solver.dt_min"),
    ("solver.rtol=nan", "solver.rtol", "expected a number, got nan"),
    ("output.vtx=1", "output.vtx", "expected true or false"),
    ("teacher.density={preset='paper-torus'}", "teacher.density", "defined on kind 'torus'"),
    ("teacher.density={preset='nope'}", "teacher.density.preset", "unknown preset"),
    ("teacher.density={samples='x.npz'}", "teacher.density", "[initial] density only"),
    ("initial.density={file='/no/such.csv'}", "initial.density.file", "does not exist"),
    ("training.method='sgd'", "training.method", "allowed: 'varpro', '2ts'"),
    ("widget.size=3", "widget", "unknown section"),
])
def test_bad_values_name_the_key(override, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert info.value.key == key
    assert fragment in str(info.value)


def test_malformed_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[mesh\nkind = 'circle'\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_config(str(p))


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "x.__class__", "(lambda: 1)()", "[1][0]",
    "open('f')", "theta if 1 else 2", "'a'", "exp(x=1)", "eval('1')", "y and z",
])
def test_expressions_outside_the_whitelist_are_refused(expr):
    with pytest.raises(ConfigError):
        parse_density(expr, "teacher.density")


def test_expression_values_on_the_circle():
    space = make_space("circle")
    d = parse_density("1 + 0.5*cos(theta) + x**2 - sqrt(abs(y)) + pi*0", "k")
    th = np.linspace(-3, 3, 7)
    pts = space.angle_points(th)
    expected = 1 + 0.5 * np.cos(th) + np.cos(th) ** 2 - np.sqrt(np.abs(np.sin(th)))
    np.testing.assert_allclose(d.evaluate(space, pts), expected, rtol=1e-14)


def test_expression_with_unknown_variable_for_space():
    d = parse_density("1 + z", "teacher.density")
    with pytest.raises(ConfigError, match="unknown name 'z'"):
        d.check_space(make_space("circle"))


def test_paper_preset_matches_formula():
    theta = np.linspace(-np.pi, np.pi, 11)
    g = 100.0
    expected = 1 / (1 + g * np.sin(theta / 2) ** 2) + 0.5 / (1 + g * np.sin((theta - 0.4 * np.pi) / 2) ** 2)
    np.testing.assert_allclose(paper_circle(theta, g), expected, rtol=1e-15)


@pytest.mark.parametrize("kind,spec", [
    ("circle", {"mixture": "vonmises", "centers": [0.5, -2.0], "kappa": [8.0, 2.0], "weights": [1.0, 3.0]}),
    ("torus", {"mixture": "gaussian", "centers": [[1.9, 0.0]], "std": 0.6}),
    ("torus", {"preset": "paper-torus"}),
])
def test_mixtures_have_unit_mass(kind, spec):
    space = make_space(kind, dim=2, length=4.0)
    d = parse_density(spec, "teacher.density")
    d.check_space(space)
    if kind == "circle":
        mass = integrate.quad(lambda t: d.evaluate(space, space.angle_points(np.array([t])))[0],
                              -np.pi, np.pi, limit=200)[0]
    else:
        n = 400
        g = -2 + 4 * (np.arange(n) + 0.5) / n
        X, Y = np.meshgrid(g, g)
        vals = d.evaluate(space, np.stack([X.ravel(), Y.ravel()], 1))
        mass = vals.sum() * (4.0 / n) ** 2
    assert mass == pytest.approx(1.0, rel=1e-6)


def test_vonmises_sphere_unit_mass():
    space = make_space("sphere")
    d = parse_density({"mixture": "vonmises", "centers": [[0, 0, 1]], "kappa": 30.0}, "k")
    # density depends on z only: ∫ = 2π ∫_{-1}^{1} f(z) dz
    mass = 2 * np.pi * integrate.quad(
        lambda z: d.evaluate(space, np.array([[np.sqrt(1 - z * z), 0, z]]))[0], -1, 1)[0]
    assert mass == pytest.approx(1.0, rel=1e-8)


def test_kde_unit_mass_and_table_file(tmp_path):
    space = make_space("circle")
    rng = np.random.default_rng(0)
    samples = space.angle_points(rng.vonmises(0.3, 4.0, size=500))
    mass = integrate.quad(lambda t: kde(space, samples, space.angle_points(np.array([t])), 0.2)[0],
                          -np.pi, np.pi)[0]
    assert mass == pytest.approx(1.0, rel=1e-8)
    csv = tmp_path / "s.csv"
    th = np.linspace(-np.pi, np.pi, 50, endpoint=False)
    np.savetxt(csv, np.stack([th, 2 + np.cos(th)], 1), delimiter=",", header="theta,value")
    d = parse_density({"file": str(csv)}, "teacher.density")
    t = np.array([0.1, 1.0, -2.0])
    np.testing.assert_allclose(d.evaluate(space, space.angle_points(t)), 2 + np.cos(t), atol=2e-3)
    bad = tmp_path / "bad.csv"
    bad.write_text("0.0,1.0\n1.0,nan\n")
    with pytest.raises(ConfigError, match="NaN"):
        parse_density({"file": str(bad)}, "teacher.density")
