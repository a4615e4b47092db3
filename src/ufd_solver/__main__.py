"""``python -m ufd_solver`` is the ``ufd`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
