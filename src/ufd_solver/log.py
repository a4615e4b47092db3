"""Logging on rank 0 and a progress bar for long runs.

Library modules use ``logging.getLogger(__name__)``; :func:`setup_logging`
installs a handler that prints on rank 0 only (other ranks stay silent unless
they log warnings of their own with ``all_ranks=True``).
"""

from __future__ import annotations

import logging
import sys
import time


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record):  # noqa: D401 - logging API
        return self.rank == 0


def setup_logging(comm=None, level: int = logging.INFO) -> None:
    """Print ``ufd_solver`` log records on rank 0 (stderr)."""
    rank = 0 if comm is None else comm.rank
    logger = logging.getLogger("ufd_solver")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(_RankFilter(rank))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class Progress:
    """A one-line progress bar on rank 0, driven by a time-like value in [0, total].

    Draws on a terminal with carriage returns; elsewhere (CI, files) it prints
    a plain line at most every ``interval`` seconds.
    """

    def __init__(self, total: float, label: str = "", comm=None, enabled: bool = True,
                 stream=None, interval: float = 5.0):
        self.total = float(total)
        self.label = label
        self.enabled = enabled and (comm is None or comm.rank == 0)
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if not self.tty else 0.2
        self.start = time.perf_counter()
        self.last = -1e300

    def update(self, value: float, info: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.interval and value < self.total:
            return
        self.last = now
        frac = min(1.0, max(0.0, value / self.total)) if self.total > 0 else 1.0
        elapsed = now - self.start
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        line = f"{self.label} [{bar}] {100 * frac:5.1f}% {elapsed:7.1f}s {info}"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
