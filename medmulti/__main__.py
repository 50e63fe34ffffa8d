"""``python -m medmulti``: the same as the ``medmulti`` command."""
import sys

from .cli import main

if __name__ == "__main__":  # spawned workers import this module again: they must not run the command
    sys.exit(main())
