"""The ``volume=`` argument every reader takes: its type, its refusal, its range.

A 4D NIfTI file, a multi-volume enhanced DICOM file and a DICOM series whose
slice positions repeat hold several volumes; ``volume=`` (0-based) chooses one.
Sources that hold one volume refuse it, so a manifest column set by mistake is
reported instead of ignored.
"""

from __future__ import annotations

import numbers
from typing import Any

from ..errors import UnsupportedDataError

__all__ = ["check_volume_argument", "no_volume_choice", "check_volume_index"]


def no_volume_choice(volume: int | None, what: str, name: str) -> None:
    """Refuse ``volume=`` for a source that holds a single volume.

    Parameters
    ----------
    volume : int or None
        The ``volume=`` argument.
    what : str
        What the source is, for the message (e.g. ``"a DICOM series"``).
    name : str
        Path named in the error.

    Raises
    ------
    UnsupportedDataError
        ``volume`` is not None.
    """
    if volume is not None:
        raise UnsupportedDataError(
            f"volume= was given but {what} holds one volume",
            path=name,
            keyword="NumberOfFrames",
            argument="volume",
            hint="volume= chooses among the volumes of a 4D NIfTI file, a multi-volume enhanced DICOM file or a "
            "DICOM series whose slice positions repeat (echoes, time points...); drop it",
        )


def check_volume_argument(volume: Any) -> None:
    """Refuse a ``volume=`` argument that is not an integer (or None).

    Parameters
    ----------
    volume : any
        The argument.

    Raises
    ------
    TypeError
        Not an integer (``bool`` included).
    """
    if volume is not None and (isinstance(volume, bool) or not isinstance(volume, numbers.Integral)):
        raise TypeError(f"volume= must be an int (0-based index), not {type(volume).__name__}")


def check_volume_index(volume: int, n: int, name: str) -> int:
    """Check a ``volume=`` index against the number of volumes a source holds.

    Parameters
    ----------
    volume : int
        The ``volume=`` argument (already type-checked).
    n : int
        Volumes in the source.
    name : str
        Path named in the error.

    Returns
    -------
    int
        ``volume`` as a plain int.

    Raises
    ------
    UnsupportedDataError
        ``volume`` is not in ``0 .. n - 1``.
    """
    if not 0 <= int(volume) < n:
        raise UnsupportedDataError(
            f"volume={int(volume)} is out of range for {n} volumes", path=name, keyword="NumberOfFrames",
            argument="volume", hint=f"volume= is 0-based: 0 to {n - 1}",
        )
    return int(volume)
