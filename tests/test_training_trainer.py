"""The training loop: monotone loss, 2TS → VarPro, constraints, samplers, MMD."""

import numpy as np
import pytest
from scipy import integrate

from ufd_solver.config import load_config
from ufd_solver.densities import parse_density
from ufd_solver.geometry import make_space
from ufd_solver.training.features import PeriodicGaussian, Radial, ReLU, VonMises
from ufd_solver.training.metrics import energy_mmd
from ufd_solver.training.objective import Population, Sampled
from ufd_solver.training.population import teacher_term
from ufd_solver.training.runner import Problem
from ufd_solver.training.sampling import initial_particles, sample
from ufd_solver.training.trainer import schedule, train_loop

CIRCLE, SPHERE = make_space("circle"), make_space("sphere")
TORUS = make_space("torus", 2, 4.0)
PAPER = parse_density({"preset": "paper-circle", "gamma": 10.0}, "teacher.density")


def sampled(feature, N, rng, lam=1e-2, c0=0.0, teacher=None):
    sp = feature.space
    x = feature.sample_data(N, rng)
    if teacher is None:
        teacher = sp.project(rng.standard_normal((30, sp.gdim)) * (1 if sp.kind != "torus" else 0.5))
    return Sampled(feature, x, feature.evaluate(teacher, x).mean(1), lam, c0)


def losses(hist):
    return np.array([row[2] for row in hist.log])


@pytest.mark.parametrize("method", ["varpro", "2ts"])
@pytest.mark.parametrize("case", ["relu-circle-sampled", "vonmises-sphere-sampled", "relu-circle-population",
                                  "gaussian-torus-population"])
def test_loss_decreases_monotonically_for_small_steps(case, method):
    rng = np.random.default_rng(0)
    if case == "relu-circle-sampled":
        sp, obj = CIRCLE, sampled(ReLU(CIRCLE), 2000, rng)
    elif case == "vonmises-sphere-sampled":
        sp, obj = SPHERE, sampled(VonMises(SPHERE, 1.5), 1000, rng)
    elif case == "relu-circle-population":
        f = ReLU(CIRCLE)
        sp, obj = CIRCLE, Population(f, teacher_term(f, PAPER, CIRCLE), 1e-2, 0.0)
    else:
        f = PeriodicGaussian(TORUS, 0.4)
        sig = parse_density({"preset": "paper-torus"}, "teacher.density")
        sp, obj = TORUS, Population(f, teacher_term(f, sig, TORUS), 1e-2, 1.0)
        obj.c0 = 1.0
    theta0 = initial_particles(parse_density("uniform", "i"), sp, 40, "random", rng)
    hist = train_loop(obj, sp, theta0, method=method, lam=obj.lam, tau=2e-3, outer_step=0.5,
                      output_times=[0.0, 0.2], t_end=0.2, log_every=1)
    L = losses(hist)
    assert len(L) == 101
    assert np.all(np.diff(L) <= 1e-13 * np.abs(L[:-1])), np.diff(L).max()
    assert L[-1] < L[0] - 1e-6


def test_two_timescale_with_fast_outer_step_approaches_varpro():
    f = ReLU(CIRCLE)
    obj = Population(f, teacher_term(f, PAPER, CIRCLE), 0.1, 0.0)
    theta0 = initial_particles(parse_density("uniform", "i"), CIRCLE, 32, "quantile", None)
    kw = dict(lam=0.1, tau=2**-8, output_times=[0.0, 2.0], t_end=2.0)
    ref = train_loop(obj, CIRCLE, theta0, method="varpro", **kw)
    errs = []
    for eta in (0.1, 0.5, 2.0):
        h = train_loop(obj, CIRCLE, theta0, method="2ts", outer_step=eta, **kw)
        errs.append(np.abs(h.theta[-1] - ref.theta[-1]).max())
        cerr = np.abs(h.c[-1] - ref.c[-1]).max()
    assert errs[0] > 3 * errs[1] > 9 * errs[2], errs
    assert errs[2] < 5e-3 and cerr < 5e-2, (errs, cerr)


@pytest.mark.parametrize("kind", ["sphere-relu", "sphere-vonmises", "torus-radial", "torus-gaussian"])
def test_particles_stay_on_the_manifold(kind):
    rng = np.random.default_rng(1)
    if kind.startswith("sphere"):
        sp = SPHERE
        f = ReLU(sp) if kind.endswith("relu") else VonMises(sp, 2.0)
    else:
        sp = TORUS
        f = Radial(sp, 0.5) if kind.endswith("radial") else PeriodicGaussian(sp, 0.3)
    obj = sampled(f, 500, rng, lam=1e-3)
    theta0 = initial_particles(parse_density("uniform", "i"), sp, 50, "random", rng)
    times = [0.0, 0.1, 0.25, 0.5]
    hist = train_loop(obj, sp, theta0, lam=1e-3, tau=0.02, output_times=times, t_end=0.5)
    assert hist.times == times
    th = np.array(hist.theta)
    assert np.abs(th[-1] - th[0]).max() > 1e-3  # the particles moved
    if sp.kind == "sphere":
        assert np.abs(np.linalg.norm(th, axis=-1) - 1).max() < 1e-14
    else:
        assert th.min() >= -2.0 and th.max() < 2.0


