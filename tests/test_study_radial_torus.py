"""Study 3 (demos/study_radial_torus.py) at test size: radial features on the 2D torus.

The study runs `ufd validate` (the periodic PDE, the particle training with
sampled data, the comparison) on the paper's Appendix B case and a small
sweep reusing the PDE run, and writes study.md/study.json.  It runs in-process
(serially and on 2 ranks); its numbers are checked against what the
mathematics says must hold, with expectations computed here independently of
the package (closed forms, a 2D quadrature in numpy).
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

L = 4.0
STD = 0.25  # the paper-torus preset's modes




def mean_distance_uniform_torus(side):
    """E‖X − X'‖ for X, X' uniform on the flat torus of side ``side``: the difference
    (periodic image) is uniform on [−side/2, side/2)², and E‖U‖ over the unit square
    centred at 0 is (√2 + asinh 1)/6."""
    return side * (math.sqrt(2.0) + math.asinh(1.0)) / 6.0


def mean_distance_sigma(n=801):
    """E‖X − X'‖ (periodic image distance) for X, X' ~ σ = ½N((−1, 0), s²) + ½N((1, 1), s²).

    X − X' is N(0, 2s²I) (same mode, probability ½) or N(±(2, 1), 2s²I) (different modes);
    the shortest image of a difference d is d − L round(d/L).  Tensor Gauss–Hermite-free
    quadrature: a fine grid over ±8 standard deviations (the Gaussian tails beyond are
    below 1e-14)."""
    v = math.sqrt(2.0) * STD
    u = np.linspace(-8 * v, 8 * v, n)
    w = np.exp(-u**2 / (2 * v * v))
    W = np.outer(w, w)
    W /= W.sum()
    U, V = np.meshgrid(u, u, indexing="ij")
    total = 0.0
    for shift, p in (((0.0, 0.0), 0.5), ((2.0, 1.0), 0.5)):
        dx, dy = U + shift[0], V + shift[1]
        dx -= L * np.round(dx / L)
        dy -= L * np.round(dy / L)
        total += p * float((np.sqrt(dx * dx + dy * dy) * W).sum())
    return total


def test_mean_distance_helpers():
    # the closed forms used below, against Monte Carlo (not against the package)
    rng = np.random.default_rng(5)
    d = rng.uniform(-L / 2, L / 2, (400_000, 2)) - rng.uniform(-L / 2, L / 2, (400_000, 2))
    d -= L * np.round(d / L)
    mc = np.sqrt((d * d).sum(1))
    assert abs(mc.mean() - mean_distance_uniform_torus(L)) < 4 * mc.std() / math.sqrt(mc.size)
    c = np.array([[-1.0, 0.0], [1.0, 1.0]])
    x = c[rng.integers(0, 2, 400_000)] + STD * rng.standard_normal((400_000, 2))
    y = c[rng.integers(0, 2, 400_000)] + STD * rng.standard_normal((400_000, 2))
    d = x - y
    d -= L * np.round(d / L)
    mc = np.sqrt((d * d).sum(1))
    assert abs(mc.mean() - mean_distance_sigma()) < 4 * mc.std() / math.sqrt(mc.size)


def test_study_radial_torus_small(comm, run_study):
    study, data, out = run_study("study_radial_torus")
    ref = data["reference"]
    t = np.array(ref["times"])
    M = ref["width"]
    np.testing.assert_allclose(t, [0, 0.01, 0.02, 0.05, 0.1])

    # --- the PDE ---------------------------------------------------------------
    # mass is conserved (every accepted step); F and the distance to σ decrease
    with open(os.path.join(out, "reference", "pde", "diagnostics.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    mass = np.array([float(r["mass"]) for r in rows])
    assert np.abs(mass - 1).max() < 1e-10
    energy = np.array([float(r["energy"]) for r in rows])
    assert np.all(np.diff(energy) < 1e-12)
    assert np.all(np.diff(ref["mmd_pde_sigma"]) < 0)
    assert np.all(np.diff(ref["energy_pde"]) < 0)
    # at t = 0, ρ = 1/16: F = ½∫σ²/ρ − ½ = 8∫σ² − ½ with ∫σ² = ½·1/(4πs²) (the two modes
    # barely overlap: the cross term is e^{−5/(4s²)}/(4πs²) ~ 1e-9)
    assert abs(ref["energy_pde"][0] - (8 * 0.5 / (4 * math.pi * STD**2) - 0.5)) < 0.03 * ref["energy_pde"][0]
    # the fronts: far from the modes the PDE keeps the initial density, near them it gathers
    # mass; the fraction within 0.75 of a mode grows from the uniform value towards σ's
    within = ref["mass_within"]
    uniform = 2 * math.pi * study.RADIUS**2 / L**2
    assert abs(within["pde"][0] - uniform) < 0.01
    assert abs(within["sigma"] - (1 - math.exp(-study.RADIUS**2 / (2 * STD**2)))) < 0.02
    assert np.all(np.diff(within["pde"]) > 0) and within["pde"][-1] < within["sigma"]

    # --- noise floors against closed forms -------------------------------------------
    # floor² = E‖X − X'‖/M; at t = 0 X, X' are uniform on the torus
    assert abs(ref["floor_pde"][0] ** 2 * M / mean_distance_uniform_torus(L) - 1) < 2e-3
    D_sigma = mean_distance_sigma()  # σ is P1-interpolated on the 32 × 32 mesh: 0.2 % off
    for f in ref["floor_sigma"]:
        assert abs(f * f * M / D_sigma - 1) < 1e-2
    # as the PDE gathers mass on the modes, its own floor falls towards σ's
    assert np.all(np.diff(ref["floor_pde"]) < 0)

    # --- the weighted Poincaré eigenvalues ----------------------------------------------
    # κ₁: exchange of mass between two well-separated modes, exponentially small; the next
    # ones near the Ornstein–Uhlenbeck gap 1/s² = 16 of a Gaussian mode
    k = ref["kappas"]
    assert k[0] < 0.05 and k[0] < 1e-2 * k[1]
    assert 0.75 * 16 < k[1] < 1.1 * 16

    # --- particles against the PDE ----------------------------------------------------
    # the quantile (Fibonacci) start is far below the i.i.d. floor; at t > 0 the particles
    # are closer to the PDE than to σ, and MMD(particles, PDE) stays below a quarter of
    # MMD(particles, σ) while the PDE is far from σ
    assert ref["mmd_particles_pde"][0] < 0.3 * ref["floor_pde"][0]
    for a, b in zip(ref["mmd_particles_pde"][1:], ref["mmd_particles_sigma"][1:]):
        assert a < 0.25 * b
    # the triangle inequality of the energy distance (a metric on measures)
    for a, b, c in zip(ref["mmd_particles_pde"], ref["mmd_pde_sigma"], ref["mmd_particles_sigma"]):
        assert c <= a + b + 1e-9 and b <= a + c + 1e-9
    # radial profiles: the lattice start matches the uniform law; the particles gather mass
    # near the modes like the PDE does (their front runs somewhat ahead: docs/study_radial_torus.md)
    assert ref["ks_radial"][0] < 0.05
    assert abs(within["particles"][0] - uniform) < 0.03
    gain_pde = within["pde"][-1] - within["pde"][0]
    gain_particles = within["particles"][-1] - within["particles"][0]
    assert 0.5 * gain_pde < gain_particles < 2 * gain_pde
    # the outer weights: c_j → σ/ρ where the front has passed (r < 0.5), and far beyond it
    # (r ≥ 1.25, where σ/ρ < 1e-6) the features are frozen, c_j ≈ 0
    for entry in ref["outer_weights"]:
        for lo, hi, n, c, ratio in entry["bins"]:
            if hi <= 0.5:
                assert abs(c / ratio - 1) < 0.2
            if lo >= 1.25:
                assert abs(c) < 0.05 and ratio < 1e-5

    # --- the sweep ----------------------------------------------------------------
    cases = {(c["width"], c["lambda"]): c for c in data["cases"]}
    expected = {(M, ref["lambda"])} | {(m, ref["lambda"]) for m in study.SMALL["widths"]} | {
        (study.SMALL["sweep_width"], lam) for lam in study.SMALL["lambdas"]}
    assert set(cases) == expected
    sweep_t = sorted({0.0, float(t[-1]), *study.SMALL["sweep_times"]})
    for (m, lam), c in cases.items():
        np.testing.assert_allclose(c["t"], t if (m, lam) == (M, ref["lambda"]) else sweep_t)
        assert all(a < b for a, b in zip(c["mmd"][1:], c["mmd_sigma"][1:]))
        # the floor scales like M^{−1/2} against the reference (same PDE density, same times)
        k = [int(np.argmin(np.abs(t - x))) for x in c["t"]]
        np.testing.assert_allclose(np.array(c["floor"]) ** 2 * m, np.array(ref["floor_pde"])[k] ** 2 * M, rtol=1e-8)

    # --- files --------------------------------------------------------------------
    if comm.rank == 0:
        with open(os.path.join(out, "reference", "validation.csv"), newline="") as fh:
            header = next(csv.reader(fh))
        for col in ("t", "mmd_particles_pde", "floor_pde", "mmd_particles_sigma", "floor_sigma", "mmd_pde_sigma",
                    "l1_particles_pde", "l1_particles_sigma", "l1_pde_sigma", "energy_pde"):
            assert col in header
        with open(os.path.join(out, "study.md")) as fh:
            text = fh.read()
        for needle in ("Reference case over time", "predicted against observed", "Sweep", "pictures/fronts.png",
                       "pictures/radial_profile.png", "pictures/sweep.png", "reference/report.md"):
            assert needle in text
        with open(os.path.join(out, "reference", "report.md")) as fh:
            assert "## Pictures" in fh.read()
        for p in ("fronts.png", "radial_profile.png", "outer_weights.png", "sweep.png"):
            assert os.path.getsize(os.path.join(out, "pictures", p)) > 10_000
        for p in ("distances.png", "energy_rate.png"):
            assert os.path.getsize(os.path.join(out, "reference", "pictures", p)) > 10_000
        assert any(n.startswith("snapshot_t") for n in os.listdir(os.path.join(out, "reference", "pictures")))
        assert os.path.isdir(os.path.join(out, "reference", "validation.bp"))
