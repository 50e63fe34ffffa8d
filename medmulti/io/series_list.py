"""List the image series in a DICOM folder, from the headers only.

What a person needs before choosing a series with ``series=``: each series'
number, modality, file and image counts, size, plane, how many volumes it holds
(a series whose slice positions repeat: echoes, time points...), whether it
assembles (and why not), and what to pass to ``series=`` to read it. Nothing
identifying is listed: no UIDs, no descriptions, no header text.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MedmultiError, MissingFileError
from .dicom_file import is_projection
from .dicom_header import DicomHeader
from .dicom_series import group_series_files, scan_folder, series_geometry_of, volume_stack
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["SeriesSummary", "list_series", "plane_of"]


@dataclass
class SeriesSummary:
    """One image series of a folder (header-level, no identifying values).

    Attributes
    ----------
    number : int or None
        SeriesNumber.
    modality : str
        DICOM Modality.
    n_files : int
        Files of the series.
    n_images : int
        Images (frames) in those files.
    rows, columns : int
        Image size of the first file.
    plane : str
        ``"axial"``, ``"coronal"``, ``"sagittal"``, ``"oblique"`` (from the first
        file's ImageOrientationPatient), ``"projection"`` for radiographs, or
        ``"unknown"``.
    example : str
        One of its files, relative to the folder.
    readable : bool
        The series passes the header-level checks ``read_image`` makes before
        decoding (sizes, orientations, gaps, duplicates): ``read_image(folder,
        series=select)`` reads it, or, when ``n_volumes > 1``,
        ``read_image(folder, series=select, volume=k)`` reads each volume
        ``k`` in ``0..n_volumes-1`` (without ``volume=`` such a series is
        refused: medmulti reads one 3D volume).
    problem : str or None
        Why not: the error class and message (no header values).
    select : str
        What to pass as ``series=`` (CLI ``--series``) to read this series: its
        number when that is unique in the folder, else ``example``.
    n_volumes : int
        Volumes the series holds: 1, or the count when its slice positions
        repeat and ``volume_key`` splits them (multi-echo, dynamic, diffusion,
        multi-phase series stored as single-frame files).
    volume_key : str or None
        The keyword that splits them (e.g. ``"EchoNumbers"``), None for one volume.
    """

    number: int | None
    modality: str
    n_files: int
    n_images: int
    rows: int
    columns: int
    plane: str
    example: str
    readable: bool
    problem: str | None
    select: str
    n_volumes: int = 1
    volume_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def plane_of(h: DicomHeader) -> str:
    """The plane of an image from its header (no identifying value is used).

    Parameters
    ----------
    h : DicomHeader
        One file's header.

    Returns
    -------
    str
        ``"projection"`` for a radiograph; else ``"axial"``, ``"coronal"`` or
        ``"sagittal"`` when the slice normal (from ImageOrientationPatient) lies
        within about 25 degrees of that axis, ``"oblique"`` otherwise, and
        ``"unknown"`` without a usable orientation.
    """
    if is_projection(h):
        return "projection"
    try:
        iop = h.orientation()
    except MedmultiError:
        iop = None
    if iop is None or len(iop) != 6:
        return "unknown"
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return "unknown"
    normal = np.abs(normal) / norm
    k = int(np.argmax(normal))
    if normal[k] < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[k]


def list_series(
    folder: str | os.PathLike[str], *, limits: Limits | None = None, root: str | os.PathLike[str] | None = None
) -> list[SeriesSummary]:
    """List the image series under a folder (recursively), headers only.

    Parameters
    ----------
    folder : str or PathLike
        A folder of DICOM files.
    limits : Limits, optional
        Caps (default :data:`~medmulti.io.limits.DEFAULT_LIMITS`).
    root : str or PathLike, optional
        The folder symlinks under ``folder`` may point into (default: ``folder``
        itself). Nothing outside it is opened, listed or ``stat``-ed.

    Returns
    -------
    list of SeriesSummary
        Sorted by SeriesNumber (series without a number last). Empty when the
        folder holds no DICOM image. A series whose slice positions repeat is
        split into volumes as ``read_image`` splits it (``n_volumes``,
        ``volume_key``); it is ``readable`` when every volume assembles.

    Raises
    ------
    MissingFileError
        ``folder`` does not exist or is not a folder.
    CorruptFileError
        A DICOM file whose header cannot be parsed.
    ResourceLimitError
        More files than ``limits.max_files``.
    UnsafePathError
        A symlink under the folder leads outside ``root`` (or loops).
    UnsupportedDataError
        A FIFO, socket or device under the folder (never opened).
    """
    limits = limits or DEFAULT_LIMITS
    p = Path(folder)
    if not p.is_dir():
        raise MissingFileError("no such folder", path=str(folder))
    headers, _, _ = scan_folder(p, limits, display=str(folder), root=root)
    groups = group_series_files(headers)
    numbers = [g[0].series_number for g in groups]
    out = []
    for hs in groups:
        first = hs[0]
        problem = None
        n_volumes, volume_key = 1, None
        try:
            _, volumes, geometry = series_geometry_of(hs, str(folder), limits)
            if volumes is not None:
                n_volumes, volume_key = volumes.n, volumes.keyword
                for k in range(volumes.n):  # each volume must assemble on its own
                    volume_stack(hs, volumes, k, geometry, str(folder), limits)
        except MedmultiError as exc:
            problem = f"{type(exc).__name__}: {exc.message}"
        unique = first.series_number is not None and numbers.count(first.series_number) == 1
        out.append(SeriesSummary(
            number=first.series_number,
            modality=first.modality,
            n_files=len(hs),
            n_images=sum(h.frames for h in hs),
            rows=first.rows,
            columns=first.columns,
            plane=plane_of(first),
            example=first.name,
            readable=problem is None,
            problem=problem,
            select=str(first.series_number) if unique else first.name,
            n_volumes=n_volumes,
            volume_key=volume_key,
        ))
    return out
