"""Symlink and special-file placements in data folders (issue 13, items 2 and 4).

:func:`run_placements` builds a small DICOM series inside a root, then, one
placement at a time, puts a hostile entry into a fresh copy of it - a slice
replaced by a symlink leading out of the root (absolute, relative, through a
chain, via a symlinked folder), a link loop, a dangling link, a FIFO, a socket,
a symlink to a device - at several depths, and runs the readers on it under a
deadline. Each outcome must be the expected typed error: an accepted input, an
untyped exception or a call that blocks is a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["PLACEMENTS", "run_placements"]

#: Seconds a reader may take on one placement before it counts as hung.
DEADLINE_S = 20


def _slice(folder: Path, rng: random.Random) -> Path:
    return rng.choice(sorted(p for p in folder.rglob("*.dcm") if p.is_file() and not p.is_symlink()))


def _link_abs_out(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    shutil.move(victim, outside / victim.name)
    victim.symlink_to(outside / victim.name)


def _link_rel_out(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    shutil.move(victim, outside / victim.name)
    victim.symlink_to(os.path.relpath(outside / victim.name, victim.parent))


def _link_chain_out(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    shutil.move(victim, outside / victim.name)
    hop = folder.parent / f"hop{rng.randrange(10**6)}"
    hop.symlink_to(outside / victim.name)
    victim.symlink_to(hop)


def _dir_link_out(folder: Path, outside: Path, rng: random.Random) -> None:
    (outside / "more").mkdir(exist_ok=True)
    shutil.copy(_slice(folder, rng), outside / "more" / "extra.dcm")
    (folder / "more").symlink_to(outside / "more", target_is_directory=True)


def _link_loop(folder: Path, outside: Path, rng: random.Random) -> None:
    (folder / "loop_a").symlink_to(folder / "loop_b")
    (folder / "loop_b").symlink_to(folder / "loop_a")


def _dangling(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    victim.unlink()
    victim.symlink_to(victim.parent / "gone.dcm")


def _fifo_slice(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    victim.unlink()
    os.mkfifo(victim)


def _fifo_extra(folder: Path, outside: Path, rng: random.Random) -> None:
    sub = folder / "sub" / "deeper"
    sub.mkdir(parents=True)
    os.mkfifo(sub / "pipe")


def _socket(folder: Path, outside: Path, rng: random.Random) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.fspath(folder / "s"))  # short name: AF_UNIX paths are limited to ~107 bytes
    return s


def _link_to_device(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    victim.unlink()
    victim.symlink_to("/dev/zero")


def _link_to_fifo_inside(folder: Path, outside: Path, rng: random.Random) -> None:
    victim = _slice(folder, rng)
    victim.unlink()
    pipe = folder / "pipe"
    os.mkfifo(pipe)
    victim.symlink_to(pipe)


#: name -> (how to place it, the error type name every reader must raise)
PLACEMENTS: dict[str, tuple[Callable, str]] = {
    "link_abs_out": (_link_abs_out, "UnsafePathError"),
    "link_rel_out": (_link_rel_out, "UnsafePathError"),
    "link_chain_out": (_link_chain_out, "UnsafePathError"),
    "dir_link_out": (_dir_link_out, "UnsafePathError"),
    "link_loop": (_link_loop, "UnsafePathError"),
    "dangling_link": (_dangling, "MissingFileError"),
    "fifo_slice": (_fifo_slice, "UnsupportedDataError"),
    "fifo_in_subfolder": (_fifo_extra, "UnsupportedDataError"),
    "socket": (_socket, "UnsupportedDataError"),
    "link_to_device": (_link_to_device, "UnsafePathError"),
    "link_to_fifo_inside": (_link_to_fifo_inside, "UnsupportedDataError"),
}


class _Hung(Exception):
    pass


def _call(fn: Callable[[], object]) -> str:
    def boom(signum, frame):
        raise _Hung()

    from medmulti.errors import MedmultiError

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(DEADLINE_S)
    try:
        fn()
        return "ACCEPTED"
    except _Hung:
        return "HUNG"
    except MedmultiError as exc:
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - an untyped escape is a finding
        return "escape:" + type(exc).__name__
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_placements(work: Path, *, rounds: int = 1, seed: int = 0) -> dict:
    """Place every hostile entry ``rounds`` times (random slice, nested or not) and run the readers.

    Parameters
    ----------
    work : pathlib.Path
        Scratch folder (created; holds ``root/`` and ``outside/``).
    rounds : int
        Repetitions per placement, each with another random victim slice and,
        from the second round on, the series one or two folders deep.
    seed : int
        Seed of the victim choice.

    Returns
    -------
    dict
        ``{"cases": n, "outcomes": {name: Counter}, "failures": [...], "max_s": s}``;
        a failure is ``(placement, reader, outcome)`` where the outcome is not the
        expected typed error (accepted, untyped, or hung past :data:`DEADLINE_S`).
    """
    from medmulti.examples import synth
    from medmulti.io import inspect_source, read_image
    from medmulti.io.series_list import list_series

    rng = random.Random(seed)
    pristine = Path(work) / "pristine"
    synth.write_dicom_series(np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8), pristine)
    readers = {"read_image": read_image, "inspect_source": inspect_source, "list_series": list_series}
    outcomes: dict[str, Counter] = {}
    failures: list[tuple[str, str, str]] = []
    cases, max_s = 0, 0.0
    for r in range(rounds):
        for name, (place, expected) in PLACEMENTS.items():
            case = Path(work) / f"case{r}_{name}"
            root, outside = case / "root", case / "outside"
            depth = 0 if r == 0 else rng.choice((1, 2))
            folder = root.joinpath(*[f"d{k}" for k in range(depth)], "ct")
            outside.mkdir(parents=True)
            shutil.copytree(pristine, folder)
            held = place(folder, outside, rng)
            try:
                for label, reader in readers.items():
                    t0 = time.perf_counter()
                    got = _call(lambda: reader(folder))
                    max_s = max(max_s, time.perf_counter() - t0)
                    outcomes.setdefault(name, Counter())[f"{label}:{got}"] += 1
                    cases += 1
                    if got != expected:
                        failures.append((name, label, got))
            finally:
                if isinstance(held, socket.socket):
                    held.close()
                shutil.rmtree(case, ignore_errors=True)
    return {"cases": cases, "outcomes": {k: dict(v) for k, v in outcomes.items()}, "failures": failures,
            "max_s": round(max_s, 2)}
