"""Study 3: radial features on the 2D torus (the paper's Appendix B) against a periodic PDE solve.

The case (Barboni, Peyré, Vialard, Appendix B; MATH.md §4).  Features live on
the flat torus Θ = [−2, 2)², data x ~ N(0, I₂), and

    φ(θ, x) = (2/s²) exp(−‖θ − x‖/s),   s = 0.5,

with ‖θ − x‖ the distance to the nearest periodic image of x.  The teacher's
features have the density σ = ½ N((−1, 0), 0.25² I) + ½ N((1, 1), 0.25² I)
(wrapped; the ``paper-torus`` preset), the students start uniform.  The kernel

    K(θ, θ') = E_x[φ(θ, x) φ(θ', x)] = ∫ φ(θ − x) φ(θ' − x) p(x) dx

(p the wrapped Gaussian law of the data) has no closed form, so expectations
are means over N sampled data points.  It is injective on measures: p > 0, and
the 2D Fourier transform of e^{−‖u‖/s} is 2πs²/(1 + s²|ω|²)^{3/2} > 0.  So the
theory applies: as M → ∞ and λ → 0, VarPro training moves the feature density
ρ by the weighted ultra-fast diffusion (MATH.md §3)

    ∂_t ρ = −∇·( σ ∇(σ/ρ) )        on the periodic square, ρ(0) = 1/16.

The paper shows the particles only; here the PDE is solved on the same torus
(P1 elements, periodic through dolfinx_mpc, adaptive BDF2) and the two are
compared at common times (``ufd_solver.validate.validate``).

What the PDE does here, and what to look for.  σ spans fourteen decades: 1.27
at the modes, ≈ 10⁻¹⁴ at the points of the torus farthest from them.  The
flux σ∇(σ/ρ) carries the factor σ twice, so where ρ ≫ σ nothing moves: the
"ultra-fast" diffusion is fast where ρ is small *compared with σ* and frozen
where σ is small compared with ρ.  Starting from the uniform density the modes
fill up within t ≈ 0.05 from a disc around each centre, and the edge of that
disc — a *front*, inside which ρ ∝ σ and outside which ρ is still the initial
1/16 — then creeps outward ever more slowly as σ at the front decays.  On the
particle side the same mechanism reads c_j → (σ/ρ)(θ_j) ≈ 0 far from the modes,
and a feature moves with velocity −(c_j/λ) E_x[(f − y) ∇_θφ(θ_j, x)] ∝ c_j:
the features far from the teacher's modes never move.  Look at
``pictures/fronts.png`` (the particles on top of log ρ_PDE) and
``pictures/radial_profile.png`` (how much mass lies within distance r of a
mode: PDE, particles and σ).

What the study finds (numbers in docs/study_radial_torus.md): training
reproduces the PDE's picture — fronts, a frozen far field, c_j ≈ σ/ρ inside
the fronts — and stays within the i.i.d. noise floor of the PDE density until
t ≈ 0.7, while both are still far from σ.  But the particles' front runs
ahead of the PDE's: at the front σ/ρ falls by three decades within a few tenths,
and the outer weights c_j, which the kernel only resolves to its own scale,
fall far more gently (``pictures/outer_weights.png``), so the first "frozen"
features already move.  The gap grows with t, does not shrink with M
(128–512) or N, and shrinks only slowly as λ decreases: it is the sharp front,
not sampling noise.

The linearised long-time rate (MATH.md §3) does not describe this run.  The
weighted Poincaré constant κ₁ of σ is tiny (≈ 0.004: moving mass from one mode
to the other through the empty region between them), but σ and ρ₀ are both
invariant under the point reflection θ ↦ (0, 1) − θ that swaps the modes, so
ρ − σ never contains that mode.  The next eigenvalues are ≈ 1/0.25² = 16 (the
Ornstein–Uhlenbeck gap of each Gaussian mode), which predicts F ~ e^{−32t} —
but only once ρ ≈ σ everywhere, which the frozen far field postpones far
beyond any practical time.  The energy F = ½∫σ²/ρ − ½ = ½∫(ρ − σ)²/ρ is then
dominated by the mass m_far still outside the fronts (it contributes about
½ m_far) and decays only as fast as the fronts advance: slower and slower.

What the script does:

1. the reference case of ``study_radial_torus.toml`` (M = 512, N = 2048,
   λ = 10⁻⁴, quantile start, τ = 2⁻¹¹, t ∈ [0, 1]; PDE on a 48 × 48 periodic
   mesh): ``validate`` runs the PDE, the training and the comparison
   (``reference/report.md``, its pictures and ParaView ``validation.bp``);
2. a sweep reusing that PDE run: M ∈ {128, 256} at the reference λ, and
   λ ∈ {10⁻², 10⁻³} at M = 256 (same data, teacher and lattice rule);
3. the radial profile: the fraction of mass within distance r of the nearest
   mode, for the PDE (quadrature of the P1 density), the particles (a plain
   count, no smoothing) and σ, with the Kolmogorov–Smirnov distance
   sup_r |F_particles(r) − F_PDE(r)| between the first two;
4. the outer weights c_j of the trained network against σ/ρ_PDE at the
   particles, binned by the distance to the nearest mode.

The distances are the energy MMD with the periodic (flat geodesic) distance,
MMD² = 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖, the densities integrated by
quadrature.  Its noise floor (E‖X − X'‖/M)^{1/2} is the MMD that M i.i.d. draws
of the density would have; at t = 0 (uniform ρ) E‖X − X'‖ = L(√2 + asinh 1)/6
≈ 1.5304 for L = 4.  The quantile (Fibonacci lattice) start sits far below it.

Run (full size; ``--small`` is the test size, ≈ 30 s)::

    env/run mpirun -n 2 python3 demos/study_radial_torus.py -o results/study_radial_torus
    env/run python3 demos/study_radial_torus.py --small -o /tmp/s3

Read ``OUTDIR/study.md`` first; ``OUTDIR/reference/report.md`` has the
reference run in detail.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys

import numpy as np
from _study import (
    markdown_pictures,
    markdown_table,
    pyplot,
    series,
    setup,
    with_training,
)

from ufd_solver.validate import validate

log = logging.getLogger("ufd_solver.study")

# %% Sizes ------------------------------------------------------------------
# FULL: the reference case of the toml plus four sweep cases.  SMALL: a 32 × 32
# mesh, 128 students, N = 512, t ∈ [0, 0.1] (about 30 s).
# The sweep cases are compared at fewer times (``sweep_times`` and t_end): the
# comparison's density–density energy sums cost as much as a training.
FULL = {"widths": [128, 256], "lambdas": [1e-2, 1e-3], "sweep_width": 256, "sweep_times": [0.05, 0.2, 0.5],
        "overrides": []}
SMALL = {"widths": [64], "lambdas": [1e-2], "sweep_width": 64, "sweep_times": [0.02, 0.05],
         "overrides": ["mesh.resolution=32", "training.width=128", "training.samples=512",
                       "training.teacher_width=4096", "training.t_end=0.1",
                       "training.output_times=[0.01, 0.02, 0.05]"]}

# The centres of the two modes of the `paper-torus` preset and the radius of
# the "captured mass" column: three standard deviations of a mode, which hold
# 1 − e^{−9/2} = 98.9 % of σ (and 2π·0.75²/16 = 22 % of the uniform start).
MODES = np.array([[-1.0, 0.0], [1.0, 1.0]])
RADIUS = 0.75
FRONT_TIMES = 4  # panels of pictures/fronts.png


def case_name(M, lam):
    return f"M{M}_lam{lam:.0e}"


# %% The study --------------------------------------------------------------
def main(argv=None) -> int:
    comm, base, size, out = setup(__doc__, "study_radial_torus", "study_radial_torus.toml", FULL, SMALL, argv)
    tr = base.training
    M_ref, lam_ref = tr.width, tr.lam

    # 1. The reference case: PDE + training + full comparison (pictures, ParaView).
    log.info("study: reference case M = %d, λ = %g", M_ref, lam_ref)
    ref = validate(base, os.path.join(out, "reference"), comm)
    pde_dir = ref["pde_dir"]

    # 2. The sweep, one PDE run for all (the PDE depends on neither M nor λ).
    cases = [(M, lam_ref) for M in size["widths"]] + [(size["sweep_width"], lam) for lam in size["lambdas"]]
    if lam_ref not in size["lambdas"] and size["sweep_width"] not in size["widths"] + [M_ref]:
        cases.append((size["sweep_width"], lam_ref))
    results = {(M_ref, lam_ref): ref}
    for M, lam in cases:
        if (M, lam) in results:
            continue
        log.info("study: M = %d, λ = %g (PDE reused)", M, lam)
        times = tuple(sorted({0.0, tr.t_end, *size["sweep_times"]}))
        cfg = with_training(base, width=M, lam=lam, output_times=times)
        results[(M, lam)] = validate(cfg, os.path.join(out, case_name(M, lam)), comm, pde_dir=pde_dir,
                                     pictures=False)
    if comm.rank == 0:
        report(out, base, ref, results, size)
        print(os.path.join(out, "study.md"))
    comm.Barrier()
    return 0


# %% Radial profiles -----------------------------------------------------------
# F(r) = the fraction of mass within (periodic) distance r of the nearest mode.
# For the PDE density, ρ is P1 on the triangles of the mesh: the three-point
# rule at the barycentric points (⅔, ⅙, ⅙) (exact for quadratics) gives points
# and masses; for the particles F is a count; for σ the same quadrature of σ.
# Both are bandwidth-free, unlike the KDE of report.md, whose Scott bandwidth
# (≈ 0.4 here) is wider than σ's modes.
_BARY = np.array([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])


def mode_distance(x, L):
    """Distance of points x (n × 2) to the nearest periodic image of the nearest mode."""
    d = x[:, None, :] - MODES[None, :, :]
    d -= L * np.round(d / L)
    return np.sqrt((d * d).sum(-1)).min(axis=1)


def density_radii(points, cells, values, L):
    """Distances to the nearest mode and normalised masses of a P1 density (quadrature)."""
    X = points[cells][:, :, :2]
    e1, e2 = X[:, 1] - X[:, 0], X[:, 2] - X[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    qp = np.einsum("qk,nkd->nqd", _BARY, X).reshape(-1, 2)
    w = (area[:, None] / 3.0 * (values[cells] @ _BARY.T)).ravel()
    return mode_distance(qp, L), w / w.sum()


def cdf(r_grid, dist, weights=None):
    """F(r) = Σ weights over dist ≤ r, on the grid (weights default 1/n)."""
    order = np.argsort(dist)
    w = np.full(dist.size, 1.0 / dist.size) if weights is None else weights
    cum = np.concatenate([[0.0], np.cumsum(w[order])])
    return cum[np.searchsorted(dist[order], r_grid, side="right")]


def radial_profiles(case_dir, L, n_grid=4001):
    """Radial CDFs of ρ_PDE, the particles and σ at every common time of a validation."""
    z = np.load(os.path.join(case_dir, "validation.npz"))
    pts, cells = z["points"], z["cells"]
    ds, ws = density_radii(pts, cells, z["sigma"], L)
    r = np.linspace(0.0, float(ds.max()) * (1 + 1e-9), n_grid)
    prof = {"r": r, "times": z["times"], "sigma": cdf(r, ds, ws), "pde": [], "particles": [], "ks": []}
    for i in range(len(z["times"])):
        d, w = density_radii(pts, cells, z["rho_pde"][i], L)
        fp = cdf(r, d, w)
        fq = cdf(r, mode_distance(z["theta"][i][:, :2], L))
        prof["pde"].append(fp)
        prof["particles"].append(fq)
        prof["ks"].append(float(np.abs(fq - fp).max()))
    return prof


# %% Outer weights against σ/ρ ---------------------------------------------------
# The λ → 0 limit rests on c_j → (σ/ρ)(θ_j) (MATH.md §3): a feature then moves
# with velocity c∇c = ½∇(σ/ρ)².  particles.npz holds c at the output times; the
# PDE's σ/ρ at the particles is the P1 interpolant of σ/ρ_PDE.  Medians over
# bins of the distance r to the nearest mode show where the weights leave σ/ρ.
R_BINS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.05, 1.25, 3.0)


def outer_weights(case_dir, L):
    """Per common time: distances r_j, outer weights c_j and σ/ρ_PDE at the particles."""
    import matplotlib.tri as mtri

    z = np.load(os.path.join(case_dir, "validation.npz"))
    with np.load(os.path.join(case_dir, "particles", "particles.npz")) as p:
        pt, pc = p["times"], p["c"]
    tri = mtri.Triangulation(z["points"][:, 0], z["points"][:, 1], z["cells"])
    out = []
    for i, t in enumerate(z["times"]):
        th = z["theta"][i]
        ratio = mtri.LinearTriInterpolator(tri, z["sigma"] / z["rho_pde"][i])(th[:, 0], th[:, 1])
        out.append({"t": float(t), "r": mode_distance(th, L), "c": pc[int(np.argmin(np.abs(pt - t)))],
                    "ratio": np.ma.filled(ratio, np.nan)})
    return out


def binned_weights(w):
    """Rows (bin, count, median c, median σ/ρ_PDE) over the R_BINS of one time."""
    rows = []
    for lo, hi in itertools.pairwise(R_BINS):
        sel = (w["r"] >= lo) & (w["r"] < hi)
        if sel.any():
            rows.append((lo, hi, int(sel.sum()), float(np.median(w["c"][sel])), float(np.nanmedian(w["ratio"][sel]))))
    return rows


# %% Reading the results -------------------------------------------------------
# The reference table: the distances of validation.csv at every common time,
# the KS distance of the radial profiles, the captured mass F(0.75) of the PDE,
# the particles and σ, and the local decay rate −Δ log F/Δt of the PDE energy
# between output times (the linearisation predicts 2κ at late times).
def report(out, base, ref, results, size):
    tr = base.training
    L = base.mesh.length
    refdir = os.path.join(out, "reference")
    prof = radial_profiles(refdir, L)
    i_r = int(np.searchsorted(prof["r"], RADIUS))
    t = series(ref, "t")
    col = {k: series(ref, k) for k in ref["columns"]}
    F = col["energy_pde"]
    local = [None] + [float(-(math.log(F[k]) - math.log(F[k - 1])) / (t[k] - t[k - 1])) for k in range(1, len(t))]
    late = t >= 0.1 * t[-1]
    power = float(-np.polyfit(np.log(t[late]), np.log(F[late]), 1)[0]) if late.sum() >= 2 else None
    kappas = ref["kappas"]
    table = {}
    for (M, lam), s in results.items():
        d = series(s, "mmd_particles_pde")
        p = prof if s is ref else radial_profiles(os.path.join(out, case_name(M, lam)), L)
        j_r = int(np.searchsorted(p["r"], RADIUS))
        table[(M, lam)] = {"t": series(s, "t").tolist(), "mmd": d.tolist(), "floor": series(s, "floor_pde").tolist(),
                           "mmd_sigma": series(s, "mmd_particles_sigma").tolist(),
                           "sup": float(d[1:].max()) if d.size > 1 else float(d.max()), "last": float(d[-1]),
                           "ks": p["ks"], "sup_ks": float(max(p["ks"][1:] or p["ks"])),
                           "within_particles": [float(f[j_r]) for f in p["particles"]],
                           "within_pde": [float(f[j_r]) for f in p["pde"]]}
    weights = outer_weights(refdir, L)
    w_idx = sorted({int(np.argmin(np.abs(t - 0.05))), len(t) - 1})  # the early front and t_end
    pics = _pictures(out, base, prof, table, weights, size)

    mass = {"pde": [float(f[i_r]) for f in prof["pde"]], "particles": [float(f[i_r]) for f in prof["particles"]],
            "sigma": float(prof["sigma"][i_r])}
    sup = table[(tr.width, tr.lam)]["sup"]
    k_sup = int(np.argmax(col["mmd_particles_pde"][1:])) + 1 if len(t) > 1 else 0
    below = [float(x) for x, a, b in zip(t, col["mmd_particles_pde"], col["floor_pde"]) if a > b]
    Lm = ["# Study 3: radial features on the 2D torus (Appendix B) against the PDE", ""]
    Lm += [(f"Θ = [−{L / 2:g}, {L / 2:g})² periodic, x ~ N(0, I₂), "
            "φ(θ, x) = (2/s²)exp(−‖θ − x‖/s) with "
           f"s = {tr.scale:g}, σ = `{base.teacher.density.to_toml()}` (modes at (−1, 0) and (1, 1)), uniform "
           f"start. Training: sampled data (N = {tr.samples}), VarPro, λ = {tr.lam:g}, M = {tr.width} "
           f"({tr.init} start), M* = {tr.teacher_width}, τ = {tr.step_size:g}, t ∈ [0, {tr.t_end:g}], seed "
           f"{tr.seed}. PDE: ∂_t ρ = −∇·(σ∇(σ/ρ)) on a {base.mesh.resolution} × {base.mesh.resolution} "
            "periodic "
           "P1 mesh (dolfinx_mpc), adaptive BDF2. Details of the reference run: "
           "[reference/report.md](reference/report.md)."), ""]
    Lm += ["## Reference case over time", "",
           ("MMD: energy MMD with the periodic distance; floor = (E‖X − X'‖/M)^½ under ρ_PDE, the MMD of "
           "M i.i.d. draws; ratio = MMD(part, PDE)/floor. KS: sup_r |F_particles(r) − F_PDE(r)|, F(r) the "
           f"fraction of mass within distance r of the nearest mode. 'within {RADIUS:g}': F({RADIUS:g}) "
           f"(σ: {mass['sigma']:.3f}). −dlogF/dt: local decay rate of the PDE energy F since the previous "
           "time."), ""]
    rows = []
    for k in range(len(t)):
        rows.append([f"{t[k]:g}", f"{col['mmd_particles_pde'][k]:.3g}", f"{col['floor_pde'][k]:.3g}",
                     f"{col['mmd_particles_pde'][k] / col['floor_pde'][k]:.2f}",
                     f"{col['mmd_particles_sigma'][k]:.3g}", f"{col['mmd_pde_sigma'][k]:.3g}",
                     f"{prof['ks'][k]:.3f}", f"{mass['pde'][k]:.3f}", f"{mass['particles'][k]:.3f}",
                     f"{F[k]:.4g}", "" if local[k] is None else f"{local[k]:.3g}"])
    Lm += markdown_table(["t", "MMD(part, PDE)", "floor", "ratio", "MMD(part, σ)", "MMD(PDE, σ)", "KS radial",
                          f"within {RADIUS:g}: PDE", "particles", "F(ρ_PDE)", "−dlogF/dt"], rows)
    Lm += [f"sup over t > 0 of MMD(particles, PDE) = **{sup:.3g}** (t = {t[k_sup]:g}), "
           f"{sup / col['floor_pde'][k_sup]:.2f} × the i.i.d. noise floor there"
           + (f"; above the floor from t = {below[0]:g} on" if below else "; below the floor at every time")
           + f". At t_end MMD(particles, σ) = {col['mmd_particles_sigma'][-1]:.3g} and MMD(PDE, σ) = "
           f"{col['mmd_pde_sigma'][-1]:.3g}: both are still far from σ, the particles somewhat less.", ""]
    Lm += ["## Where the particles leave the PDE: the outer weights at the front", "",
           ("The limit rests on c_j → (σ/ρ)(θ_j); a feature then moves with velocity c∇c. Medians of the "
           "trained outer weights c_j and of σ/ρ_PDE at the same particles, by distance r to the nearest mode:"),
           ""]
    for i in w_idx:
        w = weights[i]
        Lm += [f"t = {w['t']:g}:", ""]
        Lm += markdown_table(["r", "particles", "median c_j", "median σ/ρ_PDE"],
                             [[f"[{lo:g}, {hi:g})", n, f"{c:.3g}", f"{q:.3g}"]
                              for lo, hi, n, c, q in binned_weights(w)])
    inner = [(c, q) for lo, hi, n, c, q in binned_weights(weights[-1]) if hi <= 0.5]
    ratio_c = float(np.mean([q / c for c, q in inner])) if inner else float("nan")
    Lm += [("Inside the fronts c_j follows σ/ρ: at t_end σ/ρ_PDE exceeds c_j by the factor "
           f"{ratio_c:.2f} for r < 0.5, and the particles hold {mass['particles'][-1] / mass['pde'][-1]:.2f}× "
           f"the PDE's mass within {RADIUS:g} (c_j = σ/ρ of the particles' own density would make the two "
           "factors equal). Just outside the "
           "fronts σ/ρ_PDE falls by orders of magnitude within a few tenths while c_j falls far more gently "
           "(and overshoots below zero), so the first 'frozen' features already move and the particles' "
           "front runs ahead of the PDE's (the radial profiles). Far out, |c_j| ~ 10⁻² and the features stay "
           "put."), ""]
    Lm += ["## Long-time rate: predicted against observed", "",
           f"Weighted Poincaré eigenvalues of σ on the mesh (SLEPc): κ₁ = {kappas[0]:.4g}, then "
           + ", ".join(f"{k:.4g}" for k in kappas[1:]) + ". κ₁ belongs to the mode that moves mass between "
           "the two modes of σ; σ and ρ₀ are both symmetric under θ ↦ (0, 1) − θ, which swaps the modes, so "
           "ρ − σ never contains it. The next eigenvalues are close to 1/std² = 16, the Ornstein–Uhlenbeck gap "
           "of a Gaussian mode of std 0.25: the linearisation predicts F ~ e^(−2κt) with "
           f"2κ ≈ {2 * kappas[1]:.3g} "
           "once ρ ≈ σ everywhere.", "",
           "Observed: F decays slower and slower (−dlogF/dt in the table falls from "
           f"{local[1]:.3g} to {local[-1]:.3g})"
           + (f"; on t ∈ [{t[late][0]:g}, {t[-1]:g}] it behaves like t^(−{power:.2f})" if power is not None else "")
           + ". The mass beyond the fronts is still at the initial density, where ρ/σ reaches 10¹², and alone "
           "keeps F ≥ ½ m_far (m_far its mass): the linear regime is out of reach, the decay is set by the "
           "advance of the fronts. (validate's fitted rates, against κ₁: "
           "[reference/report.md](reference/report.md).)", ""]
    Lm += ["## Sweep (one PDE run)", "",
           ("MMD(particles, PDE): sup over t > 0 and value at t_end; the noise floor at t_end; KS of the radial "
           f"profiles (sup over t > 0) and F({RADIUS:g}) at t_end of the particles (PDE: "
           f"{mass['pde'][-1]:.3f}). Same data, teacher and initial lattice rule in every case; the sweep cases "
           f"are compared at t ∈ {{0, {', '.join(f'{x:g}' for x in size['sweep_times'])}, {tr.t_end:g}}}."), ""]
    rows = []
    for (M, lam), r in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rows.append([M, f"{lam:g}", f"{r['sup']:.3g}", f"{r['last']:.3g}", f"{r['floor'][-1]:.3g}",
                     f"{r['last'] / r['floor'][-1]:.2f}", f"{r['mmd_sigma'][-1]:.3g}", f"{r['sup_ks']:.3f}",
                     f"{r['within_particles'][-1]:.3f}"])
    Lm += markdown_table(["M", "λ", "sup_t MMD(part, PDE)", "MMD(part, PDE) t_end", "floor t_end", "ratio t_end",
                          "MMD(part, σ) t_end", "sup_t KS radial", f"within {RADIUS:g} t_end"], rows)
    Lm += markdown_pictures(pics + [os.path.join(refdir, "pictures", p) for p in ("distances.png", "energy_rate.png")],
                            out)
    Lm += [("`reference/pictures/snapshot_t*.png` show ρ_PDE, the particle KDE and σ side by side (the KDE's "
           "Scott bandwidth, ≈ 0.4, is wider than σ's modes: compare densities with the MMD and the radial "
           "profiles, not with the KDE's L¹). Every case's directory holds its `validation.csv`; "
           "`reference/pde/` the PDE run (ParaView: `rho.bp`, ADIOS2VTXReader; `reference/validation.bp` has "
           "ρ_PDE, the KDE and σ)."), ""]
    with open(os.path.join(out, "study.md"), "w") as fh:
        fh.write("\n".join(Lm))
    data = {"reference": {"width": tr.width, "lambda": tr.lam, "samples": tr.samples, "teacher_width": tr.teacher_width,
                          "step_size": tr.step_size, "resolution": base.mesh.resolution, "times": t.tolist(),
                          **{k: col[k].tolist() for k in ref["columns"] if k != "t"},
                          "ks_radial": prof["ks"], "radius": RADIUS, "mass_within": mass,
                          "local_rate_F": local, "power_F": power, "kappas": kappas, "rates": ref["rates"],
                          "sup_mmd_particles_pde": sup,
                          "outer_weights": [{"t": weights[i]["t"], "bins": binned_weights(weights[i])} for i in w_idx]},
            "cases": [{"width": M, "lambda": lam, **v} for (M, lam), v in table.items()]}
    with open(os.path.join(out, "study.json"), "w") as fh:
        json.dump(data, fh, indent=1)


# %% Pictures -------------------------------------------------------------------
# fronts.png: log10 ρ_PDE with the particles on top at a few times — inside the
# fronts the particles have gathered on σ's modes, outside they still sit on
# their initial lattice, where the PDE keeps the initial density.
# radial_profile.png: F(r) for the PDE, the particles and σ at the same times.
# outer_weights.png: c_j and σ/ρ_PDE at the particles against r.
# sweep.png: MMD(particles, PDE) against t for every case, floors dashed.
def _pictures(out, base, prof, table, weights, size):
    import matplotlib.tri as mtri

    plt = pyplot()
    pics = os.path.join(out, "pictures")
    os.makedirs(pics, exist_ok=True)
    L = base.mesh.length
    z = np.load(os.path.join(out, "reference", "validation.npz"))
    T = len(z["times"])
    idx = sorted(set(np.linspace(1 if T > 1 else 0, T - 1, min(FRONT_TIMES, T)).round().astype(int).tolist()))
    tri = mtri.Triangulation(z["points"][:, 0], z["points"][:, 1], z["cells"])
    lo = math.log10(max(float(z["sigma"].min()), 1e-16))
    fig, axes = plt.subplots(1, len(idx) + 1, figsize=(3.9 * (len(idx) + 1), 4.0), dpi=110)
    for ax, i in zip(axes, idx):
        im = ax.tripcolor(tri, np.log10(np.maximum(z["rho_pde"][i], 1e-16)), shading="gouraud", cmap="viridis",
                          vmin=-6, vmax=0.2)
        th = z["theta"][i]
        ax.plot(th[:, 0], th[:, 1], ".", color="w", ms=1.6, alpha=0.8)
        ax.set_title(f"log₁₀ ρ_PDE and the particles, t = {z['times'][i]:.3g}", fontsize=9)
    im = axes[-1].tripcolor(tri, np.log10(np.maximum(z["sigma"], 1e-16)), shading="gouraud", cmap="viridis",
                            vmin=-6, vmax=0.2)
    axes[-1].set_title(f"log₁₀ σ (min {lo:.0f}; colours clipped at −6)", fontsize=9)
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(-L / 2, L / 2)
        ax.set_ylim(-L / 2, L / 2)
    fig.colorbar(im, ax=list(axes), shrink=0.8, pad=0.01)
    p1 = os.path.join(pics, "fronts.png")
    fig.savefig(p1, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(idx), figsize=(4.2 * len(idx), 3.6), dpi=110, squeeze=False)
    for ax, i in zip(axes[0], idx):
        ax.plot(prof["r"], prof["sigma"], "k--", lw=1.2, label="σ")
        ax.plot(prof["r"], prof["pde"][i], "C0", lw=2, label="ρ_PDE")
        ax.plot(prof["r"], prof["particles"][i], "C3", lw=1, label=f"particles (M = {base.training.width})")
        ax.plot(prof["r"], prof["pde"][0], color="0.6", lw=0.8, ls=":", label="t = 0 (uniform)")
        ax.axvline(RADIUS, color="0.8", lw=0.8)
        ax.set_title(f"t = {prof['times'][i]:.3g}: KS = {prof['ks'][i]:.3f}", fontsize=9)
        ax.set_xlabel("distance r to the nearest mode")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("fraction of mass within r")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    p2 = os.path.join(pics, "radial_profile.png")
    fig.savefig(p2)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(idx), figsize=(4.2 * len(idx), 3.6), dpi=110, squeeze=False)
    for ax, i in zip(axes[0], idx):
        w = weights[i]
        ax.plot(w["r"], w["ratio"], ".", color="C0", ms=2.5, label="σ/ρ_PDE at θ_j")
        ax.plot(w["r"], w["c"], ".", color="C3", ms=2.5, label="trained c_j")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(f"t = {w['t']:.3g}", fontsize=9)
        ax.set_xlabel("distance r to the nearest mode")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("outer weight (symlog, linear below 1e-3)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    p3 = os.path.join(pics, "outer_weights.png")
    fig.savefig(p3)
    plt.close(fig)

    lam_ref, Ms = base.training.lam, size["sweep_width"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    groups = ([(M, lam_ref) for M in sorted({M for M, lam in table if lam == lam_ref})],
              [(Ms, lam) for lam in sorted({lam for M, lam in table if M == Ms})])
    titles = (f"λ = {lam_ref:g}, M varies", f"M = {Ms}, λ varies")
    for a, (ax, group, title) in enumerate(zip(axes, groups, titles)):
        for n, key in enumerate(group):
            r = table[key]
            label = f"M = {key[0]}" if a == 0 else f"λ = {key[1]:g}"
            ax.semilogy(r["t"][1:], r["mmd"][1:], "o-", color=f"C{n}", ms=3, label=label + ": particles↔PDE")
            ax.semilogy(r["t"][1:], r["mmd_sigma"][1:], ":", color=f"C{n}", lw=1, label=label + ": particles↔σ")
            if a == 0 or n == 0:
                ax.semilogy(r["t"][1:], r["floor"][1:], "--", color=f"C{n}" if a == 0 else "0.4", lw=0.8,
                            label=f"noise floor, M = {key[0]}")
        ax.set_xlabel("t")
        ax.set_title("energy MMD, " + title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    p4 = os.path.join(pics, "sweep.png")
    fig.savefig(p4)
    plt.close(fig)
    return [p1, p2, p3, p4]


if __name__ == "__main__":
    sys.exit(main())
