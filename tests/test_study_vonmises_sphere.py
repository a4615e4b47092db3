"""Study 4 (demos/study_vonmises_sphere.py) at test size, serially and on 2 ranks.

The study runs `ufd validate` for a quantile and a random start (von Mises features on
S², population data, VarPro) and writes study.md/study.json; its numbers are checked
against closed forms computed here independently of the package.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import special





def mmd_vonmises_mixture_to_uniform(centers, kappas, weights, lmax=60):
    """Energy MMD between a von Mises mixture on S² and the uniform law, in closed form.

    ‖x − y‖ = Σ_l c_l P_l(x·y) with c_l = −4/((2l − 1)(2l + 3)), and by Funk–Hecke
    ∫∫P_l(x·y) dvM_a(x) dvM_b(y) = r_l(κ_a) r_l(κ_b) P_l(μ_a·μ_b) with r_l = i_l(κ)/i_0(κ), so
    MMD² = Σ_{l≥1} 4/((2l − 1)(2l + 3)) Σ_ab w_a w_b r_l(κ_a) r_l(κ_b) P_l(μ_a·μ_b).
    """
    mu = np.asarray(centers, float)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    w = np.asarray(weights, float) / np.sum(weights)
    ell = np.arange(1, lmax + 1)
    r = np.array([special.spherical_in(ell, k) / special.spherical_in(0, k) for k in kappas])  # (a, l)
    total = 0.0
    for a in range(len(w)):
        for b in range(len(w)):
            total += w[a] * w[b] * np.sum(4.0 / ((2 * ell - 1) * (2 * ell + 3)) * r[a] * r[b]
                                          * special.eval_legendre(ell, mu[a] @ mu[b]))
    return math.sqrt(total)


def fibonacci_mmd_to_uniform(M):
    """MMD between the Fibonacci sphere ((j + ½)/M in z, golden-angle azimuths) and the uniform
    law: E_Y‖x − Y‖ = 4/3 for every x ∈ S² (Y uniform), so MMD² = 4/3 − mean pairwise distance."""
    j = np.arange(M)
    z = 1.0 - 2.0 * (j + 0.5) / M
    psi = 2.0 * np.pi * np.mod(j / ((1 + math.sqrt(5.0)) / 2), 1.0)
    s = np.sqrt(1 - z * z)
    x = np.stack([s * np.cos(psi), s * np.sin(psi), z], axis=1)
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    return math.sqrt(4.0 / 3.0 - d.mean())


def test_study_vonmises_sphere_small(comm, run_study):
    study, data, out = run_study("study_vonmises_sphere")
    cases = {(c["init"], c["width"], c["lambda"]): c for c in data["cases"]}
    M, lam = data["setup"]["width"], data["setup"]["lambda"]
    sweep = study.SMALL["sweep_lambdas"]
    assert M == 256 and lam == 1e-4
    assert set(cases) == ({("quantile", M, lam)} | {("random", m, lam) for m in study.SMALL["random_widths"]}
                          | {("quantile", study.SMALL["sweep_width"], x) for x in sweep})
    q = cases[("quantile", M, lam)]
    t = np.array(data["times"])
    assert t[0] == 0 and t[-1] == data["setup"]["t_end"]

    # the noise floor: E‖X − X'‖ = 4/3 − MMD²(ρ, uniform) ≤ 4/3 on the unit sphere, = 4/3 at the uniform ρ₀
    for c in cases.values():
        floor2M = np.array(c["floor"]) ** 2 * c["width"]
        assert abs(floor2M[0] - 4.0 / 3.0) < 1e-4, floor2M[0]
        assert np.all(floor2M <= 4.0 / 3.0 + 1e-6)
        assert np.all(np.diff(floor2M) < 0)  # ρ concentrates towards σ

    # the PDE starts at the uniform law: MMD(ρ₀, σ) is the closed-form MMD(uniform, σ) (mesh error ~1e-3)
    sig = {"centers": [[0.0, 0.0, 1.0], [0.8660254037844386, 0.0, -0.5]], "kappas": [3.0, 3.0], "weights": [1, 0.5]}
    exact = mmd_vonmises_mixture_to_uniform(**sig)
    assert abs(exact - 0.36280) < 1e-4
    pde_sigma = np.array(data["mmd_pde_sigma"])
    assert abs(pde_sigma[0] - exact) < 5e-3 * exact, (pde_sigma[0], exact)
    # ... and relaxes to σ: the distance decreases at every output time, by 10× over t ∈ [0, 2]
    assert np.all(np.diff(pde_sigma) < 0) and pde_sigma[-1] < 0.1 * pde_sigma[0]

    # quantile start: at t = 0 the distance is the Fibonacci sphere's own, recomputed here
    fib = fibonacci_mmd_to_uniform(M)
    assert abs(q["mmd_pde"][0] - fib) < 0.05 * fib, (q["mmd_pde"][0], fib)
    # the particles follow the PDE: far below the i.i.d. floor at all times, no growth,
    # and much closer to ρ_PDE than to σ while the two differ
    assert max(q["mmd_pde"]) < 0.35 * q["floor"][0]
    assert max(q["mmd_pde"]) < 1.1 * q["mmd_pde"][0]
    early = t <= 1.0
    assert np.all(np.array(q["mmd_pde"])[early] < 0.2 * np.array(q["mmd_sigma"])[early])

    # random start: at the floor first, then the driven degrees (i_l(κ)² ≥ λ, l ≤ 7) lose their noise
    # and the undriven ones keep it: MMD/floor → (Σ_{l>7} w_l/(4/3))^½ = (0.75 (1/15 + 1/17))^½, or,
    # with degree l damped by e^{−l(l+1) t μ_l/(μ_l+λ)}, μ_l = i_l(4)², a sum computed here
    assert data["resolved_degree"] == 7
    plateau = math.sqrt(0.75 * (1 / 15 + 1 / 17))
    assert abs(data["predicted_random_plateau"] - plateau) < 1e-12
    ell = np.arange(1, 2001)
    mu = special.spherical_in(ell, 4.0) ** 2
    damp = np.exp(-2 * ell * (ell + 1) * mu / (mu + lam) * t[-1])
    tail = 1 / 4001 + 1 / 4003  # Σ_{l>2000} w_l (telescoping), undamped there
    lin = math.sqrt((np.sum(4.0 / ((2 * ell - 1) * (2 * ell + 3)) * damp) + tail) / (4 / 3))
    assert abs(data["predicted_random_plateau_linear"] - lin) < 1e-3 * lin
    for m in study.SMALL["random_widths"]:
        r = cases[("random", m, lam)]
        ratio0, ratio1 = r["mmd_pde"][0] / r["floor"][0], r["mmd_pde"][-1] / r["floor"][-1]
        assert 0.4 < ratio0 < 1.6, ratio0
        assert 0.5 * plateau < ratio1 < 1.5 * plateau, (ratio1, plateau)
        assert abs(ratio1 - lin) < 0.25 * lin, (ratio1, lin)
        sp = r["spectrum"]
        e0, e1 = np.array(sp["ratio_t0"][1:]), np.array(sp["ratio_end"][1:])  # degrees 1..LMAX
        assert 0.6 < e0.mean() < 1.4  # i.i.d.: E[E_l] is its expectation, degree by degree
        assert np.all(e1[:7] < 0.05)  # degrees 1..7 damped
        assert e1[13:].mean() > 0.5  # degrees ≥ 14 untouched
        # the degree decomposition accounts for part of MMD², never more than all of it
        assert 0 < sp["mmd2_degrees_le_lmax"][0] <= r["mmd_pde"][0] ** 2 * (1 + 1e-6)

    # λ: a larger λ resolves fewer degrees, and the particles' error in the low degrees grows
    for x in sweep:
        big = cases[("quantile", study.SMALL["sweep_width"], x)]
        assert x > lam and max(big["mmd_low"]) > 1.5 * max(q["mmd_low"]), (big["mmd_low"], q["mmd_low"])
        assert max(big["mmd_pde"]) < 0.35 * big["floor"][0]  # still far below the floor

    # the long-time rate: κ_P of a positive σ, and the PDE's F decays near 2κ_P
    kP = data["kappa_P"]
    assert 0.5 < kP < 2.0  # 2 for the uniform σ; σ's two modes slow the slowest mode down
    fr = data["rates"]["F (PDE, diagnostics)"]
    assert abs(fr["predicted"] - 2 * kP) < 1e-12 and 0.8 < fr["ratio"] < 1.25

    if comm.rank == 0:
        with open(os.path.join(out, "study.md")) as fh:
            text = fh.read()
        assert "noise floor" in text and "κ_P" in text and "pictures/degree_spectrum.png" in text
        for p in ("distances_vs_time.png", "degree_spectrum.png", "lambda.png"):
            assert os.path.getsize(os.path.join(out, "pictures", p)) > 10_000
        snaps = [p for p in os.listdir(os.path.join(out, "reference", "pictures")) if p.startswith("snapshot_t")]
        assert len(snaps) == 3
        assert os.path.isfile(os.path.join(out, "reference", "report.md"))
