"""Files every run writes beside its results: ``config.toml`` and ``summary.json``.

Also the output-directory policy shared by ``ufd run`` and ``ufd train``: a
directory is only reused when it is empty or holds a run of the same command
(its ``summary.json`` says so); otherwise the run stops before writing.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading
import time

from .config import Config, dumps_toml
from .errors import ConfigError


STACK = ("numpy", "scipy", "dolfinx", "dolfinx_mpc", "petsc4py", "slepc4py", "mpi4py", "pyvista",
         "adios2", "adios4dolfinx")


def versions(load: bool = False) -> dict:
    """Versions of the stack, for summaries and ``ufd info``.

    Modules are not imported unless ``load`` (importing petsc4py or dolfinx
    initialises PETSc, which is collective: ``load=True`` must be called on
    every rank).  Modules not loaded are looked up in the installed package
    metadata instead.
    """
    from importlib import metadata

    from . import __version__

    out = {"ufd_solver": __version__, "python": platform.python_version()}
    dists = {"dolfinx": "fenics-dolfinx", "dolfinx_mpc": "dolfinx-mpc"}
    for name in STACK:
        mod = sys.modules.get(name)
        if mod is None and load:
            try:
                mod = __import__(name)
            except Exception:  # noqa: BLE001 - optional stack component
                mod = None
        if mod is not None and getattr(mod, "__version__", None):
            out[name] = mod.__version__
            continue
        try:
            out[name] = metadata.version(dists.get(name, name))
        except metadata.PackageNotFoundError:
            if mod is not None:
                out[name] = "unknown"
    return out


def prepare_outdir(path: str, command: str, comm=None) -> str:
    """Create ``path`` for a run of ``command`` ("run", "train", ...).

    Raises :class:`ConfigError` if the directory holds files that are not a
    previous run of the same command.  Collective when ``comm`` is given.
    """
    rank = 0 if comm is None else comm.rank
    error = None
    if rank == 0:
        try:
            check_outdir(path, command)
            os.makedirs(path, exist_ok=True)
        except ConfigError as exc:
            error = exc
        except OSError as exc:
            error = ConfigError(path, f"cannot create output directory: {exc.strerror}")
    if comm is not None:
        error = comm.bcast(error, root=0)
    if error is not None:
        raise error
    return os.path.abspath(path)


def summary_command(path: str) -> str | None:
    """The ``command`` recorded in ``path/summary.json``, or None (no file, unreadable)."""
    try:
        with open(os.path.join(path, "summary.json")) as fh:
            return json.load(fh).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def check_outdir(path: str, command: str) -> None:
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ConfigError(path, "output path exists and is not a directory")
    entries = [e for e in os.listdir(path) if not e.startswith(".")]
    if not entries:
        return
    if summary_command(path) != command:
        raise ConfigError(
            path, f"output directory holds files that are not a 'ufd {command}' run; "
            "choose an empty or new directory (-o)"
        )


def write_config(outdir: str, config: Config) -> None:
    """Write the resolved configuration (defaults filled in) as config.toml."""
    atomic_write(os.path.join(outdir, "config.toml"), dumps_toml(config.to_dict()))


def write_summary(outdir: str, command: str, status: str, comm_size: int, started: float, **extra) -> dict:
    """Write summary.json (status is "running", "completed", "failed", "interrupted")."""
    summary = {
        "command": command,
        "status": status,
        "ranks": comm_size,
        "wall_time_s": round(time.time() - started, 3),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "versions": versions(),
        **extra,
    }
    atomic_write(os.path.join(outdir, "summary.json"), json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class StopFlag:
    """SIGINT/SIGTERM handlers that only raise a flag (checked after each step).

    The first signal received is kept in ``signum`` (0: none); the previous
    handlers are restored on exit.  Outside the main thread it does nothing.
    """

    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False
