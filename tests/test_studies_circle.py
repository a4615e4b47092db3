"""Studies 1 and 2 (demos/study_paper_circle.py, demos/study_vonmises_circle.py) at test size.

The studies run `ufd validate` for several cases and write study.md/study.json;
here they run in-process (serially and on 2 ranks) and their numbers are
checked against what the mathematics says must hold.
"""

from __future__ import annotations

import math
import os

import numpy as np







def test_study_vonmises_circle_small(comm, run_study):
    study, data, out = run_study("study_vonmises_circle")
    cases = {(c["width"], c["lambda"], c["init"]): c for c in data["cases"]}
    widths, lambdas = study.SMALL["widths"], study.SMALL["lambdas"]
    assert set(cases) == {(M, lam, "quantile") for M in widths for lam in lambdas} | {
        (M, min(lambdas), "random") for M in study.SMALL["random_widths"]}
    for c in cases.values():
        # the noise floor (E|X − X'|/M)^½: with 2|sin(t/2)| = 4/π − (8/π)Σ_n cos(nt)/(4n² − 1),
        # E|X − X'| = 4/π − (8/π)Σ_{n≥1} |ρ̂_n|²/(4n² − 1) ≤ 4/π (ρ̂_n = ∫ρe^{−inθ}), = for uniform ρ
        for f in c["floor"]:
            assert 0 < f * f <= 4 / math.pi / c["width"] * (1 + 1e-9)
    for lam in lambdas:
        # quantile starts: far below the i.i.d. floor, and closer to the PDE as M grows
        for M in widths:
            assert cases[(M, lam, "quantile")]["sup"] < 0.5 * cases[(M, lam, "quantile")]["floor"][0]
        assert data["slope_in_M"][f"{lam:g}"] < -0.5
    for M in study.SMALL["random_widths"]:
        r = cases[(M, min(lambdas), "random")]
        # an i.i.d. start sits at the floor; the dissipative flow damps its fluctuations
        assert 0.5 < r["mmd"][0] / r["floor"][0] < 2.0
        assert r["mmd"][-1] < 0.7 * r["mmd"][0]
    if comm.rank == 0:
        text = open(os.path.join(out, "study.md")).read()
        assert "slope in M" in text and "pictures/sweep.png" in text
        for p in ("sweep.png", "random_starts.png"):
            assert os.path.getsize(os.path.join(out, "pictures", p)) > 10_000
        assert os.path.isfile(os.path.join(out, "reference", "report.md"))


def test_study_paper_circle_small(comm, run_study):
    study, data, out = run_study("study_paper_circle")
    cases = {(c["gamma"], c["lambda"]): c for c in data["cases"]}
    assert set(cases) == {(g, lam) for g in study.SMALL["gammas"] for lam in study.SMALL["lambdas"]}
    for (g, lam), c in cases.items():
        # the PDE relaxes to σ: its distance to σ decreases at every output time
        assert np.all(np.diff(c["pde_sigma"]) < 0)
        # the particles are closer to the PDE than to σ once training has started
        assert all(a < b for a, b in zip(c["mmd_pde"][1:], c["mmd_sigma"][1:]))
        # a weighted Poincaré constant of a positive σ on the unit circle, near the uniform value 1
        assert 0.5 < c["kappa"] < 1.5
    for g in study.SMALL["gammas"]:
        # σ's Fourier moduli against the closed form: ∫e^{−ikθ}/(a − b cos θ)dθ = 2π r^k/√(a² − b²),
        # r = (a − √(a² − b²))/b, with 1 + γ sin²(θ/2) = a − b cos θ, a = 1 + γ/2, b = γ/2
        a, b = 1 + g / 2, g / 2
        r = (a - math.sqrt(a * a - b * b)) / b
        k = np.array(list(study.MODES))
        exact = np.abs(r**k * (1 + 0.5 * np.exp(-0.4j * np.pi * k))) / 1.5
        np.testing.assert_allclose(data["fourier_modes"][str(g)]["sigma"], exact, rtol=2e-3, atol=1e-4)
        # the network's signed measure c·ρ is pulled to σ on the modes the ReLU kernel sees
        # (k = 1 and even k), not on the odd k ≥ 3: its error is smaller on the seen ones
        m = data["fourier_modes"][str(g)]
        err = {vis: max(abs(m["c_particles"][k - 1] - m["sigma"][k - 1]) for k in study.MODES
                        if (k in study.VISIBLE) == vis) for vis in (True, False)}
        assert err[True] < 0.75 * err[False], err
    if comm.rank == 0:
        for g in study.SMALL["gammas"]:
            assert os.path.isfile(os.path.join(out, f"gamma{g}", "report.md"))
        assert os.path.getsize(os.path.join(out, "pictures", "mmd_by_gamma.png")) > 10_000
