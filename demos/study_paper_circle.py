"""Study 1: the paper's ReLU features on the circle against the ultra-fast diffusion.

Barboni, Peyré and Vialard (§6.1; MATH.md §4) train a two-layer ReLU network
φ(θ, x) = max(0, θ·x), θ ∈ S¹, x ~ N(0, I₂), against a teacher whose features
have the density

    σ(θ) ∝ 1/(1 + γ sin²(θ/2)) + 0.5/(1 + γ sin²((θ − 0.4π)/2)),   γ ∈ {10, 100, 1000},

with VarPro from a uniform start.  Their theory says the feature density ρ
follows ∂_t ρ = −∇·(σ∇(σ/ρ)) as M → ∞, λ → 0 — *if the kernel is
injective*.  The ReLU kernel (the arc-cosine kernel, population form)

    K(δ) = (sin α + (π − α) cos α)/(2π) = a₀ + 2 Σ_k a_k cos kδ,
    a₁ = 1/8,  a_k = 2/(π²(k² − 1)²) for even k,  a_k = 0 for odd k ≥ 3,

is not: the loss cannot see the odd Fourier modes k ≥ 3 of ρ.  So this study
asks *how far* the paper's own case follows the PDE, and where it departs:

1. for each γ the PDE (1000 P1 cells, adaptive BDF2) and a training with
   population expectations (exact arc-cosine kernel; M = 1024, τ = 2⁻¹⁰,
   32 000 steps, the structured O(M log M) VarPro solver) compared at the
   output times (``ufd_solver.validate.validate``; report.md per γ);
2. λ ∈ {10⁻², 10⁻³, 10⁻⁴} at each γ, reusing that γ's PDE run;
3. the Fourier content at t_end: the network represents the signed measure
   c·ρ; for the modes the kernel sees (k = 1 and even k) training must match
   its coefficients to σ's, for the odd k ≥ 3 nothing forces it to.

Run (full size, about 15 minutes on 2 cores; ``--small`` is the test size)::

    env/run python3 demos/study_paper_circle.py -o results/study_paper_circle

Read ``OUTDIR/study.md``; ``OUTDIR/gamma<γ>/report.md`` has each γ in detail.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
from _study import (
    markdown_pictures,
    markdown_table,
    pyplot,
    series,
    setup,
    with_teacher,
    with_training,
)

from ufd_solver.validate import validate

log = logging.getLogger("ufd_solver.study")

# %% Sizes ------------------------------------------------------------------
FULL = {"gammas": [10, 100, 1000], "lambdas": [1e-2, 1e-3, 1e-4], "overrides": []}
SMALL = {"gammas": [10, 100], "lambdas": [1e-2, 1e-3],
         "overrides": ["mesh.resolution=300", "training.width=128", "training.t_end=1.0",
                       "training.step_size=0.00390625", "training.output_times=[0.25, 0.5, 0.75]"]}
MODES = range(1, 10)


# %% Fourier content of the particles and of the PDE density ---------------------
# ρ̂_k = ∫ ρ(θ) e^{−ikθ} dθ; for the particles (1/M) Σ_j e^{−ikθ_j}.  The network
# represents the signed measure c·ρ (f = ∫ c φ dρ), whose coefficients are
# (1/M) Σ_j c_j e^{−ikθ_j}: the loss forces them to σ's for the modes the kernel
# sees (k = 1 and even k), and leaves the odd modes k ≥ 3 free.  The circle mesh
# is uniform, so the PDE's coefficients are a trapezoidal sum over its vertices.
VISIBLE = {k for k in MODES if k == 1 or k % 2 == 0}


def fourier_modes(outdir, index=-1):
    z = np.load(os.path.join(outdir, "validation.npz"))
    ang = np.arctan2(z["points"][:, 1], z["points"][:, 0])
    h = 2 * np.pi / ang.size
    with np.load(os.path.join(outdir, "particles", "particles.npz")) as p:
        th, c = p["theta"][index], p["c"][index]
    tp = np.arctan2(th[:, 1], th[:, 0])
    out = {}
    for name, vals in (("pde", z["rho_pde"][index]), ("sigma", z["sigma"])):
        out[name] = [abs(h * (vals * np.exp(-1j * k * ang)).sum()) for k in MODES]
    out["particles"] = [abs(np.exp(-1j * k * tp).mean()) for k in MODES]
    out["c_particles"] = [abs((c * np.exp(-1j * k * tp)).mean()) for k in MODES]
    return out


# %% The study --------------------------------------------------------------
def main(argv=None) -> int:
    comm, base, size, out = setup(__doc__, "study_paper_circle", "paper_circle.toml", FULL, SMALL, argv)
    lam_ref = base.training.lam
    results, modes = {}, {}
    for gamma in size["gammas"]:
        cfg = with_teacher(base, {"preset": "paper-circle", "gamma": float(gamma)})
        ref_dir = os.path.join(out, f"gamma{gamma}")
        log.info("study: γ = %g, λ = %g (PDE + training)", gamma, lam_ref)
        ref = validate(cfg, ref_dir, comm)
        results[(gamma, lam_ref)] = ref
        for lam in size["lambdas"]:
            if lam == lam_ref:
                continue
            log.info("study: γ = %g, λ = %g", gamma, lam)
            results[(gamma, lam)] = validate(with_training(cfg, lam=lam), os.path.join(out, f"gamma{gamma}_lam{lam:.0e}"),
                                             comm, pde_dir=ref["pde_dir"], pictures=False)
        if comm.rank == 0:
            lam_min = min(size["lambdas"])
            d = ref_dir if lam_min == lam_ref else os.path.join(out, f"gamma{gamma}_lam{lam_min:.0e}")
            modes[gamma] = fourier_modes(d)
    if comm.rank == 0:
        report(out, base, results, modes, size)
        print(os.path.join(out, "study.md"))
    comm.Barrier()  # study.md/json exist for every rank when main returns
    return 0


# %% Reading the results -------------------------------------------------------
def report(out, base, results, modes, size):
    tr = base.training
    gammas, lambdas = size["gammas"], size["lambdas"]
    table = {}
    for (g, lam), s in results.items():
        d = series(s, "mmd_particles_pde")
        table[(g, lam)] = {"t": series(s, "t").tolist(), "mmd_pde": d.tolist(),
                           "mmd_sigma": series(s, "mmd_particles_sigma").tolist(),
                           "pde_sigma": series(s, "mmd_pde_sigma").tolist(),
                           "floor": series(s, "floor_pde").tolist(), "sup": float(d.max()),
                           "kappa": s["kappa"], "rates": s["rates"]}
    pics = _pictures(out, table, gammas, lambdas)
    L = ["# Study 1: the paper's ReLU circle case against the ultra-fast diffusion", ""]
    L += [f"ReLU features, x ~ N(0, I₂), population expectations (arc-cosine kernel), VarPro, M = {tr.width}, "
          f"random (i.i.d. uniform) start, τ = {tr.step_size:g}, t ∈ [0, {tr.t_end:g}]; σ of the paper's γ-family; "
          f"PDE on {base.mesh.resolution} P1 cells. MMD: energy MMD; floor: (E‖X − X'‖/M)^½, the MMD "
          "of M i.i.d. draws (a random start sits at it).", ""]
    L += ["## MMD(particles, PDE): sup over t and value at t_end", ""]
    rows = []
    for g in gammas:
        for lam in lambdas:
            r = table[(g, lam)]
            rows.append([g, f"{lam:g}", f"{r['sup']:.3g}", f"{r['mmd_pde'][-1]:.3g}", f"{r['floor'][-1]:.3g}",
                         f"{r['mmd_sigma'][-1]:.3g}", f"{r['pde_sigma'][-1]:.3g}"])
    L += markdown_table(["γ", "λ", "sup_t MMD(part, PDE)", "MMD(part, PDE) t_end", "floor t_end",
                         "MMD(part, σ) t_end", "MMD(PDE, σ) t_end"], rows)
    L += ["## Fourier content at t_end (smallest λ)", "",
          "Moduli of the Fourier coefficients at t_end: of the particles' distribution ρ, of the signed "
          "measure c·ρ the network represents (particles weighted by their outer weights), of the PDE "
          "density and of σ. The ReLU kernel sees the modes marked * (k = 1 and even k) and not the odd "
          "modes k ≥ 3, so training matches c·ρ to σ on the marked modes only.", ""]
    head = ["", *(f"k = {k}{'*' if k in VISIBLE else ''}" for k in MODES)]
    for g in gammas:
        m = modes[g]
        rows = [[label, *(f"{v:.3g}" for v in m[name])] for name, label in
                (("particles", "ρ particles"), ("c_particles", "c·ρ particles"), ("pde", "ρ PDE"),
                 ("sigma", "σ"))]
        vis = [k - 1 for k in MODES if k in VISIBLE]
        inv = [k - 1 for k in MODES if k not in VISIBLE]
        err = lambda idx: max(abs(m["c_particles"][i] - m["sigma"][i]) for i in idx)  # noqa: E731
        L += [f"γ = {g}: max over the seen modes of |c·ρ − σ| = {err(vis):.2g}, over the unseen "
              f"odd modes {err(inv):.2g}.", ""] + markdown_table(head, rows)
    L += ["## Long-time rate of the PDE (per γ)", ""]
    rows = []
    for g in gammas:
        r = table[(g, tr.lam)]
        f = r["rates"]["F (PDE, diagnostics)"]
        rows.append([g, f"{r['kappa']:.5g}", f"{f['predicted']:.5g}",
                     "n/a" if f.get("rate") is None else f"{f['rate']:.5g}",
                     "n/a" if f.get("rate") is None else f"{f['ratio']:.4f}"])
    L += markdown_table(["γ", "κ (SLEPc)", "predicted rate of F (2κ)", "observed", "ratio"], rows)
    L += markdown_pictures(pics, out)
    L += ["Each `gamma<γ>/` holds report.md, validation.csv, validation.bp (ParaView) and the runs "
          "(`pde/`, `particles/`).", ""]
    with open(os.path.join(out, "study.md"), "w") as fh:
        fh.write("\n".join(L))
    with open(os.path.join(out, "study.json"), "w") as fh:
        json.dump({"cases": [{"gamma": g, "lambda": lam, **v} for (g, lam), v in table.items()],
                   "fourier_modes": {str(g): m for g, m in modes.items()}}, fh, indent=1)


def _pictures(out, table, gammas, lambdas):
    plt = pyplot()
    os.makedirs(os.path.join(out, "pictures"), exist_ok=True)
    fig, axes = plt.subplots(1, len(gammas), figsize=(4.6 * len(gammas), 4.2), dpi=110, squeeze=False)
    for ax, g in zip(axes[0], gammas):
        for i, lam in enumerate(lambdas):
            r = table[(g, lam)]
            ax.semilogy(r["t"], r["mmd_pde"], "o-", color=f"C{i}", ms=3, label=f"particles↔PDE, λ = {lam:g}")
            ax.semilogy(r["t"], r["mmd_sigma"], ":", color=f"C{i}", label=f"particles↔σ, λ = {lam:g}")
        r = table[(g, lambdas[0])]
        ax.semilogy(r["t"], r["pde_sigma"], "k-", lw=1.5, label="PDE↔σ")
        ax.semilogy(r["t"], r["floor"], "--", color="0.5", lw=1, label="i.i.d. floor")
        ax.set_ylim(bottom=1e-4)  # PDE↔σ falls to round-off; the particle distances stay above
        ax.set_title(f"γ = {g}: energy MMD")
        ax.set_xlabel("t")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "pictures", "mmd_by_gamma.png")
    fig.savefig(path)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    sys.exit(main())
