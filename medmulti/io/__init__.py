"""Strict readers: DICOM files, DICOM series folders and NIfTI into :class:`~medmulti.Image`.

Examples
--------
>>> import medmulti.io as mio
>>> "read_image" in mio.__all__ and "list_series" in mio.__all__
True
"""

from __future__ import annotations

from .limits import DEFAULT_LIMITS, Limits
from .reader import read_image
from .series_list import SeriesSummary, list_series
from .source import SourceInfo, SourceRef, inspect_source

__all__ = [
    "read_image",
    "inspect_source",
    "SourceInfo",
    "SourceRef",
    "list_series",
    "SeriesSummary",
    "Limits",
    "DEFAULT_LIMITS",
]
