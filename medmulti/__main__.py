"""``python -m medmulti``: the same as the ``medmulti`` command."""
import sys

from .cli import main

sys.exit(main())
