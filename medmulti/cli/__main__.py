"""``python -m medmulti.cli``: the same as the ``medmulti`` command."""

import sys

from .entry import main

sys.exit(main())
