"""A recorder of every file-system path a block of code touches (tests only).

An audit hook sees ``open``, ``os.listdir`` and ``os.scandir``; wrappers see ``stat``,
``lstat``, ``readlink`` and ``access``. Used to prove that nothing outside a root is
opened, listed or even ``stat``-ed.
"""

from __future__ import annotations

import contextlib
import os
import sys

_EVENTS: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _EVENTS is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if isinstance(target, (str, bytes, os.PathLike)):
        _EVENTS.append((event, os.fsdecode(target)))


sys.addaudithook(_audit)  # audit hooks cannot be removed; _EVENTS gates it


@contextlib.contextmanager
def record_fs(monkeypatch):
    """Record every open/os.open/listdir/scandir/stat/lstat/readlink path."""
    global _EVENTS
    events: list[tuple[str, str]] = []

    def wrap(name):
        real = getattr(os, name)

        def spy(path, *a, **k):
            if isinstance(path, (str, bytes, os.PathLike)):
                events.append((name, os.fsdecode(path)))
            return real(path, *a, **k)

        monkeypatch.setattr(os, name, spy)

    for name in ("stat", "lstat", "readlink", "access"):
        wrap(name)
    _EVENTS = events
    try:
        yield events
    finally:
        _EVENTS = None
        monkeypatch.undo()
