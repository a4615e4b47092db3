"""``ufd validate``: particles (``ufd train``) against the PDE limit (``ufd run``).

``validate(config, outdir, comm)`` runs the PDE into ``OUTDIR/pde`` and the
particle training into ``OUTDIR/particles`` on the same configuration (or
reuses finished runs: ``pde_dir=``, ``particles_dir=``), compares them at
their common output times and writes into OUTDIR

* ``validation.csv`` — one row per common time t: energy MMD (the square root
  of the energy-distance MMD², ambient coordinates) particle↔PDE,
  particle↔σ and PDE↔σ, each particle distance beside its noise floor
  (E‖X − X'‖/M)^{1/2} of M i.i.d. draws from the reference density; L¹
  between the projected particle density and ρ_PDE / σ and between ρ_PDE and
  σ; the energy F(ρ_PDE) = ½∫σ²/ρ − ½; on the circle the exact W₂ for the
  three pairs; the MMD to the teacher's own features (from ``ufd train``);
* ``validation.bp`` — VTX series (ParaView *ADIOS2VTXReader*) with the named
  fields ``rho_pde``, ``rho_particles`` (the projected particle density) and
  ``sigma`` on the P1 space of the mesh, at every common time;
* ``validation.npz`` — the same values gathered in the mesh's input vertex
  order (``times, points, cells, rho_pde, rho_particles, sigma``);
* ``pictures/`` — ``distances.png`` (every distance against t, log scale,
  noise floors dashed), ``energy_rate.png`` (F(t) with the fitted and the
  predicted e^{−2κt}), ``snapshots.png`` (circle: line plots of ρ_PDE, the
  particle KDE and σ at up to six times) or ``snapshot_t<i>.png`` (sphere,
  torus: pyvista renderings, three panels; two rows of them on the sphere,
  seen from the maximum of σ and from the opposite side);
* ``report.md`` — the table, the pictures and predicted against observed
  long-time rates;
* ``summary.json``, ``config.toml``.

Time units: the trainer's t = kτ is the PDE's t (MATH.md §2–3), so the PDE
is run with ``solver.t_end`` and ``solver.output_times`` taken from
``[training]`` (the ``[solver]`` values of these two keys are ignored).

Predicted rate: κ, the first non-zero eigenvalue of ∫σ∇u·∇v = κ∫σuv
(:func:`ufd_solver.spectrum.poincare_constant`, SLEPc); the linearisation
gives F ~ e^{−2κt} and ‖ρ − σ‖ (L¹, MMD, W₂) ~ e^{−κt}.  Observed rates are
least-squares fits of log F (every accepted step of ``diagnostics.csv``) and
of log distance on the late-time window (:func:`fit_rate`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

PROJECTIONS = ("kde", "l2", "histogram")
F_FLOOR = 1e-12  # below this F is round-off (F = ½∫σ²/ρ − ½ loses digits near 0)
RATE_STEP = 0.1  # the PDE's dt_max in units of 1/κ (BDF2 then resolves e^{−κt})


# ---------------------------------------------------------------------------
# rates
def fit_rate(t, y, floor: float = F_FLOOR, window: float = 0.5, min_points: int = 2):
    """Late-time exponential rate of ``y(t)``: −slope of a least-squares fit of log y.

    Only points with t > 0 and y > ``floor`` are used; of those, the ones in
    the last ``window`` fraction of their time span (at least ``min_points``,
    taking the latest ones).  Returns ``{"rate", "t_from", "t_to", "points"}``
    or None when fewer than ``min_points`` points qualify.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = (t > 0) & np.isfinite(y) & (y > floor)
    # only the part before the curve first reaches the floor: later points are noise
    if ok.any():
        first = np.flatnonzero(ok)[0]
        below = np.flatnonzero(~ok[first:])
        if below.size:
            ok[first + below[0]:] = False
    t, y = t[ok], y[ok]
    if t.size < min_points:
        return None
    t_lo = t[0] + (1.0 - window) * (t[-1] - t[0])
    sel = t >= t_lo
    if sel.sum() < min_points:
        sel = np.zeros(t.size, dtype=bool)
        sel[-min_points:] = True
    slope = np.polyfit(t[sel], np.log(y[sel]), 1)[0]
    return {"rate": float(-slope), "t_from": float(t[sel][0]), "t_to": float(t[sel][-1]),
            "points": int(sel.sum())}


