"""Exceptions raised for invalid user input.

Every error a user can cause carries the configuration key (or file) it is
about, so the command line can print one clear line and exit with code 2.
"""

from __future__ import annotations


class UfdError(Exception):
    """Base class of errors that the CLI reports as one line, exit code 2."""

    exit_code = 2


class ConfigError(UfdError):
    """An invalid configuration value.

    Parameters
    ----------
    key:
        Dotted key such as ``"solver.t_end"`` or a file name.
    message:
        What is wrong and what is allowed.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def __reduce__(self):  # picklable, so it can be broadcast between ranks
        return (type(self), (self.key, self.message))


class SolverError(UfdError):
    """The time integration failed (e.g. dt fell below dt_min)."""

    exit_code = 3


class RunInterrupted(UfdError):
    """SIGINT/SIGTERM stopped the run after writing a checkpoint (exit 128 + signal)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
