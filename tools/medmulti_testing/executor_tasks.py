"""Per-item tasks for the executor tests (``tests/test_executor.py``).

Worker processes import the module of a task to unpickle it; this one imports only the
standard library and medmulti's error tree, so that a spawned worker starts quickly.
"""

from __future__ import annotations

import os

from medmulti.errors import CorruptFileError

__all__ = ["square", "fault_on_odd", "NeedsTwoArguments", "unpicklable_fault", "pid_of", "die_once",
           "always_die_on_two", "mark_initialized", "initialized_here"]


def square(x: int) -> int:
    return x * x


def fault_on_odd(x: int) -> int:
    if x % 2:
        err = CorruptFileError("pixel data ends early", path=f"p{x}/ct/1.dcm", modality="ct",
                               patient_id=f"P{x:03d}", keyword="PixelData", hint="export the series again")
        err.errno = 5  # an extra field, as the cache's errors carry
        raise err
    return x * x


class NeedsTwoArguments(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but does not unpickle: args is (text,)
        super().__init__(f"{a}/{b}")


def unpicklable_fault(x: int) -> int:
    if x == 1:
        raise NeedsTwoArguments(1, 2)
    return x


def pid_of(x: int) -> int:
    return os.getpid()


def die_once(job: tuple[int, str]) -> int:
    """Kill the worker process the first time item 3 runs (a marker file remembers it)."""
    x, marker = job
    if x == 3:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os._exit(17)
    return x * x


def always_die_on_two(x: int) -> int:
    if x == 2:
        os._exit(17)
    return x * x


def mark_initialized() -> None:
    os.environ["MEDMULTI_TEST_INITIALIZED"] = str(os.getpid())


def initialized_here(x: int) -> str | None:
    return os.environ.get("MEDMULTI_TEST_INITIALIZED")