# ---------------------------------------------------------------------------
# configuration and input checks (nothing is written before they pass)
def pde_config(config):
    """The PDE configuration of a validation: [solver] t_end/output_times from [training]."""
    tr = config.training
    solver = dataclasses.replace(config.solver, t_end=tr.t_end, output_times=tuple(tr.output_times),
                                 num_outputs=max(1, len(tr.output_times) - 1))
    return config.replace(solver=solver)


def _load_run_dir(path, command, needed, flag):
    from .config import load_config

    if not path or not os.path.isdir(path):
        raise ConfigError(flag, f"{path!r} is not a directory")
    for name in needed + ("config.toml",):
        if not os.path.isfile(os.path.join(path, name)):
            raise ConfigError(flag, f"{path!r} has no {name}: not the output of a 'ufd {command}'")
    try:
        with open(os.path.join(path, "summary.json")) as fh:
            summary = json.load(fh)
    except (OSError, ValueError):
        summary = {}
    if summary.get("command", command) != command:
        raise ConfigError(flag, f"{path!r} holds a 'ufd {summary.get('command')}' run, not 'ufd {command}'")
    if summary.get("status", "completed") != "completed":
        log.warning("%s: the run in %s has status %r; comparing what it wrote", flag, path, summary.get("status"))
    return load_config(os.path.join(path, "config.toml")), summary


def _same_problem(a, b, flag):
    if a.mesh != b.mesh:
        raise ConfigError(flag, f"mesh differs from the other run ({a.mesh} vs {b.mesh})")
    if a.teacher.density.to_toml() != b.teacher.density.to_toml():
        raise ConfigError(flag, "teacher.density differs from the other run")


def _check_outdir(outdir, comm):
    from .runinfo import check_outdir

    error = None
    if comm.rank == 0:
        try:
            check_outdir(outdir, "validate")
        except ConfigError as exc:
            error = exc
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error


# ---------------------------------------------------------------------------
def validate(config, outdir, comm, pde_dir=None, particles_dir=None,
             projection: str = "kde", bandwidth: float | None = None, pictures: bool = True) -> dict:
    """Run (or reuse) the PDE and the training, compare, write OUTDIR; return the summary.

    ``config``: the validated :class:`~ufd_solver.config.Config` (may be None
    when both ``pde_dir`` and ``particles_dir`` are given).  ``projection``:
    how the particle density on the mesh is estimated (``kde``, ``l2``,
    ``histogram``; :mod:`ufd_solver.projection`); ``bandwidth``: KDE bandwidth
    (default: the Scott-type rule).  Raises :class:`ConfigError` before
    anything is written.  Collective over ``comm``.
    """
    from .run import build_problem, run_pde
    from .spectrum import nonzero_eigenvalues
    from .runinfo import prepare_outdir, write_config, write_summary
    from .training.runner import Problem as TrainingProblem
    from .training.runner import train

    started = time.time()
    if projection not in PROJECTIONS:
        raise ConfigError("--projection", f"got {projection!r}; allowed: {', '.join(PROJECTIONS)}")
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ConfigError("--bandwidth", f"must be a positive number, got {bandwidth!r}")
    if config is None and (pde_dir is None or particles_dir is None):
        raise ConfigError("config", "a configuration is needed unless both --pde and --particles are given")
    pde_summary = train_summary = None
    if pde_dir is not None:
        pcfg, pde_summary = _load_run_dir(pde_dir, "run", ("snapshots.npz", "diagnostics.csv"), "--pde")
    else:
        pcfg = pde_config(config)
    if particles_dir is not None:
        tcfg, train_summary = _load_run_dir(particles_dir, "train", ("particles.npz",), "--particles")
    else:
        tcfg = config
    _same_problem(pcfg, tcfg, "--pde" if pde_dir is not None else "--particles")
    if pcfg.mesh.kind not in ("circle", "sphere", "torus"):
        raise ConfigError("mesh.kind", f"validation needs a feature space the trainer supports "
                          f"(circle, sphere, torus), got {pcfg.mesh.kind!r}")
    if particles_dir is None:
        TrainingProblem(tcfg)  # validates [training] on every rank
    problem = build_problem(pcfg, comm)  # validates mesh and densities
    # κ and the next modes (SLEPc).  The report also lists the next modes: a deviation
    # that shares a symmetry of σ never contains the modes breaking it, and then decays
    # at the first mode it contains.
    kappas = [float(k) for k in nonzero_eigenvalues(problem.mesh, problem.sigma, problem.mpc, 4)]
    if pde_dir is None and not 0 < pcfg.solver.dt_max <= RATE_STEP / kappas[0]:
        # the error control on ρ lets steps grow without bound once ρ ≈ σ; cap them so
        # that BDF2 resolves the late-time decay e^{−κt} (rate error well below 1 %)
        pcfg = pcfg.replace(solver=dataclasses.replace(pcfg.solver, dt_max=RATE_STEP / kappas[0]))
        log.info("PDE steps capped at dt_max = %.3g = %g/κ to resolve the late-time decay",
                 pcfg.solver.dt_max, RATE_STEP)
    outdir = os.path.abspath(outdir)
    _check_outdir(outdir, comm)
    if pcfg.solver.output_times != tcfg.training.output_times and pde_dir is None:
        log.info("PDE output times taken from [training]")

    # --- runs -------------------------------------------------------------
    outdir = prepare_outdir(outdir, "validate", comm)
    ref = config if config is not None else tcfg
    if comm.rank == 0:
        write_config(outdir, ref)
        write_summary(outdir, "validate", "running", comm.size, started)
    if pde_dir is None:
        pde_dir = os.path.join(outdir, "pde")
        log.info("validate: PDE → %s", pde_dir)
        pde_summary = run_pde(pcfg, pde_dir, comm)
    if particles_dir is None:
        particles_dir = os.path.join(outdir, "particles")
        log.info("validate: training → %s", particles_dir)
        train_summary = train(tcfg, particles_dir, comm)

    # --- comparison -------------------------------------------------------
    try:
        result = _compare(problem, pcfg, tcfg, pde_dir, particles_dir, train_summary, outdir, comm,
                          projection, bandwidth, kappas)
        if pictures and comm.rank == 0:
            result["pictures"] = _pictures(result, outdir)
        else:  # every rank: the surface pictures below extend the list on all of them
            result["pictures"] = []
        if pictures and pcfg.mesh.kind != "circle":
            result["pictures"] = _surface_pictures(result, outdir, comm) + (result["pictures"] or [])
        summary = {}
        if comm.rank == 0:
            _write_report(result, pcfg, tcfg, pde_dir, particles_dir, outdir, pde_summary, train_summary)
            summary = write_summary(
                outdir, "validate", "completed", comm.size, started, pde_dir=pde_dir,
                particles_dir=particles_dir, projection=projection, bandwidth=result["bandwidth"],
                kappa=result["kappa"], kappas=result["kappas"], rates=result["rates"], columns=result["columns"],
                rows=result["rows"], width=result["M"], pictures=result["pictures"])
        summary = comm.bcast(summary, root=0)
    finally:
        problem.destroy()
    return summary


