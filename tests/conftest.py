"""Test-suite set-up shared by every folder.

The fuzzers, bombs, canaries and kill points (``medmulti_testing``) live in ``tools/``,
outside the installed package; pytest puts that folder on ``sys.path`` (``pythonpath`` in
pyproject.toml), and subprocesses started by tests (``python -m medmulti_testing.killpoint``)
find it through ``PYTHONPATH``.
"""

from __future__ import annotations

import os
from pathlib import Path

TOOLS = str(Path(__file__).resolve().parents[1] / "tools")
if TOOLS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TOOLS, os.environ.get("PYTHONPATH")) if p)
