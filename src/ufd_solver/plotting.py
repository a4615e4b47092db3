"""Pictures of a ``ufd run``: ``ufd plot OUTDIR``.

Reads ``snapshots.npz`` and writes into ``OUTDIR/pictures/``:

* 1D spaces (circle, 1D torus/box): ``rho_t<i>.png`` line plots of ρ(t) against
  σ at every saved time, ``rho_all.png`` with all times overlaid, and
  ``rho.gif``; the horizontal axis is θ on the circle, x otherwise;
* surfaces and volumes (sphere, 2D/3D torus or box): pyvista off-screen
  renderings ``rho_t<i>.png`` of ρ with σ beside it, and ``rho.gif``;
* ``diagnostics.png``: energy F(t), L¹(ρ, σ) and dt against t (log scales).
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ConfigError


def load_snapshots(outdir: str) -> dict:
    path = os.path.join(outdir, "snapshots.npz")
    if not os.path.isfile(path):
        raise ConfigError(outdir, "no snapshots.npz here: not the output directory of a 'ufd run'")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _is_1d(snap) -> bool:
    cells = snap["cells"]
    return cells.shape[1] == 2


def _param(points: np.ndarray):
    """Curve parameter of a 1D mesh: θ on the circle (points in R²), else x."""
    if points.shape[1] == 2:
        return np.arctan2(points[:, 1], points[:, 0]), "θ"
    return points[:, 0], "x"


def plot_run(outdir: str, gif: bool = True) -> list[str]:
    """Write the pictures of a run; returns the written paths."""
    snap = load_snapshots(outdir)
    pics = os.path.join(outdir, "pictures")
    os.makedirs(pics, exist_ok=True)
    files = _plot_1d(snap, pics, gif) if _is_1d(snap) else _plot_surface(snap, pics, gif)
    diag = os.path.join(outdir, "diagnostics.csv")
    if os.path.isfile(diag):
        files.append(_plot_diagnostics(diag, pics))
    return files


def _plot_1d(snap, pics, gif):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, label = _param(snap["points"])
    order = np.argsort(s)
    s = s[order]
    sigma = snap["sigma"][order]
    rho = snap["rho"][:, order]
    times = snap["times"]
    top = 1.05 * max(float(rho.max()), float(sigma.max()))
    files, frames = [], []
    for i, t in enumerate(times):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        ax.plot(s, sigma, "k--", lw=1.5, label="σ (teacher)")
        ax.plot(s, rho[i], "C0", lw=2, label="ρ(t)")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.set_ylim(0, top)
        ax.set_title(f"t = {t:.4g}")
        ax.legend(loc="upper right")
        fig.tight_layout()
        path = os.path.join(pics, f"rho_t{i:03d}.png")
        fig.savefig(path)
        plt.close(fig)
        files.append(path)
        frames.append(path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    cmap = plt.get_cmap("viridis")
    for i, t in enumerate(times):
        ax.plot(s, rho[i], color=cmap(i / max(1, len(times) - 1)), lw=1.3, label=f"t = {t:.3g}")
    ax.plot(s, sigma, "k--", lw=2, label="σ")
    ax.set_xlabel(label)
    ax.set_ylabel("ρ(t)")
    ax.set_title("ultra-fast diffusion of the feature density")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    path = os.path.join(pics, "rho_all.png")
    fig.savefig(path)
    plt.close(fig)
    files.append(path)
    if gif:
        files.append(_gif(frames, os.path.join(pics, "rho.gif")))
    return files


def _gif(frames, path):
    from PIL import Image

    images = [Image.open(f).convert("P", palette=Image.ADAPTIVE) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=500, loop=0)
    return path


def _pyvista():
    import pyvista

    pyvista.OFF_SCREEN = True
    if not os.environ.get("DISPLAY"):
        pyvista.start_xvfb()
    return pyvista


def _grid(pv, points, cells):
    pts = np.zeros((points.shape[0], 3))
    pts[:, : points.shape[1]] = points
    nv = cells.shape[1]
    cell_type = {3: pv.CellType.TRIANGLE, 4: pv.CellType.TETRA}[nv]
    flat = np.hstack([np.full((cells.shape[0], 1), nv), cells]).ravel()
    return pv.UnstructuredGrid(flat, np.full(cells.shape[0], cell_type, dtype=np.uint8), pts)


def _plot_surface(snap, pics, gif):
    pv = _pyvista()
    grid = _grid(pv, snap["points"], snap["cells"])
    grid.point_data["sigma"] = snap["sigma"]
    rho = snap["rho"]
    times = snap["times"]
    clim = [0.0, float(max(rho.max(), snap["sigma"].max()))]
    files, frames = [], []
    for i, t in enumerate(times):
        grid.point_data["rho"] = rho[i]
        pl = pv.Plotter(off_screen=True, shape=(1, 2), window_size=(1100, 520))
        pl.subplot(0, 0)
        pl.add_text(f"rho at t = {t:.4g}", font_size=12)
        pl.add_mesh(grid.copy(), scalars="rho", clim=clim, cmap="viridis",
                    scalar_bar_args={"title": "rho"})
        pl.subplot(0, 1)
        pl.add_text("sigma (teacher)", font_size=12)
        pl.add_mesh(grid.copy(), scalars="sigma", clim=clim, cmap="viridis",
                    scalar_bar_args={"title": "sigma"})
        for j in range(2):
            pl.subplot(0, j)
            if snap["points"].shape[1] == 2:
                pl.view_xy()
            else:
                pl.camera_position = [(4.0, 2.8, 3.6), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
        path = os.path.join(pics, f"rho_t{i:03d}.png")
        pl.screenshot(path)
        pl.close()
        files.append(path)
        frames.append(path)
    if gif:
        files.append(_gif(frames, os.path.join(pics, "rho.gif")))
    return files


def _plot_diagnostics(path, pics):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.genfromtxt(path, delimiter=",", names=True)
    d = d[d["t"] > 0]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6), dpi=110)
    ax[0].semilogy(d["t"], np.maximum(d["energy"], 1e-300), "C0")
    ax[0].set_title("energy F = ½∫σ²/ρ − ½")
    ax[1].semilogy(d["t"], d["l1_to_sigma"], "C1")
    ax[1].set_title("‖ρ − σ‖₁")
    ax[2].loglog(d["t"], d["dt"], "C2.")
    ax[2].set_title("time step")
    for a in ax:
        a.set_xlabel("t")
    fig.tight_layout()
    out = os.path.join(pics, "diagnostics.png")
    fig.savefig(out)
    plt.close(fig)
    return out