def test_schedule_hits_output_times_exactly():
    t = schedule(2**-4, 1.0, [0.0, 0.1, 0.5, 1.0])
    assert {0.0, 0.1, 0.5, 1.0} <= set(t.tolist())
    assert np.all(np.diff(t) > 0) and np.diff(t).max() <= 2**-4
    assert len(schedule(2**-10, 31.25, [0.0, 31.25])) == 32001


def test_circle_sampler_follows_the_cdf():
    n = 20000
    pts = sample(PAPER, CIRCLE, n, np.random.default_rng(2), "t")
    a = np.sort(np.arctan2(pts[:, 1], pts[:, 0]))
    dens = lambda s: PAPER.evaluate(CIRCLE, CIRCLE.angle_points(np.atleast_1d(s)))[0]  # noqa: E731
    Z = integrate.quad(dens, -np.pi, np.pi, limit=200)[0]
    probes = np.linspace(-3, 3, 13)
    cdf = np.array([integrate.quad(dens, -np.pi, p, limit=200)[0] / Z for p in probes])
    emp = np.searchsorted(a, probes) / n
    assert np.abs(emp - cdf).max() < 1.63 / np.sqrt(n)  # KS 1 % level


def test_rejection_sampler_sphere_and_torus_moments():
    rng = np.random.default_rng(3)
    n = 20000
    vm = parse_density({"mixture": "vonmises", "centers": [[0, 0, 1.0]], "kappa": 5.0}, "t")
    z = sample(vm, SPHERE, n, rng, "t")[:, 2]
    mean = 1 / np.tanh(5.0) - 1 / 5.0  # E[cos] of a von Mises–Fisher law on S²
    assert abs(z.mean() - mean) < 4 * z.std() / np.sqrt(n)
    g = parse_density({"mixture": "gaussian", "centers": [[0.5, -0.3]], "std": 0.3}, "t")
    x = sample(g, TORUS, n, rng, "t")
    assert np.all(np.abs(x.mean(0) - [0.5, -0.3]) < 4 * 0.3 / np.sqrt(n))
    assert np.all(np.abs(x.std(0) - 0.3) < 4 * 0.3 / np.sqrt(2 * n))


def test_quantile_initialisation():
    M = 64
    a = np.arctan2(*initial_particles(parse_density("uniform", "i"), CIRCLE, M, "quantile", None).T[::-1])
    np.testing.assert_allclose(np.sort(a), -np.pi + 2 * np.pi * (np.arange(M) + 0.5) / M, atol=1e-12)
    th = initial_particles(PAPER, CIRCLE, M, "quantile", None)
    dens = lambda s: PAPER.evaluate(CIRCLE, CIRCLE.angle_points(np.atleast_1d(s)))[0]  # noqa: E731
    Z = integrate.quad(dens, -np.pi, np.pi, limit=200)[0]
    ang = np.sort(np.arctan2(th[:, 1], th[:, 0]))
    F = np.array([integrate.quad(dens, -np.pi, s, limit=200)[0] / Z for s in ang[::8]])
    np.testing.assert_allclose(F, (np.arange(M)[::8] + 0.5) / M, atol=2e-5)
    # uniform on the sphere: the Fibonacci sphere, far closer to uniform than i.i.d. points
    uni = parse_density("uniform", "i")
    fib = initial_particles(uni, SPHERE, 256, "quantile", None)
    np.testing.assert_allclose(np.sort(fib[:, 2]), -1 + 2 * (np.arange(256) + 0.5) / 256, atol=1e-12)
    ref = initial_particles(uni, SPHERE, 4000, "random", np.random.default_rng(0))
    rnd = initial_particles(uni, SPHERE, 256, "random", np.random.default_rng(1))
    assert energy_mmd(fib, ref) < 0.5 * energy_mmd(rnd, ref)
    tor = initial_particles(parse_density({"preset": "paper-torus"}, "i"), TORUS, 256, "quantile", None)
    assert tor.min() >= -2 and tor.max() < 2


def test_vonmises_teacher_student_reaches_small_mmd():
    """Injective kernel (von Mises on S¹), population VarPro: energy MMD to the teacher < 2e-2."""
    cfg = load_config("demos/train_vonmises_circle.toml",
                      ["training.t_end=6", "training.step_size=0.00390625", "training.num_outputs=6"])
    p = Problem(cfg)
    p.build()
    hist = p.run()
    mmd = [p.mmd(th) for th in hist.theta]
    teacher = [m[0] for m in mmd]
    print("t, MMD to teacher, MMD to sigma:", [(t, round(a, 4), round(b, 4)) for t, (a, b) in zip(hist.times, mmd)])
    assert teacher[0] > 0.2
    assert teacher[-1] < 2e-2
    assert np.all(np.diff(teacher) < 0)
