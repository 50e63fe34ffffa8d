"""Whether worker processes may be started from this program.

With the ``spawn`` and ``forkserver`` start methods a worker imports the main
module again. A script without an ``if __name__ == "__main__":`` guard then runs
again, top to bottom, in every worker: it may regenerate, overwrite or delete the
very files the parent is working on, before the pool fails. medmulti's parallel
paths (cache fill, patient checks, JPEG 2000 decoding) therefore look at the main
module first and stay in the calling process when it is an unguarded script.
"""

from __future__ import annotations

import functools
import logging
import re
import sys

__all__ = ["main_is_guarded", "workers_allowed"]

log = logging.getLogger("medmulti")

_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


@functools.lru_cache(maxsize=8)
def _file_is_guarded(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            source = fh.read()
    except OSError:
        return True  # cannot tell (frozen app, deleted file): let multiprocessing decide
    return bool(_GUARD.search(source))


def main_is_guarded() -> bool:
    """Return True when spawned workers can import the main module safely.

    Returns
    -------
    bool
        True for an interactive session, a notebook, ``python -c``, and a script
        or ``-m`` module whose source tests ``__name__ == "__main__"``; False for
        a script without that guard.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if main is not None else None
    if not path:
        return True  # REPL, notebook, python -c: workers do not run it again
    return _file_is_guarded(str(path))


_warned: set[str] = set()


def workers_allowed(what: str, start_method: str = "spawn") -> bool:
    """Whether ``what`` may use worker processes; warns once per ``what`` when not.

    Parameters
    ----------
    what : str
        The work, for the message (e.g. ``"preprocessing"``).
    start_method : str
        The pool's start method; ``"default"`` means multiprocessing's current
        default. Forked workers do not import the main module again.

    Returns
    -------
    bool
        True for forked workers, else :func:`main_is_guarded`.
    """
    if start_method == "default":
        import multiprocessing as mp

        start_method = mp.get_start_method()
    if start_method == "fork" or main_is_guarded():
        return True
    if what not in _warned:
        _warned.add(what)
        log.warning("%s runs in this process: the main script has no `if __name__ == \"__main__\":` guard, and "
                    "worker processes would run the whole script again; add the guard to use all cores", what)
    return False
