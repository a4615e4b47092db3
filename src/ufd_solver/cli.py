"""Command line: ``ufd run | train | validate | mesh | plot | info``.

Exit codes: 0 success, 2 invalid input (one line naming the key/file and
what is allowed; nothing written), 3 the solver failed (outputs up to the
failure are kept and ``summary.json`` says ``"status": "failed"``),
128 + signal number when SIGINT/SIGTERM stopped the run after a final
checkpoint (``"status": "interrupted"``; continue with ``--restart``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import UfdError

DESCRIPTION = """Weighted ultra-fast diffusion of two-layer network features
(Barboni, Peyré, Vialard, arXiv:2504.18208): ∂_t ρ = −∇·(σ ∇(σ/ρ))."""

RUN_HELP = """Solve the PDE.  Without CONFIG the built-in default runs: the paper's
circle case (σ = paper-circle preset with γ = 100, uniform ρ₀, 1000 cells,
BDF2, t_end = 31.25).  Keys (section.key, defaults): mesh.kind=circle
(circle|sphere|torus|box|file), mesh.resolution (circle 1000 cells, sphere
level 5, torus/box 32 per side), mesh.dim=2, mesh.length=4.0, mesh.degree=1,
teacher.density, initial.density="uniform", solver.scheme=bdf2 (bdf2|be),
solver.t_end=31.25, solver.output_times=[], solver.num_outputs=10,
solver.dt0=1e-4, solver.rtol=1e-3, solver.atol=1e-6, solver.dt_max=0 (none),
output.vtx=true, output.xdmf=true, output.progress=true.  See README."""


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _add_config_args(p, default_out):
    p.add_argument("config", nargs="?", help="TOML configuration (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a configuration value (TOML syntax; repeatable)")
    p.add_argument("-o", "--output", default=None,
                   help=f"output directory (default: [output] directory, or {default_out!r})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ufd", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="solve the PDE", description=RUN_HELP)
    _add_config_args(p, "ufd-output")
    p.add_argument("--restart", metavar="OUTDIR", default=None,
                   help="continue the run in OUTDIR from its last checkpoint, with its own "
                   "config.toml (any number of ranks)")

    p = sub.add_parser("train", help="train a student network (particles)",
                       description="Train a two-layer student network against a teacher "
                       "(VarPro or two-timescale); same configuration file as 'ufd run'.")
    _add_config_args(p, "ufd-output")
    p.add_argument("--restart", metavar="OUTDIR", default=None,
                   help="continue the training in OUTDIR from its last checkpoint, with its own "
                   "config.toml (any number of ranks)")

    from .validate import add_parser as add_validate_parser

    add_validate_parser(sub)

    p = sub.add_parser("mesh", help="write a feature-space mesh (XDMF)")
    p.add_argument("--kind", default="circle", help="circle | sphere | torus | box")
    p.add_argument("--resolution", type=int, default=None, help="cells (circle), level (sphere), cells per side")
    p.add_argument("--dim", type=int, default=2, help="torus/box dimension")
    p.add_argument("--length", type=float, default=4.0, help="torus/box side")
    p.add_argument("-o", "--output", required=True, help="output .xdmf file")

    p = sub.add_parser("plot", help="pictures of a run (PNG per saved time, GIF)")
    p.add_argument("outdir", help="directory of a 'ufd run' (snapshots.npz)")
    p.add_argument("--gif", action="store_true", default=True, help="also write an animation (default)")
    p.add_argument("--no-gif", dest="gif", action="store_false")

    sub.add_parser("info", help="versions and MPI size")
    return parser


def _config(args):
    from .config import load_config

    return load_config(args.config, args.overrides)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    comm = _comm()
    from .log import setup_logging

    setup_logging(comm, logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    try:
        return _dispatch(args, comm)
    except UfdError as exc:
        if comm.rank == 0:
            print(f"ufd {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _dispatch(args, comm) -> int:
    if args.command in ("run", "train") and args.restart:
        import os

        from .config import load_config
        from .errors import ConfigError

        if args.config or args.overrides or args.output:
            raise ConfigError("--restart", "takes the run's own config.toml: give no CONFIG, --set or -o")
        path = os.path.join(args.restart, "config.toml")
        if not os.path.isfile(path):
            raise ConfigError(args.restart, f"not the output directory of a 'ufd {args.command}' "
                              "(no config.toml)")
        cfg = load_config(path)
        if args.quiet:
            import dataclasses

            cfg = cfg.replace(output=dataclasses.replace(cfg.output, progress=False))
        if args.command == "run":
            from .run import run_pde

            summary = run_pde(cfg, args.restart, comm, restart=True)
        else:
            from .training.runner import train

            summary = train(cfg, args.restart, comm, restart=True)
        logging.getLogger("ufd_solver").info("%s: %s after restart, outputs in %s", args.command,
                                             summary.get("status"), args.restart)
        return 0
    if args.command in ("run", "train"):
        cfg = _config(args)
        if args.quiet:
            import dataclasses

            cfg = cfg.replace(output=dataclasses.replace(cfg.output, progress=False))
        outdir = args.output or cfg.output.directory
        if args.command == "run":
            from .run import run_pde

            summary = run_pde(cfg, outdir, comm)
        else:
            from .training.runner import train

            summary = train(cfg, outdir, comm)
        if comm.rank == 0:
            logging.getLogger("ufd_solver").info(
                "%s: %s in %.1f s, outputs in %s", args.command, summary.get("status"),
                summary.get("wall_time_s", 0.0), outdir)
        return 0
    if args.command == "validate":
        from .validate import main_validate

        return main_validate(args, comm)
    if args.command == "mesh":
        from .config import MeshConfig
        from .meshes import build_mesh, write_mesh

        table = {"kind": args.kind, "dim": args.dim, "length": args.length}
        if args.resolution is not None:
            table["resolution"] = args.resolution
        cfg = MeshConfig.from_table(table)
        if cfg.kind == "file":
            from .errors import ConfigError

            raise ConfigError("--kind", "allowed: circle, sphere, torus, box")
        mesh = build_mesh(comm, cfg)
        write_mesh(mesh, args.output)
        return 0
    if args.command == "plot":
        if comm.rank == 0:
            from .plotting import plot_run

            files = plot_run(args.outdir, gif=args.gif)
            for f in files:
                print(f)
        return 0
    if args.command == "info":
        from .runinfo import versions

        info = {**versions(load=True), "mpi_size": comm.size}
        info["blas"] = _loaded_blas()
        if comm.rank == 0:
            print(json.dumps(info, indent=2))
        return 0
    raise AssertionError(args.command)  # pragma: no cover



def _loaded_blas() -> list[str]:
    """BLAS/LAPACK shared libraries loaded in this process (from /proc/self/maps)."""
    import os

    import numpy  # noqa: F401 - loads the BLAS numpy links to

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "blas" in line or "lapack" in line}
    except OSError:
        return []
    return sorted({os.path.realpath(p) for p in paths if p.startswith("/")})
