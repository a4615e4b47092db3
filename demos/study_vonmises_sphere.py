"""Study 4: does training follow the ultra-fast diffusion on the sphere?  von Mises features on S².

The claim under test (Barboni, Peyré, Vialard; MATH.md §3): train a two-layer
network with Variable Projection; as the width M → ∞ and the regularisation
λ → 0 the empirical distribution of the hidden features θ_1..θ_M ∈ Θ = S²
follows the weighted ultra-fast diffusion

    ∂_t ρ = −∇·( σ ∇(σ/ρ) ),

σ the teacher's feature density, provided the kernel
K(θ, θ') = E_x[φ(θ, x) φ(θ', x)] is injective on measures.  Here
φ(θ, x) = exp(κ θ·x) with x uniform on S².  The plane-wave expansion
exp(κt) = Σ_l (2l + 1) i_l(κ) P_l(t) and the Funk–Hecke formula give

    K(θ, θ') = sinh(r)/r  (r = κ|θ + θ'|)  = Σ_l (2l + 1) i_l(κ)² P_l(θ·θ'),

i_l the modified spherical Bessel functions: every degree l has the positive
weight μ_l = i_l(κ)² (the eigenvalue of the integral operator of K against the
uniform probability on degree-l harmonics), so K is injective.  The weights
fall like (κ^l/(2l + 1)!!)², so the series is exact to round-off at degree
L = 15 for κ = 4 and G = F Fᵀ with the (L + 1)² = 256 real spherical harmonics
as columns: a VarPro step costs O(M·256²) instead of an M × M kernel and its
Cholesky factor (ufd_solver/training/vonmises_sphere_pop.py).

What the script does (``ufd_solver.validate.validate`` for every case, with
``MPI.COMM_WORLD``: the PDE, the projections and the distances are parallel,
rank 0 trains):

1. the reference case of ``study_vonmises_sphere.toml`` (M = 2048, λ = 10⁻⁴,
   the Fibonacci-sphere ``quantile`` start): the PDE on an icosphere, the
   training, and the comparison at the common output times (report.md,
   pictures, ParaView);
2. i.i.d. (``init = "random"``) starts, reusing the PDE run: how the
   dissipative dynamics damps the sampling fluctuations of the initial law;
3. quantile starts at M = 1024 for λ ∈ {10⁻³, 10⁻⁴, 10⁻⁵}, same PDE run;
4. where the distance lives, degree by degree (below).

**The distance** is the energy MMD, MMD²(μ, ν) = 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖
in R³, between the particles and the PDE density (integrated by quadrature on
the mesh, no sampling).  Its noise floor, the expected MMD of M i.i.d. draws
from ρ, is (E‖X − X'‖/M)^{1/2}; on the sphere E_Y‖x − Y‖ = 4/3 for every x when
Y is uniform, so E‖X − X'‖ = 4/3 − MMD²(ρ, uniform) ≤ 4/3: the floor starts at
(4/(3M))^{1/2} (uniform ρ₀) and falls slightly as ρ concentrates.

**Degree by degree.** ‖x − y‖ = √(2 − 2x·y) = Σ_l c_l P_l(x·y) with
c_l = −4/((2l − 1)(2l + 3)) (c₀ = 4/3, Σ c_l = 0), so for the signed measure
ν = μ_M − ρ of zero mass

    MMD² = Σ_{l≥1} w_l E_l,   w_l = 4/((2l − 1)(2l + 3)),
    E_l = ∫∫ P_l(x·y) dν dν = (4π/(2l + 1)) Σ_m (μ̂_lm − ρ̂_lm)²,

with μ̂_lm, ρ̂_lm the coefficients on real orthonormal harmonics.  For M i.i.d.
draws from ρ, E[E_l] = (1/M)(1 − (4π/(2l + 1)) Σ_m ρ̂_lm²) (≈ 1/M): the
i.i.d. noise is spread over all degrees with weights w_l ~ 1/l², and the
degrees l ≥ l₀ hold the fraction (1/(2l₀ − 1) + 1/(2l₀ + 1))·(3/4) of the floor².
VarPro drives the degrees the loss resolves, μ_l = i_l(κ)² ≳ λ (linearising
at a uniform σ: degree l relaxes at the rate l(l + 1) μ_l/(μ_l + λ)), and
leaves the others where the initial sampling put them.  So an i.i.d. start
should lose its low-degree noise and keep a plateau made of the undriven
degrees, while the Fibonacci start, whose error sits in high degrees from the
outset, should stay at its initial distance.

Run (full size, about 13 minutes on 2 free cores — 32 min were measured on a shared,
busy machine; ``--small`` is the test size, ~30 s)::

    env/run mpirun -n 2 python3 demos/study_vonmises_sphere.py -o results/study_vonmises_sphere
    env/run python3 demos/study_vonmises_sphere.py --small -o /tmp/s4

Read ``OUTDIR/study.md`` first; ``OUTDIR/reference/report.md`` has the
reference run in detail (pyvista snapshots of ρ_PDE, the particle KDE and σ;
the energy with its predicted rate; ParaView: ``reference/validation.bp``).
What to look at:

* ``pictures/distances_vs_time.png``: the quantile particles stay far below the
  noise floor while MMD(PDE, σ) falls by four decades; the random starts fall
  from the floor to the predicted plateau (stars);
* ``pictures/degree_spectrum.png``: E_l over its i.i.d. expectation, before and
  after — the degrees left of the shaded band's edge (μ_l ≥ λ) are emptied of
  noise, the others keep it;
* ``pictures/lambda.png``: the resolved part of the error (degrees ≤ 8) during
  the nonlinear transient shrinks with λ;
* ``reference/pictures/energy_rate.png``: F(t) against e^{−2κ_P t}.

(docs/study_vonmises_sphere.md has the measured numbers and their reading.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys

import numpy as np
from _study import markdown_pictures, markdown_table, pyplot, series, setup, with_training
from mpi4py import MPI
from scipy import special

from ufd_solver.training.vonmises_sphere_pop import RealHarmonics
from ufd_solver.validate import validate

log = logging.getLogger("ufd_solver.study")

# %% Sizes ------------------------------------------------------------------
# The full study; ``--small`` shrinks everything so the tests run it in seconds
# (icosphere level 3, M = 256, τ = 2⁻⁸, t ∈ [0, 2]).
FULL = {"random_widths": [2048, 512], "sweep_width": 1024, "sweep_lambdas": [1e-3, 1e-4, 1e-5], "overrides": []}
SMALL = {"random_widths": [256], "sweep_width": 256, "sweep_lambdas": [1e-2],
         "overrides": ["mesh.resolution=3", "training.width=256", "training.teacher_width=1024",
                       "training.t_end=2.0", "training.step_size=0.00390625",
                       "training.output_times=[0.25, 0.5, 1.0, 1.5]"]}
LMAX = 20  # degrees of the spectral decomposition of MMD²
LOW = 8  # the "low band" l ≤ 8: the degrees the loss resolves at λ = 10⁻⁴ (i_8(4)² = 8e-6 ≈ λ/12 and below)


def mmd_degree_weights(lmax):
    """w_l = 4/((2l − 1)(2l + 3)), l = 0..lmax (w_0 unused): MMD² = Σ_{l≥1} w_l E_l."""
    ell = np.arange(lmax + 1)
    return 4.0 / ((2 * ell - 1) * (2 * ell + 3))


def undriven_fraction(l0):
    """Share of the i.i.d. floor² in the degrees l ≥ l0: Σ_{l≥l0} w_l/(4/3) (telescoping)."""
    return 0.75 * (1.0 / (2 * l0 - 1) + 1.0 / (2 * l0 + 1))


def linear_damping_plateau(kappa, lam, t, lmax=400):
    """MMD/floor of an i.i.d. start at time t if degree l decays like e^{−l(l+1) r_l t},
    r_l = μ_l/(μ_l + λ) (VarPro linearised at a uniform σ, c ≈ 1): (Σ_l w_l e^{−2l(l+1) r_l t}/(4/3))^½."""
    ell = np.arange(1, lmax + 1)
    mu = special.spherical_in(ell, kappa) ** 2
    w = 4.0 / ((2 * ell - 1) * (2 * ell + 3))
    w[-1] = 1.0 / (2 * lmax - 1) + 1.0 / (2 * lmax + 1)  # the telescoping tail l ≥ lmax, undamped
    return math.sqrt(float((w * np.exp(-2.0 * ell * (ell + 1) * mu / (mu + lam) * t)).sum()) / (4.0 / 3.0))


# %% The study --------------------------------------------------------------
def main(argv=None) -> int:
    _, base, size, out = setup(__doc__, "study_vonmises_sphere", "study_vonmises_sphere.toml", FULL, SMALL, argv)
    comm = MPI.COMM_WORLD
    M, lam = base.training.width, base.training.lam

    # 1. The reference case: PDE + training + full comparison (pictures, ParaView).
    log.info("study: reference case M = %d, λ = %g, quantile start", M, lam)
    ref = validate(base, os.path.join(out, "reference"), comm)
    pde_dir = ref["pde_dir"]
    cases = {("quantile", M, lam): ("reference", ref)}

    # 2. i.i.d. starts on the same PDE run (the PDE depends on neither M, nor λ, nor the start).
    for Mr in size["random_widths"]:
        name = f"random_M{Mr}"
        log.info("study: M = %d, random start", Mr)
        cases[("random", Mr, lam)] = (name, validate(with_training(base, init="random", width=Mr),
                                                     os.path.join(out, name), comm, pde_dir=pde_dir,
                                                     pictures=False))
    # 3. λ: quantile starts of one width, same PDE run.
    Ms = size["sweep_width"]
    for lam_s in size["sweep_lambdas"]:
        if (Ms, lam_s) == (M, lam):
            continue
        name = f"quantile_M{Ms}_lam{lam_s:.0e}"
        log.info("study: M = %d, λ = %g, quantile start", Ms, lam_s)
        cases[("quantile", Ms, lam_s)] = (name, validate(with_training(base, width=Ms, lam=lam_s),
                                                         os.path.join(out, name), comm, pde_dir=pde_dir,
                                                         pictures=False))

    # 4. Degree by degree (rank 0, numpy) and the write-up.
    if comm.rank == 0:
        spectra = {key: degree_spectrum(os.path.join(out, name, "validation.npz"), LMAX)
                   for key, (name, _) in cases.items()}
        report(out, base, size, cases, spectra)
        print(os.path.join(out, "study.md"))
    comm.Barrier()
    return 0


# %% Degree by degree ----------------------------------------------------------
# E_l(t) = (4π/(2l + 1)) Σ_m (μ̂_lm − ρ̂_lm)² between the particles and ρ_PDE at
# every common time, and its i.i.d. expectation.  ρ̂_lm: the P1 density on the
# flat cells, the 3-point edge-midpoint rule (exact for quadratics), points
# snapped radially onto S² — the measure the energy MMD integrates.
def degree_spectrum(npz_path, lmax):
    z = np.load(npz_path)
    Y = RealHarmonics(lmax)
    P, C = z["points"], z["cells"]
    area = 0.5 * np.linalg.norm(np.cross(P[C[:, 1]] - P[C[:, 0]], P[C[:, 2]] - P[C[:, 0]]), axis=1)
    pairs = [(0, 1), (1, 2), (2, 0)]
    mids = np.concatenate([0.5 * (P[C[:, a]] + P[C[:, b]]) for a, b in pairs])
    Yq = Y(mids / np.linalg.norm(mids, axis=1, keepdims=True), grad=False)[0]
    l = Y.lcol
    norm = 4.0 * np.pi / (2 * np.arange(lmax + 1) + 1)
    E, iid = [], []
    M = z["theta"].shape[1]
    for i in range(len(z["times"])):
        rho = z["rho_pde"][i]
        w = np.concatenate([area / 3.0 * 0.5 * (rho[C[:, a]] + rho[C[:, b]]) for a, b in pairs])
        rho_hat = Yq.T @ w
        mu_hat = Y(z["theta"][i], grad=False)[0].mean(axis=0)
        E.append(norm * np.bincount(l, (mu_hat - rho_hat) ** 2, minlength=lmax + 1))
        iid.append((1.0 - norm * np.bincount(l, rho_hat**2, minlength=lmax + 1)) / M)
    return {"times": z["times"].tolist(), "E": np.array(E), "iid": np.array(iid), "M": M}


# %% Reading the results -------------------------------------------------------
def report(out, base, size, cases, spectra):
    tr = base.training
    M, lam = tr.width, tr.lam
    refkey = ("quantile", M, lam)
    ref = cases[refkey][1]
    t = series(ref, "t")
    kP = ref["kappa"]
    mu = special.spherical_in(np.arange(LMAX + 1), tr.kappa) ** 2  # kernel weight of degree l
    l_res = int(np.flatnonzero(mu >= lam)[-1])  # last degree with i_l(κ)² ≥ λ
    wl = mmd_degree_weights(LMAX)
    plateau_cut = math.sqrt(undriven_fraction(l_res + 1))
    plateau_lin = linear_damping_plateau(tr.kappa, lam, t[-1])
    table = {}
    for key, (name, s) in cases.items():
        sp = spectra[key]
        table[key] = {"dir": name, "t": series(s, "t").tolist(), "mmd_pde": series(s, "mmd_particles_pde").tolist(),
                      "floor": series(s, "floor_pde").tolist(), "mmd_sigma": series(s, "mmd_particles_sigma").tolist(),
                      "l1_pde": series(s, "l1_particles_pde").tolist(),
                      "mmd_low": np.sqrt((sp["E"][:, 1:LOW + 1] * wl[1:LOW + 1]).sum(1)).tolist(),
                      "spectrum": {"E": sp["E"].tolist(), "iid": sp["iid"].tolist(),
                                   "ratio_t0": (sp["E"][0] / sp["iid"][0]).tolist(),
                                   "ratio_end": (sp["E"][-1] / sp["iid"][-1]).tolist(),
                                   "mmd2_degrees_le_lmax": (sp["E"][:, 1:] * wl[1:]).sum(1).tolist()}}
    q = table[refkey]
    pde_sigma = series(ref, "mmd_pde_sigma")
    F = series(ref, "energy_pde")
    rates = ref["rates"]
    main_keys = [k for k in table if k == refkey or k[0] == "random"]
    sweep_keys = sorted([k for k in table if k[0] == "quantile" and k[1] == size["sweep_width"]] +
                        ([refkey] if size["sweep_width"] == M else []), key=lambda k: -k[2])
    sweep_keys = list(dict.fromkeys(sweep_keys))
    pics = _pictures(out, table, main_keys, sweep_keys, pde_sigma, t, M, mu, lam, l_res, plateau_lin)

    L = ["# Study 4: von Mises features on the sphere against the ultra-fast diffusion", ""]
    nv = len(np.load(os.path.join(out, "reference", "validation.npz"))["points"])
    L += [f"Θ = S², σ = `{base.teacher.density.to_toml()}`, features exp(κθ·x) with κ = {tr.kappa:g}, x uniform "
          f"on S² (kernel sinh(r)/r, r = κ|θ + θ'|: injective), population data, VarPro, λ = {lam:g}, "
          f"τ = {tr.step_size:g}, t ∈ [0, {tr.t_end:g}], ρ₀ uniform. PDE on the icosphere of level "
          f"{base.mesh.resolution} ({nv} vertices). Distance: energy MMD between the particles and the PDE "
          "density; floor = (E‖X − X'‖/M)^½, the MMD of M i.i.d. draws from ρ_PDE.", ""]
    sup_q = max(q["mmd_pde"])
    L += [f"**Reference case** (M = {M}, Fibonacci-sphere `quantile` start): sup over t of MMD(particles, PDE) = "
          f"**{sup_q:.3g}**, {q['floor'][0] / sup_q:.1f}× below the noise floor {q['floor'][0]:.3g}; it starts at "
          f"{q['mmd_pde'][0]:.3g} (the quantisation of ρ₀) and ends at {q['mmd_pde'][-1]:.3g}, while ρ_PDE moves "
          f"from MMD {pde_sigma[0]:.3g} to {pde_sigma[-1]:.3g} from σ. The part of the distance in the degrees "
          f"l ≤ {LOW} that the loss resolves peaks at {max(q['mmd_low']):.2g} "
          f"(t = {t[int(np.argmax(q['mmd_low']))]:g}). Details: [reference/report.md](reference/report.md).", ""]
    L += ["## Distances over time", "",
          "MMD(particles, PDE) of each run, the noise floor, MMD(PDE, σ), MMD(quantile particles, σ), "
          f"MMD_low: the part of MMD(quantile particles, PDE) in the degrees 1..{LOW} "
          "((Σ_{l≤" + f"{LOW}" + "} w_l E_l)^½, below), the L¹ distance between the particle KDE and ρ_PDE "
          "(dominated by the KDE's own noise), and the PDE's energy F = ½∫σ²/ρ − ½.", ""]
    head = ["t", "MMD(PDE, σ)"] + [f"MMD {k[0]} M={k[1]}" for k in main_keys] + \
        [f"floor M={m}" for m in sorted({k[1] for k in main_keys}, reverse=True)] + \
        ["MMD(quantile, σ)", "MMD_low quantile", "L¹(KDE, PDE) quantile", "F(ρ_PDE)"]
    floors = {k[1]: table[k]["floor"] for k in main_keys}
    rows = []
    for i, ti in enumerate(t):
        rows.append([f"{ti:g}", f"{pde_sigma[i]:.3g}"] + [f"{table[k]['mmd_pde'][i]:.3g}" for k in main_keys]
                    + [f"{floors[m][i]:.3g}" for m in sorted(floors, reverse=True)]
                    + [f"{q['mmd_sigma'][i]:.3g}", f"{q['mmd_low'][i]:.2g}", f"{q['l1_pde'][i]:.3g}", f"{F[i]:.3g}"])
    L += markdown_table(head, rows)

    L += ["## Long-time rate: predicted against observed", "",
          f"Weighted Poincaré constant of σ on the mesh (SLEPc, ∫σ∇u·∇v = κ_P∫σuv): **κ_P = {kP:.5g}**; "
          "linearising ρ = σ(1 + ε) gives F ~ e^{−2κ_P t} and ‖ρ − σ‖ ~ e^{−κ_P t}. Observed: least-squares slopes "
          "on the late window (report.md of the reference run).", ""]
    rrows = []
    for name, v in rates.items():
        if v.get("rate") is None:
            rrows.append([name, f"{v['predicted']:.4g}", "n/a", "", ""])
        else:
            rrows.append([name, f"{v['predicted']:.4g}", f"{v['rate']:.4g}", f"{v['ratio']:.3f}",
                          f"[{v['t_from']:.3g}, {v['t_to']:.3g}]"])
    L += markdown_table(["quantity", "predicted", "observed", "observed/predicted", "window"], rrows)
    L += ["The particle rows stop where the particles reach their plateau (their discretisation), "
          "so their windows are early and short; the PDE rows are the test of the prediction.", ""]

    L += ["## Random (i.i.d.) starts: damping of the sampling noise", ""]
    rrows = []
    for k in main_keys:
        r = table[k]
        rrows.append([k[0], k[1], f"{r['floor'][0]:.3g}", f"{r['mmd_pde'][0]:.3g}",
                      f"{r['mmd_pde'][0] / r['floor'][0]:.2f}", f"{r['mmd_pde'][-1]:.3g}",
                      f"{r['mmd_pde'][-1] / r['floor'][-1]:.3f}"])
    L += markdown_table(["start", "M", "floor t = 0", "MMD t = 0", "MMD/floor t = 0", f"MMD t = {t[-1]:g}",
                         f"MMD/floor t = {t[-1]:g}"], rrows)
    L += [f"Two predictions of the random starts' plateau, from the kernel alone. The weights μ_l = i_l({tr.kappa:g})² "
          f"are ≥ λ = {lam:g} up to degree l = {l_res}: if VarPro removed the i.i.d. noise of exactly those degrees "
          f"and kept the rest, MMD/floor = (Σ_{{l>{l_res}}} w_l / (4/3))^½ = **{plateau_cut:.3f}**. Linearising "
          "VarPro at a uniform σ (c ≈ 1) degree l decays like e^{−l(l+1) t μ_l/(μ_l+λ)}, which at "
          f"t = {t[-1]:g} gives MMD/floor = (Σ_l w_l e^{{−2l(l+1) t μ_l/(μ_l+λ)}} / (4/3))^½ = **{plateau_lin:.3f}**. "
          "Degree by degree (E_l over its i.i.d. expectation; 1 = i.i.d. noise):", ""]
    drow = []
    for ell in range(1, LMAX + 1):
        drow.append([ell, f"{mu[ell]:.2g}", f"{mu[ell] / lam:.2g}"]
                    + [f"{table[k]['spectrum']['ratio_t0'][ell]:.2g} → {table[k]['spectrum']['ratio_end'][ell]:.2g}"
                       for k in main_keys])
    L += markdown_table(["l", "μ_l = i_l(κ)²", "μ_l/λ"] + [f"{k[0]} M={k[1]}: t = 0 → {t[-1]:g}" for k in main_keys],
                        drow)
    share = [table[k]["spectrum"]["mmd2_degrees_le_lmax"][-1] / max(table[k]["mmd_pde"][-1] ** 2, 1e-300)
             for k in main_keys]
    L += [f"(The degrees ≤ {LMAX} carry " + ", ".join(f"{100 * x:.0f}%" for x in share)
          + f" of MMD² at t = {t[-1]:g} for the runs above; the rest is in higher degrees.)", ""]

    if len(sweep_keys) > 1 or sweep_keys[0] != refkey:
        L += [f"## λ: quantile starts, M = {size['sweep_width']}", "",
              f"MMD_low = the part of MMD(particles, PDE) in the degrees l ≤ {LOW}: the error of the dynamics the "
              "loss resolves, free of the quantisation error that the high degrees carry.", ""]
        srow = []
        for k in sweep_keys:
            r = table[k]
            il = int(np.argmax(r["mmd_low"]))
            srow.append([f"{k[2]:g}", k[1], f"{r['mmd_pde'][0]:.3g}", f"{max(r['mmd_pde']):.3g}",
                         f"{r['mmd_pde'][-1]:.3g}", f"{r['mmd_low'][il]:.2g} (t = {r['t'][il]:g})",
                         f"{r['mmd_low'][-1]:.2g}"])
        L += markdown_table(["λ", "M", "MMD t = 0", "sup_t MMD", f"MMD t = {t[-1]:g}", "sup_t MMD_low",
                             f"MMD_low t = {t[-1]:g}"], srow)
    L += markdown_pictures(pics + [os.path.join(out, "reference", "pictures", p)
                                   for p in sorted(os.listdir(os.path.join(out, "reference", "pictures")))], out)
    L += ["Every case's directory holds its `validation.csv`; `reference/pde/` the PDE run "
          "(ParaView: `rho.bp`, ADIOS2VTXReader; `reference/validation.bp` has ρ_PDE, the particle KDE and σ "
          "side by side).", ""]
    with open(os.path.join(out, "study.md"), "w") as fh:
        fh.write("\n".join(L))
    data = {"setup": {"width": M, "lambda": lam, "kappa": tr.kappa, "step_size": tr.step_size,
                      "t_end": tr.t_end, "mesh_level": base.mesh.resolution, "vertices": nv,
                      "sigma": base.teacher.density.to_toml()},
            "times": t.tolist(), "kappa_P": kP, "rates": rates, "mmd_pde_sigma": pde_sigma.tolist(),
            "energy_pde": F.tolist(), "resolved_degree": l_res, "low_band": LOW,
            "predicted_random_plateau": plateau_cut, "predicted_random_plateau_linear": plateau_lin,
            "kernel_weights": mu.tolist(), "mmd_degree_weights": wl.tolist(),
            "cases": [{"init": k[0], "width": k[1], "lambda": k[2], **v} for k, v in table.items()]}
    with open(os.path.join(out, "study.json"), "w") as fh:
        json.dump(data, fh, indent=1)


def _pictures(out, table, main_keys, sweep_keys, pde_sigma, t, M, mu, lam, l_res, plateau):
    plt = pyplot()
    os.makedirs(os.path.join(out, "pictures"), exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    ax.semilogy(t, pde_sigma, "k-", lw=2, label="MMD(PDE, σ)")
    for i, k in enumerate(main_keys):
        r = table[k]
        ax.semilogy(r["t"], r["mmd_pde"], "o-", color=f"C{i}", label=f"MMD(particles, PDE), {k[0]}, M = {k[1]}")
        if k[0] == "random":
            ax.semilogy(r["t"], r["floor"], "--", color=f"C{i}", lw=1, label=f"noise floor, M = {k[1]}")
            ax.semilogy(r["t"][-1:], [plateau * r["floor"][-1]], "*", color=f"C{i}", ms=10,
                        label=f"predicted plateau {plateau:.2f} × floor" if i == 1 else None)
    q = table[main_keys[0]]
    ax.semilogy(q["t"], q["mmd_low"], "s:", color="C0", ms=3, label=f"its degrees l ≤ {LOW} (MMD_low), quantile")
    ax.semilogy(q["t"], q["mmd_sigma"], ":", color="0.5", label=f"MMD(particles, σ), quantile, M = {M}")
    ax.set_xlabel("t")
    ax.set_title("energy MMD on S²: particles against the PDE")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p1 = os.path.join(out, "pictures", "distances_vs_time.png")
    fig.savefig(p1)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4), dpi=110)
    ell = np.arange(1, LMAX + 1)
    for i, k in enumerate(main_keys):
        sp = table[k]["spectrum"]
        axes[0].semilogy(ell, sp["ratio_t0"][1:], "o--", color=f"C{i}", ms=3, lw=0.8,
                         label=f"{k[0]}, M = {k[1]}, t = 0")
        axes[0].semilogy(ell, sp["ratio_end"][1:], "o-", color=f"C{i}", ms=4,
                         label=f"{k[0]}, M = {k[1]}, t = {t[-1]:g}")
    axes[0].axhline(1.0, color="0.4", lw=0.8)
    axes[0].axvspan(0.5, l_res + 0.5, color="C2", alpha=0.08, label=f"i_l(κ)² ≥ λ (l ≤ {l_res})")
    axes[0].set_xlabel("degree l")
    axes[0].set_title("E_l(particles − ρ_PDE) / its i.i.d. expectation")
    axes[0].legend(fontsize=7)
    axes[1].semilogy(ell, mu[1:], "ks-", ms=4, label="μ_l = i_l(κ)²")
    axes[1].axhline(lam, color="C3", lw=1, label=f"λ = {lam:g}")
    axes[1].set_xlabel("degree l")
    axes[1].set_title("kernel weight of degree l")
    axes[1].legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3, which="both")
    fig.tight_layout()
    p2 = os.path.join(out, "pictures", "degree_spectrum.png")
    fig.savefig(p2)
    plt.close(fig)
    pics = [p1, p2]

    if len(sweep_keys) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.2), dpi=110)
        for i, k in enumerate(sweep_keys):
            r = table[k]
            axes[0].semilogy(r["t"], r["mmd_pde"], "o-", color=f"C{i}", ms=3, label=f"λ = {k[2]:g}, M = {k[1]}")
            axes[1].semilogy(r["t"], r["mmd_low"], "o-", color=f"C{i}", ms=3, label=f"λ = {k[2]:g}, M = {k[1]}")
        axes[0].set_title("MMD(particles, PDE), quantile starts")
        axes[1].set_title(f"its part in the degrees l ≤ {LOW} (MMD_low)")
        for a in axes:
            a.set_xlabel("t")
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=8)
        fig.tight_layout()
        p3 = os.path.join(out, "pictures", "lambda.png")
        fig.savefig(p3)
        plt.close(fig)
        pics.append(p3)
    return pics


if __name__ == "__main__":
    sys.exit(main())
