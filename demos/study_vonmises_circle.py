"""Study 2: does training follow the ultra-fast diffusion?  An injective kernel on the circle.

The claim under test (Barboni, Peyré, Vialard; MATH.md §3): train a two-layer
network with Variable Projection; as the width M → ∞ and the regularisation
λ → 0 the empirical distribution of the hidden features θ_1..θ_M follows

    ∂_t ρ = −∇·( σ ∇(σ/ρ) ),

σ the teacher's feature density, *provided the kernel
K(θ, θ') = E_x[φ(θ, x) φ(θ', x)] is injective on measures*.  The paper's ReLU
features on the circle are not (their kernel has no odd Fourier modes ≥ 3:
Study 1), so here we take von Mises features φ(θ, x) = exp(κ θ·x), x uniform
on S¹, whose kernel

    K(θ, θ') = I₀(κ |θ + θ'|) = Σ_{n∈Z} I_n(κ)² e^{in(φ − φ')}

has every Fourier weight I_n(κ)² > 0 (Graf's addition theorem).  Population
expectations make the comparison free of data noise; the weights fall so fast
that G = F Fᵀ with 2n + 1 ≈ 23 columns is exact to round-off, so a step costs
O(M n) and M = 4096 trains in half a minute (ufd_solver/training/vonmises_circle_pop.py).

What the script does (``ufd_solver.validate.validate`` for every case):

1. the reference case of ``study_vonmises_circle.toml`` (M = 4096,
   λ = 10⁻⁴, quantile start): the PDE on 2000 cells, the training, and the
   comparison at the common output times (report.md, pictures, ParaView);
2. a sweep over M ∈ {64, 256, 1024, 4096} and λ ∈ {10⁻¹, …, 10⁻⁴} with the
   quantile start, reusing the one PDE run (the PDE does not depend on M or λ);
3. i.i.d. (``init = "random"``) starts for several M: how the dissipative
   dynamics damps the initial sampling fluctuations.

The distance is the energy MMD, MMD²(μ, ν) = 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖
in the plane, between the particles and the PDE density (integrated by
quadrature, no sampling).  Its noise floor — the expected MMD of M i.i.d.
draws from ρ — is (E‖X − X'‖/M)^{1/2} ≈ (1.27/M)^{1/2} (docs/validation.md):
a random start sits at it, a quantile start far below it.

Run (full size, about 10 minutes on 2 cores; ``--small`` is the test size)::

    env/run python3 demos/study_vonmises_circle.py -o results/study_vonmises_circle
    env/run mpirun -n 2 python3 demos/study_vonmises_circle.py --small -o /tmp/s2

Read ``OUTDIR/study.md`` first; ``OUTDIR/reference/report.md`` has the
reference run in detail.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys

from _study import (
    loglog_slope,
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
# The full study; ``--small`` shrinks everything so the tests run it in seconds.
FULL = {"widths": [64, 256, 1024, 4096], "lambdas": [1e-1, 1e-2, 1e-3, 1e-4],
        "random_widths": [256, 1024, 4096], "overrides": []}
SMALL = {"widths": [32, 128], "lambdas": [1e-1, 1e-3], "random_widths": [128],
         "overrides": ["mesh.resolution=400", "training.width=128", "training.lambda=1e-3",
                       "training.t_end=1.0", "training.step_size=0.00390625",
                       "training.output_times=[0.25, 0.5, 0.75]"]}
THRESHOLD = 5e-3  # the project's target for the reference case: sup_t MMD(particles, PDE) < 5e-3


def case_name(M, lam, init):
    return f"M{M}_lam{lam:.0e}_{init}"


def run_case(base, outdir, comm, pde_dir, M, lam, init):
    """Train (M, λ, init) and compare with the PDE in ``pde_dir``; return the summary."""
    return validate(with_training(base, width=M, lam=lam, init=init), outdir, comm, pde_dir=pde_dir,
                    pictures=False)


# %% The study --------------------------------------------------------------
def main(argv=None) -> int:
    comm, base, size, out = setup(__doc__, "study_vonmises_circle", "study_vonmises_circle.toml", FULL, SMALL, argv)
    M_ref, lam_ref = base.training.width, base.training.lam

    # 1. The reference case: PDE + training + full comparison (pictures, ParaView).
    log.info("study: reference case M = %d, λ = %g, quantile start", M_ref, lam_ref)
    ref = validate(base, os.path.join(out, "reference"), comm)
    pde_dir = ref["pde_dir"]

    # 2. The sweep in M and λ (quantile starts), one PDE run for all.
    results = {}
    for lam in size["lambdas"]:
        for M in size["widths"]:
            if (M, lam) == (M_ref, lam_ref):
                results[(M, lam, "quantile")] = ref
                continue
            log.info("study: M = %d, λ = %g, quantile start", M, lam)
            results[(M, lam, "quantile")] = run_case(base, os.path.join(out, case_name(M, lam, "quantile")),
                                                     comm, pde_dir, M, lam, "quantile")
    # 3. Random (i.i.d.) starts at the smallest λ.
    lam_min = min(size["lambdas"])
    for M in size["random_widths"]:
        log.info("study: M = %d, λ = %g, random start", M, lam_min)
        results[(M, lam_min, "random")] = run_case(base, os.path.join(out, case_name(M, lam_min, "random")),
                                                   comm, pde_dir, M, lam_min, "random")
    if comm.rank == 0:
        report(out, base, ref, results, size)
        print(os.path.join(out, "study.md"))
    comm.Barrier()  # study.md/json exist for every rank when main returns
    return 0


# %% Reading the results -------------------------------------------------------
# For every case: sup over the output times of MMD(particles, PDE), and the
# value at the last time.  Slopes: least squares of log sup-MMD against log M
# (at each λ) and against log λ (at each M).
def report(out, base, ref, results, size):
    tr = base.training
    t = series(ref, "t")
    table = {}
    for (M, lam, init), s in results.items():
        d = series(s, "mmd_particles_pde")
        table[(M, lam, init)] = {"sup": float(d.max()), "last": float(d[-1]), "t": series(s, "t").tolist(),
                                 "mmd": d.tolist(), "floor": series(s, "floor_pde").tolist(),
                                 "mmd_sigma": series(s, "mmd_particles_sigma").tolist()}
    widths, lambdas = size["widths"], size["lambdas"]
    slope_M = {lam: loglog_slope(widths, [table[(M, lam, "quantile")]["sup"] for M in widths]) for lam in lambdas}
    slope_lam = {M: loglog_slope(lambdas, [table[(M, lam, "quantile")]["sup"] for lam in lambdas])
                 for M in widths}
    ref_sup = table[(tr.width, tr.lam, "quantile")]["sup"]
    pics = _pictures(out, table, widths, lambdas, size["random_widths"], min(lambdas))

    L = ["# Study 2: von Mises features on the circle against the ultra-fast diffusion", ""]
    L += [f"σ = `{base.teacher.density.to_toml()}`, features exp(κθ·x) with κ = {tr.kappa:g}, x uniform on S¹, "
          f"population data, VarPro, τ = {tr.step_size:g}, t ∈ [0, {tr.t_end:g}], PDE on "
          f"{base.mesh.resolution} P1 cells. Distance: energy MMD between the particles and the PDE "
          "density; floor = (E‖X − X'‖/M)^½, the MMD of M i.i.d. draws.", ""]
    target = ""
    if (tr.width, tr.lam) == (4096, 1e-4):  # the case the target is set for
        target = f", {'below' if ref_sup < THRESHOLD else 'ABOVE'} the target {THRESHOLD:g}"
    L += [f"**Reference case** (M = {tr.width}, λ = {tr.lam:g}, quantile start): sup over t ∈ [0, {tr.t_end:g}] "
          f"of MMD(particles, PDE) = **{ref_sup:.3g}**{target} "
          f"(noise floor {table[(tr.width, tr.lam, 'quantile')]['floor'][0]:.3g}). "
          "Details: [reference/report.md](reference/report.md).", ""]
    L += ["## sup_t MMD(particles, PDE), quantile starts", ""]
    rows = [[f"{lam:g}", *(f"{table[(M, lam, 'quantile')]['sup']:.3g}" for M in widths), f"{slope_M[lam]:.2f}"]
            for lam in lambdas]
    rows.append(["slope in λ", *(f"{slope_lam[M]:.2f}" for M in widths), ""])
    L += markdown_table(["λ \\ M", *map(str, widths), "slope in M"], rows)
    L += ["Slopes are least-squares fits of log sup-MMD against log M (row) and log λ (column).", ""]
    L += ["## Random (i.i.d.) starts, λ = " + f"{min(lambdas):g}", ""]
    rows = []
    for M in size["random_widths"]:
        r = table[(M, min(lambdas), "random")]
        rows.append([M, f"{r['floor'][0]:.3g}", f"{r['mmd'][0]:.3g}", f"{r['mmd'][0] / r['floor'][0]:.2f}",
                     f"{r['mmd'][-1]:.3g}", f"{r['mmd'][-1] / r['floor'][-1]:.2f}"])
    L += markdown_table(["M", "floor (t = 0)", "MMD t = 0", "MMD/floor t = 0", "MMD last t", "MMD/floor last t"],
                        rows)
    L += markdown_pictures(pics, out)
    L += ["Every case's directory holds its `validation.csv`; `reference/pde/` the PDE run "
          "(ParaView: `rho.bp`, ADIOS2VTXReader).", ""]
    with open(os.path.join(out, "study.md"), "w") as fh:
        fh.write("\n".join(L))
    data = {"reference": {"width": tr.width, "lambda": tr.lam, "sup_mmd_particles_pde": ref_sup,
                          "threshold": THRESHOLD, "times": t.tolist()},
            "slope_in_M": {f"{k:g}": v for k, v in slope_M.items()},
            "slope_in_lambda": {str(k): v for k, v in slope_lam.items()},
            "cases": [{"width": M, "lambda": lam, "init": init, **v} for (M, lam, init), v in table.items()]}
    with open(os.path.join(out, "study.json"), "w") as fh:
        json.dump(data, fh, indent=1)


def _pictures(out, table, widths, lambdas, random_widths, lam_min):
    plt = pyplot()
    os.makedirs(os.path.join(out, "pictures"), exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.4), dpi=110)
    for i, lam in enumerate(lambdas):
        ax[0].loglog(widths, [table[(M, lam, "quantile")]["sup"] for M in widths], "o-", color=f"C{i}",
                     label=f"λ = {lam:g}")
    ax[0].loglog(widths, [math.sqrt(4 / math.pi / M) for M in widths], "k--", lw=1,
                 label="i.i.d. floor (4/(πM))^½ (uniform)")
    ax[0].set_xlabel("M")
    ax[0].set_title("sup_t MMD(particles, PDE), quantile start")
    for i, M in enumerate(widths):
        ax[1].loglog(lambdas, [table[(M, lam, "quantile")]["sup"] for lam in lambdas], "s-", color=f"C{i}",
                     label=f"M = {M}")
    ax[1].set_xlabel("λ")
    ax[1].set_title("sup_t MMD(particles, PDE) against λ")
    for a in ax:
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.tight_layout()
    p1 = os.path.join(out, "pictures", "sweep.png")
    fig.savefig(p1)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for i, M in enumerate(random_widths):
        r = table[(M, lam_min, "random")]
        ax.semilogy(r["t"], r["mmd"], "o-", color=f"C{i}", label=f"random, M = {M}")
        ax.semilogy(r["t"], r["floor"], "--", color=f"C{i}", lw=1)
        if (M, lam_min, "quantile") in table:
            q = table[(M, lam_min, "quantile")]
            ax.semilogy(q["t"], q["mmd"], ":", color=f"C{i}", label=f"quantile, M = {M}")
    ax.set_xlabel("t")
    ax.set_title(f"MMD(particles, PDE), λ = {lam_min:g}; dashed: i.i.d. noise floor")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p2 = os.path.join(out, "pictures", "random_starts.png")
    fig.savefig(p2)
    plt.close(fig)
    return [p1, p2]


if __name__ == "__main__":
    sys.exit(main())
