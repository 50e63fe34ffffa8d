"""What a manifest row or a caller names as one image source: a path and its selection.

:class:`SourceRef` (a path, which series of a folder, which volume of a 4D file)
and :func:`parse_series_choice` (what a ``series=`` argument names) are plain
values with no reader behind them, so the readers, the manifest and the
preprocessing cache key all import them from here without importing each other.
"""

from __future__ import annotations

import numbers
import os
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .volume_choice import check_volume_argument

__all__ = ["SourceRef", "SeriesChoice", "parse_series_choice"]

_UID = re.compile(r"[0-9]+(\.[0-9]+)+")
_NUMBER = re.compile(r"[0-9]+")


class SeriesChoice(NamedTuple):
    """What a ``series=`` argument names (a tuple ``(kind, value)``).

    Attributes
    ----------
    kind : {"number", "uid", "file"}
        A SeriesNumber, a SeriesInstanceUID or one file of the wanted series.
    value : int or str
        The SeriesNumber as an int, the UID without surrounding blanks, or the
        file path as given.
    """

    kind: Literal["number", "uid", "file"]
    value: int | str


def parse_series_choice(series: int | str | os.PathLike[str]) -> SeriesChoice:
    """Tell what a ``series=`` argument names.

    Parameters
    ----------
    series : int, str or os.PathLike
        An int or a string of digits is a SeriesNumber; a string of digits and
        dots (with at least one dot) is a SeriesInstanceUID; any other string
        or path is a file of the wanted series.

    Returns
    -------
    SeriesChoice
        ``(kind, value)``: ``("number", int)``, ``("uid", str)`` or ``("file", str)``.

    Raises
    ------
    TypeError
        Any other type (``bool`` and ``float`` included).
    """
    if isinstance(series, bool):
        raise TypeError("series= must be a SeriesNumber (int), a SeriesInstanceUID or a file path, not bool")
    if isinstance(series, numbers.Integral):
        return SeriesChoice("number", int(series))
    if isinstance(series, os.PathLike):
        return SeriesChoice("file", os.fspath(series))
    if isinstance(series, str):
        text = series.strip()
        if _NUMBER.fullmatch(text):
            return SeriesChoice("number", int(text))
        if _UID.fullmatch(text):
            return SeriesChoice("uid", text)
        return SeriesChoice("file", series)
    raise TypeError(
        f"series= must be a SeriesNumber (int), a SeriesInstanceUID or a file path, not {type(series).__name__}"
    )


@dataclass(frozen=True)
class SourceRef:
    """An image source with its selection: which series of a folder, which volume of a 4D file.

    Accepted wherever a source path is (:func:`inspect_source`,
    :func:`medmulti.preprocess_study`, the preprocessing cache keys); a plain path
    still means "the folder's only series" / "the file's only volume". Manifest
    rows hold one for the modalities whose ``<modality>_series`` or
    ``<modality>_volume`` cell is filled (:attr:`medmulti.manifest.ManifestRow.sources`).

    Parameters
    ----------
    path : str or PathLike
        A DICOM file, a DICOM series folder or a NIfTI file.
    series : int, str or PathLike, optional
        As ``series=`` of :func:`~medmulti.io.read_image`: a SeriesNumber (int,
        or a string of digits), a SeriesInstanceUID (a string of digits and
        dots) or the path of one file of the series (a :class:`~pathlib.Path`
        is always taken as a file; a relative one is taken relative to ``path``).
    volume : int, optional
        0-based volume of a 4D NIfTI file, a multi-volume enhanced DICOM file or
        a DICOM series holding several volumes (repeated slice positions), as
        ``volume=`` of :func:`~medmulti.io.read_image`.
    root : str or PathLike, optional
        For a folder: the folder symlinks inside it may point into, as ``root=``
        of :func:`~medmulti.io.read_image` (default: the folder itself).

    Raises
    ------
    TypeError
        ``series`` or ``volume`` of the wrong type (e.g. a float).

    Notes
    -----
    ``os.fspath(ref)`` and ``str(ref)`` give :attr:`path`, so code that only needs
    the location (error messages, ``Path(ref)``) keeps working; readers must use
    :meth:`read_kwargs` to honour the selection. ``repr`` does not show a
    SeriesInstanceUID.

    Examples
    --------
    >>> ref = SourceRef("study/ct", series=3)
    >>> ref.read_kwargs(), str(ref)
    ({'series': 3}, 'study/ct')
    >>> SourceRef.coerce("scan.nii.gz") == SourceRef("scan.nii.gz")
    True
    """

    path: Path
    series: int | str | Path | None = None
    volume: int | None = None
    root: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root))
        if self.series is not None:
            kind, value = parse_series_choice(self.series)  # TypeError for a wrong type
            if isinstance(self.series, PathLike):
                object.__setattr__(self, "series", Path(self.series))
            elif kind != "file":  # one spelling per choice: "5", " 5" and 5 are SeriesNumber 5
                object.__setattr__(self, "series", value)
        check_volume_argument(self.volume)
        if self.volume is not None:
            object.__setattr__(self, "volume", int(self.volume))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:  # a SeriesInstanceUID is not repeated, not even in a repr
        series = self.series
        if isinstance(series, str) and parse_series_choice(series)[0] == "uid":
            shown = "<a SeriesInstanceUID>"
        else:
            shown = repr(series)
        extra = "" if self.root is None else f", root={str(self.root)!r}"
        return f"SourceRef({str(self.path)!r}, series={shown}, volume={self.volume!r}{extra})"

    @property
    def selects(self) -> bool:
        """True when a series or a volume is chosen."""
        return self.series is not None or self.volume is not None

    def read_kwargs(self) -> dict[str, Any]:
        """Return the ``series=``/``volume=`` keyword arguments of the readers (only those given).

        Returns
        -------
        dict
            ``{"series": ..., "volume": ..., "root": ...}`` without the ``None`` entries.
        """
        out: dict[str, Any] = {}
        if self.series is not None:
            out["series"] = self.series
        if self.volume is not None:
            out["volume"] = self.volume
        if self.root is not None:
            out["root"] = self.root
        return out

    def resolve(self, series: Any = None, volume: int | None = None) -> tuple[Path, Any, int | None]:
        """Return the reader arguments ``(path, series, volume)``; those given win over this ref's own.

        Parameters
        ----------
        series : int, str or PathLike, optional
            An explicit ``series=`` (``None``: this ref's).
        volume : int, optional
            An explicit ``volume=`` (``None``: this ref's).

        Returns
        -------
        (pathlib.Path, series, volume)
        """
        return (self.path, self.series if series is None else series,
                self.volume if volume is None else volume)

    @classmethod
    def coerce(cls, source: str | PathLike[str] | SourceRef) -> SourceRef:
        """Return ``source`` as a :class:`SourceRef` (a plain path selects nothing).

        Parameters
        ----------
        source : str, PathLike or SourceRef

        Returns
        -------
        SourceRef
        """
        return source if isinstance(source, SourceRef) else cls(Path(source))
