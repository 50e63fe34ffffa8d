"""Run the ``medmulti`` CLI and SIGKILL itself at the N-th file-system commit operation.

Usage: ``python -m medmulti_testing.killpoint N medmulti-args...``

Every call to :func:`os.fsync`, :func:`os.replace` and :func:`os.rename` counts
as one operation; at operation ``N`` (1-based) the process sends itself SIGKILL
*before* performing it, so no ``finally`` block, atexit handler or buffered write
runs - exactly what a power cut or the OOM killer does at that instant. Killing
at the fsync of a payload's temporary file is a kill "between payload write and
rename"; at the sidecar's rename, one between payload publication and commit.
``N = 0`` never kills and prints ``killpoint-ops=<count>`` to stderr at exit,
so a caller can spread kill points over a whole run.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys

__all__ = ["main"]

_HOOKED = ("fsync", "replace", "rename")


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    target = int(argv.pop(0))
    count = [0]
    pid = os.getpid()

    def arm(name: str) -> None:
        real = getattr(os, name)

        def hooked(*args, **kwargs):
            if os.getpid() == pid:  # forked workers are not counted
                count[0] += 1
                if count[0] == target:
                    os.kill(pid, signal.SIGKILL)
            return real(*args, **kwargs)

        setattr(os, name, hooked)

    for name in _HOOKED:
        arm(name)
    if target == 0:
        atexit.register(lambda: print(f"killpoint-ops={count[0]}", file=sys.stderr))
    from medmulti.cli import main as cli

    return cli(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
