"""Strict readers: DICOM files, DICOM series folders and NIfTI into :class:`~medmulti.Image`.

Examples
--------
>>> import medmulti.io as mio
>>> sorted(mio.__all__)[:3]
['DEFAULT_LIMITS', 'Limits', 'SourceInfo']
"""

from __future__ import annotations

from .limits import DEFAULT_LIMITS, Limits
from .reader import read_image
from .source import SourceInfo, inspect_source

__all__ = ["read_image", "inspect_source", "SourceInfo", "Limits", "DEFAULT_LIMITS"]
