"""``python -m medmulti.cli``: the same as the ``medmulti`` command."""

import sys

from .entry import main

if __name__ == "__main__":  # spawned workers import this module again: they must not run the command
    sys.exit(main())