# ---------------------------------------------------------------------------
def _common_times(a, b):
    pairs = []
    for i, t in enumerate(a):
        j = int(np.argmin(np.abs(b - t)))
        if abs(b[j] - t) <= 1e-9 * max(1.0, abs(t)):
            pairs.append((i, j, float(t)))
    return pairs


def _read_diagnostics(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    t = np.array([float(r["t"]) for r in rows])
    F = np.array([float(r["energy"]) for r in rows])
    l1 = np.array([float(r["l1_to_sigma"]) for r in rows])
    return t, F, l1


def _compare(problem, pcfg, tcfg, pde_dir, particles_dir, train_summary, outdir, comm, projection,
             bandwidth, kappas):
    import dolfinx
    import dolfinx.io

    from . import distances as D
    from .densities import default_bandwidth
    from .output import Gatherer
    from .projection import project_particles

    space = pcfg.mesh.space()
    mesh = problem.mesh
    tdim = mesh.topology.dim
    V = problem.V if problem.degree == 1 else dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    gat = Gatherer(V)
    snap = parts = diag = None
    if comm.rank == 0:
        with np.load(os.path.join(pde_dir, "snapshots.npz")) as z:
            snap = {k: z[k] for k in z.files}
        with np.load(os.path.join(particles_dir, "particles.npz")) as z:
            parts = {k: z[k] for k in z.files}
        diag = _read_diagnostics(os.path.join(pde_dir, "diagnostics.csv"))
        if snap["rho"].shape[1] != V.dofmap.index_map.size_global:
            snap = ConfigError("--pde", f"snapshots.npz has {snap['rho'].shape[1]} vertices, the mesh "
                               f"{V.dofmap.index_map.size_global}")
    snap = comm.bcast(snap, root=0)
    if isinstance(snap, Exception):
        raise snap
    parts = comm.bcast(parts, root=0)
    diag = comm.bcast(diag, root=0)
    pairs = _common_times(snap["times"], parts["times"])
    if not pairs:
        raise ConfigError("--particles", "the PDE and the particles have no output time in common")
    M = int(parts["theta"].shape[1])
    circle = space.kind == "circle"
    qdeg = 4 if tdim == 1 else 2  # quadrature of densities in the energy MMD

    rho = dolfinx.fem.Function(V, name="rho_pde")
    rho_p = dolfinx.fem.Function(V, name="rho_particles")
    sigma = dolfinx.fem.Function(V, name="sigma")
    gat.scatter(snap["sigma"] if comm.rank == 0 else None, sigma.x.array)
    sigma.x.scatter_forward()

    kappa = kappas[0]
    log.info("validate: weighted Poincaré constant κ = %.6g (predicted F ~ e^{-2κt})", kappa)

    S = D._as_measure(sigma, space, comm, None, qdeg)
    e_ss = D._cross(space, S, S, comm, "image")
    mmd_teacher = (train_summary or {}).get("mmd_to_teacher")
    mmd_times = (train_summary or {}).get("output_times")

    columns = ["t", "mmd_particles_pde", "floor_pde", "mmd_particles_sigma", "floor_sigma",
               "mmd_pde_sigma", "l1_particles_pde", "l1_particles_sigma", "l1_pde_sigma", "energy_pde"]
    if circle:
        columns += ["w2_particles_pde", "w2_particles_sigma", "w2_pde_sigma"]
    if mmd_teacher is not None:
        columns += ["mmd_particles_teacher"]
    rows, kde_frames, rho_frames = [], [], []
    h_used = []
    vtx = dolfinx.io.VTXWriter(comm, os.path.join(outdir, "validation.bp"), [rho, rho_p, sigma], engine="BP4")
    try:
        for i, j, t in pairs:
            gat.scatter(snap["rho"][i] if comm.rank == 0 else None, rho.x.array)
            rho.x.scatter_forward()
            theta = np.asarray(parts["theta"][j], dtype=float)
            h = bandwidth
            if projection == "kde" and h is None:
                h = default_bandwidth(space, space.project(theta))
            h_used.append(h)
            target = problem if projection != "kde" else V
            est = project_particles(target, theta, space, method=projection, bandwidth=h,
                                    mpc=problem.mpc if projection != "kde" else None)
            if est.function_space is V:
                rho_p.x.array[:] = est.x.array
            else:
                rho_p.interpolate(est)
            rho_p.x.scatter_forward()
            P = D._as_measure(theta, space, comm, None, qdeg)
            R = D._as_measure(rho, space, comm, None, qdeg)
            e_pp = D._cross(space, P, P, comm, "image")
            e_rr = D._cross(space, R, R, comm, "image")
            e_pr = D._cross(space, P, R, comm, "image")
            e_ps = D._cross(space, P, S, comm, "image")
            e_rs = D._cross(space, R, S, comm, "image")
            row = {
                "t": t,
                "mmd_particles_pde": math.sqrt(max(2 * e_pr - e_pp - e_rr, 0.0)),
                "floor_pde": math.sqrt(e_rr / M),
                "mmd_particles_sigma": math.sqrt(max(2 * e_ps - e_pp - e_ss, 0.0)),
                "floor_sigma": math.sqrt(e_ss / M),
                "mmd_pde_sigma": math.sqrt(max(2 * e_rs - e_rr - e_ss, 0.0)),
                "l1_particles_pde": D.l1_distance(est, rho),
                "l1_particles_sigma": D.l1_distance(est, sigma),
                "l1_pde_sigma": D.l1_distance(rho, sigma),
                "energy_pde": float(np.interp(t, diag[0], diag[1])),
            }
            if circle:
                row["w2_particles_pde"] = D.w2_circle(theta, rho)
                row["w2_particles_sigma"] = D.w2_circle(theta, sigma)
                row["w2_pde_sigma"] = D.w2_circle(rho, sigma)
            if mmd_teacher is not None:
                k = int(np.argmin(np.abs(np.asarray(mmd_times) - t)))
                row["mmd_particles_teacher"] = float(mmd_teacher[k])
            rows.append(row)
            vtx.write(t)
            kde_frames.append(gat.gather(rho_p.x.array))
            rho_frames.append(gat.gather(rho.x.array))
    finally:
        vtx.close()

    # rates: F from every accepted PDE step; distances from the output times
    tt = np.array([r["t"] for r in rows])
    rates = {"F (PDE, diagnostics)": (2 * kappa, fit_rate(diag[0], diag[1], F_FLOOR)),
             "L1(PDE, sigma) (diagnostics)": (kappa, fit_rate(diag[0], diag[2], 1e-10))}
    if len(rows) >= 3:
        d = np.array([r["mmd_pde_sigma"] for r in rows])
        rates["MMD(PDE, sigma)"] = (kappa, fit_rate(tt, d, 1e-8))
        for key, label in (("mmd_particles_sigma", "MMD(particles, sigma)"),
                           ("l1_particles_sigma", "L1(particle KDE, sigma)")):
            d = np.array([r[key] for r in rows])
            pos = d[tt > 0]
            plateau = float(pos.min()) if pos.size else 0.0
            rates[label] = (kappa, fit_rate(tt, d, 2.0 * plateau))
    rates = {k: {"predicted": p, **(f or {"rate": None})} for k, (p, f) in rates.items()}
    for k, v in rates.items():
        if v["rate"] is not None:
            v["ratio"] = v["rate"] / v["predicted"] if v["predicted"] else None

    result = {"columns": columns, "rows": rows, "kappa": kappa, "kappas": kappas, "rates": rates, "M": M,
              "bandwidth": h_used[-1] if h_used else None, "projection": projection,
              "kind": space.kind, "diag": [list(map(float, a)) for a in diag] if comm.rank == 0 else None}
    if comm.rank == 0:
        _write_csv(os.path.join(outdir, "validation.csv"), columns, rows)
        np.savez(os.path.join(outdir, "validation.npz"), times=tt, points=snap["points"], cells=snap["cells"],
                 rho_pde=np.array(rho_frames), rho_particles=np.array(kde_frames), sigma=snap["sigma"],
                 theta=np.asarray(parts["theta"])[[j for _, j, _ in pairs]])
    return result


def _write_csv(path, columns, rows):
    from .runinfo import atomic_write

    buf = io.StringIO()
    buf.write(",".join(columns) + "\n")
    for r in rows:
        buf.write(",".join(f"{r[c]:.10g}" for c in columns) + "\n")
    atomic_write(path, buf.getvalue())


# ---------------------------------------------------------------------------
# pictures
_LABELS = {
    "mmd_particles_pde": ("MMD particles↔PDE", "C0", "-"),
    "mmd_particles_sigma": ("MMD particles↔σ", "C1", "-"),
    "mmd_pde_sigma": ("MMD PDE↔σ", "C2", "-"),
    "mmd_particles_teacher": ("MMD particles↔teacher features", "C7", ":"),
    "l1_particles_pde": ("L¹ KDE↔PDE", "C0", "--"),
    "l1_particles_sigma": ("L¹ KDE↔σ", "C1", "--"),
    "l1_pde_sigma": ("L¹ PDE↔σ", "C2", "--"),
    "w2_particles_pde": ("W₂ particles↔PDE", "C0", "-."),
    "w2_particles_sigma": ("W₂ particles↔σ", "C1", "-."),
    "w2_pde_sigma": ("W₂ PDE↔σ", "C2", "-."),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pictures(result, outdir):
    plt = _plt()
    pics = os.path.join(outdir, "pictures")
    os.makedirs(pics, exist_ok=True)
    rows = result["rows"]
    t = np.array([r["t"] for r in rows])
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), dpi=110)
    for key, (label, color, style) in _LABELS.items():
        if key not in result["columns"]:
            continue
        ax = axes[0] if key.startswith("mmd") else axes[1]
        y = np.array([r[key] for r in rows])
        ax.semilogy(t, np.maximum(y, 1e-16), color=color, ls=style, marker=".", label=label)
    axes[0].semilogy(t, [r["floor_pde"] for r in rows], color="0.4", ls=(0, (4, 3)), lw=1,
                     label=f"noise floor (E|X−X'|/M)^½, M = {result['M']}")
    axes[0].set_title("energy MMD")
    axes[1].set_title("L¹ and W₂" if result["kind"] == "circle" else "L¹")
    for ax in axes:
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = os.path.join(pics, "distances.png")
    fig.savefig(path)
    plt.close(fig)
    files.append(path)

    td, F, _ = (np.asarray(a) for a in result["diag"])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ok = (td > 0) & (F > 0)
    ax.semilogy(td[ok], F[ok], "C0", label="F(t) of the PDE run")
    kappa = result["kappa"]
    fit = result["rates"]["F (PDE, diagnostics)"]
    if fit.get("rate") is not None:
        t1 = fit["t_to"]
        F1 = float(np.interp(t1, td, F))
        tl = np.linspace(fit["t_from"], t1, 50)
        ax.semilogy(tl, F1 * np.exp(-fit["rate"] * (tl - t1)), "C3--", lw=2,
                    label=f"fit: rate {fit['rate']:.4g}")
        tp = td[ok]
        ax.semilogy(tp, F1 * np.exp(-2 * kappa * (tp - t1)), "k:", lw=1.2,
                    label=f"predicted e^(−2κt), 2κ = {2 * kappa:.4g}")
    ax.set_ylim(max(F[ok].min() if ok.any() else 1e-16, 1e-16) / 3, (F[ok].max() if ok.any() else 1) * 3)
    ax.axhline(F_FLOOR, color="0.6", lw=0.8)
    ax.set_xlabel("t")
    ax.set_title("energy F = ½∫σ²/ρ − ½ and the predicted long-time rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(pics, "energy_rate.png")
    fig.savefig(path)
    plt.close(fig)
    files.append(path)
    if result["kind"] == "circle":
        files.append(_circle_snapshots(outdir, pics))
    return files


def _snapshot_indices(n, k=6):
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def _circle_snapshots(outdir, pics):
    plt = _plt()
    z = np.load(os.path.join(outdir, "validation.npz"))
    s = np.arctan2(z["points"][:, 1], z["points"][:, 0])
    order = np.argsort(s)
    idx = _snapshot_indices(len(z["times"]))
    ncol = min(3, len(idx))
    nrow = int(math.ceil(len(idx) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.3 * nrow), dpi=110, squeeze=False)
    top = 1.05 * max(z["rho_pde"].max(), z["rho_particles"].max(), z["sigma"].max())
    for ax, i in zip(axes.ravel(), idx):
        ax.plot(s[order], z["sigma"][order], "k--", lw=1.3, label="σ")
        ax.plot(s[order], z["rho_pde"][i][order], "C0", lw=2, label="ρ PDE")
        ax.plot(s[order], z["rho_particles"][i][order], "C3", lw=1.2, label="particles (KDE)")
        th = np.arctan2(z["theta"][i][:, 1], z["theta"][i][:, 0])
        # a histogram beside the KDE: bandwidth-free, it shows peaks the KDE smooths away
        nb = int(min(256, max(16, 2 * math.sqrt(th.size))))
        hist, edges = np.histogram(th, bins=nb, range=(-np.pi, np.pi), density=True)
        ax.stairs(hist, edges, color="C1", lw=0.8, alpha=0.7, label=f"particles ({nb} bins)")
        top_i = 1.05 * hist.max()
        th = th[:: max(1, th.size // 256)]  # a rug of at most ~256 particles stays readable
        ax.plot(th, np.full(th.shape, 0.01 * top), "|", color="C3", ms=4, alpha=0.3)
        ax.set_ylim(0, max(top, top_i))
        ax.set_title(f"t = {z['times'][i]:.4g}")
        ax.set_xlabel("θ")
    for ax in axes.ravel()[len(idx):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(pics, "snapshots.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def _sphere_views(points, sigma):
    """Two antipodal camera directions for S² (from the maximum of σ and from the opposite
    side: together they show the whole sphere) and an up vector that puts the largest σ of
    the far hemisphere straight above the centre of the second view."""
    d = points[int(np.argmax(sigma))]
    d = d / np.linalg.norm(d)
    back = points @ d < 0
    up = points[back][int(np.argmax(sigma[back]))] if back.any() else np.array([0.0, 0.0, 1.0])
    up = up - (up @ d) * d
    if np.linalg.norm(up) < 1e-3:
        up = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        up = up - (up @ d) * d
    return [d, -d], up / np.linalg.norm(up)


def _surface_pictures(result, outdir, comm):
    """pyvista renderings (rank 0): ρ_PDE, particle density (with the particles), σ side by side.

    One shared colour scale, a colour bar under each column.  On S² two rows: the view
    from the maximum of σ and from the opposite side.
    """
    files = []
    if comm.rank == 0:
        from .plotting import _grid, _pyvista

        pv = _pyvista()
        z = np.load(os.path.join(outdir, "validation.npz"))
        pics = os.path.join(outdir, "pictures")
        os.makedirs(pics, exist_ok=True)
        grid = _grid(pv, z["points"], z["cells"])
        clim = [0.0, float(max(z["rho_pde"].max(), z["sigma"].max()))]
        sphere = result["kind"] == "sphere"
        flat = z["points"].shape[1] == 2
        views, up = _sphere_views(z["points"], z["sigma"]) if sphere else ([None], None)
        W = 480
        for i in _snapshot_indices(len(z["times"]), 3):
            t = z["times"][i]
            fields = (("rho_PDE", f"rho_PDE, t = {t:.4g}", z["rho_pde"][i]),
                      ("particle KDE", f"particles (KDE; dots: M = {result['M']}), t = {t:.4g}",
                       z["rho_particles"][i]),
                      ("sigma", "sigma (teacher)", z["sigma"]))
            pl = pv.Plotter(off_screen=True, shape=(len(views), 3), window_size=(3 * W, W * len(views)),
                            border=True)
            for r, v in enumerate(views):
                for j, (bar, title, values) in enumerate(fields):
                    pl.subplot(r, j)
                    g = grid.copy()
                    g.point_data["density"] = values
                    pl.add_mesh(g, scalars="density", clim=clim, cmap="viridis", smooth_shading=True,
                                ambient=0.35, diffuse=0.65, specular=0.0, show_scalar_bar=r == len(views) - 1,
                                scalar_bar_args={"title": bar, "vertical": False, "position_x": 0.15,
                                                 "position_y": 0.03, "width": 0.7, "height": 0.1,
                                                 "title_font_size": 13, "label_font_size": 11, "fmt": "%.2g",
                                                 "n_labels": 4})
                    if j == 1:  # the particles themselves, just outside the inscribed mesh
                        pts = np.zeros((z["theta"][i].shape[0], 3))
                        pts[:, : z["theta"][i].shape[1]] = z["theta"][i] * (1.004 if sphere else 1.0)
                        if flat:
                            pts[:, 2] = 1e-3 * np.ptp(z["points"])  # above the plane, towards the camera
                        pl.add_mesh(pv.PolyData(pts), color="white", point_size=2.0)
                    pl.add_text(title, position="upper_edge", font_size=9)
                    if flat:
                        pl.view_xy()
                    elif v is None:
                        pl.camera_position = [(4.0, 2.8, 3.6), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
                    else:
                        if j == 0:
                            pl.add_text(f"view from ({v[0]:+.2f}, {v[1]:+.2f}, {v[2]:+.2f})"
                                        + (": max of sigma" if r == 0 else ": opposite side"),
                                        position=(6, W - 48), font_size=7)
                        pl.camera_position = [tuple(5.6 * v), (0.0, 0.0, 0.0), tuple(up)]
            for actor in pl.scalar_bars.values():
                actor.SetTextPositionToPrecedeScalarBar()  # labels under the bar, clear of the title
            path = os.path.join(pics, f"snapshot_t{i:03d}.png")
            pl.screenshot(path)
            pl.close()
            files.append(path)
    return comm.bcast(files, root=0)


# ---------------------------------------------------------------------------
def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_report(result, pcfg, tcfg, pde_dir, particles_dir, outdir, pde_summary, train_summary):
    from .runinfo import atomic_write

    tr = tcfg.training
    rows, cols = result["rows"], result["columns"]
    L = ["# Validation: particles against the PDE limit", ""]
    L += [f"Feature space **{pcfg.mesh.kind}** (mesh resolution {pcfg.mesh.resolution}), "
          f"σ = `{pcfg.teacher.density.to_toml()}`, ρ₀ = `{pcfg.initial.density.to_toml()}`.", ""]
    L += [f"Particles: `{tr.features}` features, {tr.data} data"
          + (f" (N = {tr.samples})" if tr.data == "sampled" else "")
          + f", {tr.method}, λ = {tr.lam:g}, M = {result['M']}, M* = {tr.teacher_width}, "
          f"init = {tr.init}, τ = {tr.step_size:g}, t ∈ [0, {tr.t_end:g}], seed {tr.seed}"
          + (f"; {train_summary.get('seconds_per_step', 0):.3g} s per step"
             if train_summary and train_summary.get("seconds_per_step") else "") + ".", ""]
    L += [f"PDE run: `{pde_dir}`; particles: `{particles_dir}`. Particle density on the mesh: "
          f"{result['projection']}"
          + (f" (bandwidth h = {result['bandwidth']:.4g} at the last time)" if result["bandwidth"] else "")
          + ".", ""]
    L += ["## Distances at the common output times", "",
          "MMD is the energy MMD (square root of MMD² with k(a, b) = −‖a − b‖, ambient coordinates). "
          "`floor` is the noise floor (E‖X − X'‖/M)^{1/2}: the expected MMD of M i.i.d. draws from "
          "ρ_PDE (`floor_pde`) or σ (`floor_sigma`). Quantile initialisations are not i.i.d. and "
          "can sit below it; i.i.d. (`random`) ones start at it.", ""]
    L.append("| " + " | ".join(cols) + " |")
    L.append("|" + "---|" * len(cols))
    for r in rows:
        L.append("| " + " | ".join(_fmt(float(r[c])) for c in cols) + " |")
    L.append("")
    L += ["## Long-time rate: predicted against observed", "",
          f"Weighted Poincaré constant of σ on the mesh (SLEPc, ∫σ∇u·∇v = κ∫σuv): **κ = {result['kappa']:.6g}**. "
          "Linearising ρ = σ(1 + ε) gives ε ~ e^{−κt}: the energy decays like e^{−2κt}, distances "
          "(L¹, MMD) like e^{−κt}. Observed: least-squares slope of the logarithm on the late-time "
          f"window (the later half of the times before the curve reaches its floor: F > {F_FLOOR:g}, "
          "particle distances above twice their plateau). The next eigenvalues are "
          + ", ".join(f"{k:.5g}" for k in result["kappas"][1:]) + ": if σ and ρ₀ share a symmetry "
          "(both even in θ, say), the deviation ρ − σ never contains the modes that break it and "
          "decays like the first mode it contains (F at twice that eigenvalue).", "",
          "| quantity | predicted rate | observed rate | observed/predicted | fit window | points |",
          "|---|---|---|---|---|---|"]
    for name, v in result["rates"].items():
        if v.get("rate") is None:
            L.append(f"| {name} | {v['predicted']:.5g} | n/a (too few points above the floor) | | | |")
        else:
            L.append(f"| {name} | {v['predicted']:.5g} | {v['rate']:.5g} | {v['ratio']:.4f} | "
                     f"[{v['t_from']:.4g}, {v['t_to']:.4g}] | {v['points']} |")
    L.append("")
    pics = [os.path.relpath(p, outdir) for p in result.get("pictures") or []]
    if pics:
        L += ["## Pictures", ""]
        for p in sorted(pics):
            L += [f"![{os.path.basename(p)}]({p})", ""]
    L += ["## Files", "",
          "* `validation.csv`: the table above;",
          "* `validation.bp`: ParaView (ADIOS2VTXReader) series with `rho_pde`, `rho_particles`, `sigma`;",
          "* `validation.npz`: the same fields in the mesh's input vertex order, and the particles;",
          "* `pde/`, `particles/`: the runs compared (unless reused).", ""]
    atomic_write(os.path.join(outdir, "report.md"), "\n".join(L))


# ---------------------------------------------------------------------------
# command line (cli.py wires these two in)
def add_parser(subparsers):
    """Add the ``validate`` subcommand to ``ufd``'s subparsers."""
    p = subparsers.add_parser(
        "validate", help="compare particles (ufd train) with the PDE (ufd run)",
        description="Run the PDE and the training on the same configuration (the PDE's t_end and "
        "output times are taken from [training]) or reuse finished runs, compare them at the common "
        "output times and write validation.csv, validation.bp, pictures/ and report.md.")
    p.add_argument("config", nargs="?", help="TOML configuration (needed unless --pde and --particles)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a configuration value (TOML syntax; repeatable)")
    p.add_argument("-o", "--output", default=None, help="output directory (default: [output] directory)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info messages")
    p.add_argument("--pde", default=None, metavar="DIR", help="reuse this 'ufd run' output")
    p.add_argument("--particles", default=None, metavar="DIR", help="reuse this 'ufd train' output")
    p.add_argument("--projection", default="kde", choices=PROJECTIONS,
                   help="particle density on the mesh (default kde)")
    p.add_argument("--bandwidth", type=float, default=None, help="KDE bandwidth (default: Scott-type rule)")
    p.add_argument("--no-pictures", dest="pictures", action="store_false", help="skip the pictures")
    return p


def main_validate(args, comm) -> int:
    """``ufd validate``: returns the exit code (errors are raised as UfdError)."""
    from .config import load_config

    cfg = None
    if args.config or args.overrides or not (args.pde and args.particles):
        cfg = load_config(args.config, args.overrides)
        if args.quiet:
            cfg = cfg.replace(output=dataclasses.replace(cfg.output, progress=False))
    outdir = args.output or (cfg.output.directory if cfg is not None else "ufd-validation")
    summary = validate(cfg, outdir, comm, pde_dir=args.pde, particles_dir=args.particles,
                       projection=args.projection, bandwidth=args.bandwidth, pictures=args.pictures)
    if comm.rank == 0:
        print(os.path.join(os.path.abspath(outdir), "report.md"))
        logging.getLogger("ufd_solver").info("validate: %s in %.1f s, report in %s",
                                             summary.get("status"), summary.get("wall_time_s", 0.0),
                                             os.path.join(outdir, "report.md"))
    return 0
