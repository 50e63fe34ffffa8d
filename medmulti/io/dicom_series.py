"""Read a folder of DICOM files as one series.

All files under the folder (recursively) are recognised by content; non-image
objects (SR, RT, presentation states, DICOMDIR, waveforms) and non-DICOM files are
ignored; image files are grouped by SeriesInstanceUID. Exactly one image series
is expected unless ``series=`` picks one: by SeriesNumber, by SeriesInstanceUID,
or by the path of one of its files (as SimpleITK users pick a series ID from
``ImageSeriesReader.GetGDCMSeriesIDs``). The chosen series is
checked (same Rows/Columns/PixelSpacing/orientation, then
:func:`~medmulti.io.assembly.assemble_stack`) before any pixel is read; pixels are
then read into one preallocated float32 volume, slice by slice, applying each
slice's own modality LUT.

A series whose slice positions repeat (several echoes, time points, b-values or
phases stored as classic single-frame files under one SeriesInstanceUID) is split
into volumes by the first of :data:`VOLUME_KEYS` that tells them apart; it is read
one volume at a time with ``volume=`` (see :class:`SeriesVolumes`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._processes import workers_allowed
from ..errors import CorruptFileError, MedmultiError, MissingFileError, SeriesGeometryError, UnsupportedDataError
from ..image import Image, affine_from_itk
from .assembly import DUPLICATE_TOLERANCE_MM, ORIENTATION_TOLERANCE, Stack, assemble_stack, check_orientation
from .detect import FileFormat, sniff_bytes
from .dicom_bytes import FAST_KEYWORDS
from .dicom_file import is_projection, read_dicom_file, single_slice_spacing
from .dicom_header import DicomHeader, base_meta, read_header
from .error_ladder import reader_errors
from .j2k_threads import THREAD_SYNTAXES, decode_series_threads
from .limits import Limits
from .pixels import PARALLEL_SYNTAXES, decode_series_parallel, default_workers, read_stored, reset_pool
from .safe_files import list_files, open_regular
from .source_ref import parse_series_choice
from .values import apply_rescale_into, voi_meta
from .volume_choice import no_volume_choice

__all__ = [
    "SeriesPlan",
    "SeriesVolumes",
    "VOLUME_KEYS",
    "SERIES_KEYWORDS",
    "full_header",
    "scan_folder",
    "plan_series",
    "read_dicom_series",
]

logger = logging.getLogger("medmulti.io")


@dataclass
class SeriesPlan:
    """A checked series, ready to be decoded.

    Attributes
    ----------
    folder : pathlib.Path
    headers : list of DicomHeader
        The series' files in ascending slice order (one entry for a single file).
    stack : Stack or None
        Sorted geometry; None when the series is a single file read as such.
    single_file : bool
        The series is one file (projection image or enhanced multi-frame).
    ignored : int
        Non-image / non-DICOM files skipped in the folder.
    warnings : list of str
        Notes without header values.
    volumes : SeriesVolumes or None
        How the series splits into volumes when its slice positions repeat;
        ``headers`` and ``stack`` are then those of volume ``volume``.
    volume : int or None
        The volume chosen (only with ``volumes``).
    """

    folder: Path
    headers: list[DicomHeader]
    stack: Stack | None
    single_file: bool
    ignored: int = 0
    warnings: list[str] = field(default_factory=list)
    volumes: SeriesVolumes | None = None
    volume: int | None = None

    @property
    def n_volumes(self) -> int:
        """Volumes the series holds (1 unless its slice positions repeat)."""
        return 1 if self.volumes is None else self.volumes.n


#: Attributes tried, in this order, to split a series of single-frame files whose
#: slice positions repeat into volumes (time points, echoes, diffusion weightings,
#: acquisitions/phases, trigger times). Private tags are never used.
VOLUME_KEYS = ("TemporalPositionIdentifier", "EchoNumbers", "DiffusionBValue", "AcquisitionNumber", "TriggerTime")

#: The attributes :func:`read_dicom_series` keeps of each file's header
#: (``read_header(only=...)``): those the header's accessors, the series checks and the
#: volume split use (ModalityLUTSequence: such a series is refused, as when parsed in full),
#: and SpecificCharacterSet (which decodes text that is not ASCII).
#: Explicit VR little endian files are then walked by their element headers instead of
#: parsed element by element (a real scanner header holds some 250 attributes: about
#: 4x faster). What only the first file gives (its VOI window, for ``meta``) comes from
#: a full parse of that one file.
SERIES_KEYWORDS = frozenset({
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "NumberOfFrames", "SeriesNumber", "Modality", "PhotometricInterpretation", "SOPClassUID",
    "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "RescaleSlope", "RescaleIntercept", "SpacingBetweenSlices", "SpecificCharacterSet", "ModalityLUTSequence",
    *VOLUME_KEYS,
})
assert SERIES_KEYWORDS - {"SpecificCharacterSet", "ModalityLUTSequence", *VOLUME_KEYS} <= FAST_KEYWORDS


@dataclass
class SeriesVolumes:
    """How a series of single-frame files with repeated slice positions splits into volumes.

    Attributes
    ----------
    keyword : str
        The attribute of :data:`VOLUME_KEYS` that separates the volumes.
    groups : list of numpy.ndarray
        For each volume, in ascending numeric order of ``keyword``, the indices
        of its files in the series' file list.

    Notes
    -----
    Only counts and the keyword are ever shown; the attribute's values are not.
    """

    keyword: str
    groups: list[np.ndarray]

    @property
    def n(self) -> int:
        """Number of volumes."""
        return len(self.groups)

    def describe(self) -> str:
        """Counts only: ``"3 volumes (by EchoNumbers: 3 values; 8 slices each)"``.

        Returns
        -------
        str
        """
        sizes = [len(g) for g in self.groups]
        if len(set(sizes)) == 1:
            counts = f"{sizes[0]} slice{'s' if sizes[0] != 1 else ''} each"
        else:
            shown = ", ".join(str(k) for k in sizes[:12]) + (", ..." if len(sizes) > 12 else "")
            counts = f"slices per volume differ: {shown}"
        return f"{self.n} volumes (by {self.keyword}: {self.n} values; {counts})"


def scan_folder(
    folder: Path, limits: Limits, *, display: str | None = None, root: str | os.PathLike[str] | None = None,
    only: frozenset[str] | None = None,
) -> tuple[list[DicomHeader], int, int]:
    """Parse the header of every DICOM image file under ``folder`` (recursively).

    Parameters
    ----------
    folder : pathlib.Path
        The folder.
    limits : Limits
        Caps (``max_files`` bounds the walk).
    display : str, optional
        Folder name for messages.
    root : str or PathLike, optional
        The folder symlinks under ``folder`` may point into (default: ``folder``
        itself); see :func:`~medmulti.io.safe_files.list_files`.
    only : frozenset of str, optional
        Keep only these attributes of each header (``read_header(only=...)``, e.g.
        :data:`SERIES_KEYWORDS`); default: every attribute.

    Returns
    -------
    (headers, n_non_image, n_non_dicom)
        Image headers in path order, and the counts of skipped files (symlinks
        to folders inside the root count as non-DICOM).

    Raises
    ------
    ResourceLimitError
        More than ``limits.max_files`` files.
    CorruptFileError
        A DICOM file that cannot be parsed (named relative to the folder).
    UnsafePathError
        A symlink under the folder leads outside the root.
    UnsupportedDataError
        A FIFO, socket or device under the folder (never opened).
    MissingFileError
        A file or subfolder that cannot be read; a dangling symlink.
    """
    headers: list[DicomHeader] = []
    non_image = 0
    entries, non_dicom = list_files(folder, root=root, max_files=limits.max_files, display=display or str(folder))
    for entry in entries:
        name = entry.name
        try:
            f = open_regular(entry.path, name=name, follow=False)
        except OSError:
            raise MissingFileError("a file in the folder cannot be read", path=name) from None
        with f:
            try:
                head = f.read(2048)
            except OSError:
                raise MissingFileError("a file in the folder cannot be read", path=name) from None
            fmt = sniff_bytes(head)
            if fmt not in (FileFormat.DICOM, FileFormat.DICOM_RAW):
                non_dicom += 1
                continue
            h = read_header(entry.path, name=name, limits=limits, head=head, check_depth=False, fileobj=f, only=only)
        if h.is_non_image:
            non_image += 1
            continue
        if not h.has_pixels:
            raise CorruptFileError(
                "an image object in the folder has no PixelData (truncated or damaged?)",
                path=name,
                keyword="PixelData",
            )
        headers.append(h)
    return headers, non_image, non_dicom


def _describe(groups: list[list[DicomHeader]]) -> str:
    """List the series (SeriesNumber, Modality, counts; no UIDs, no header text).

    When SeriesNumbers collide (or are missing), each entry also names one of its
    files relative to the folder, which ``series=`` accepts.
    """
    numbers_ = [g[0].series_number for g in groups]
    examples = len(set(numbers_)) < len(numbers_) or None in numbers_
    parts = []
    for hs in groups:
        num = hs[0].series_number
        label = f"series {num}" if num is not None else "series without a number"
        n = sum(h.frames for h in hs)
        example = f", e.g. {hs[0].name!r}" if examples else ""
        parts.append(f"{label} ({hs[0].modality}, {len(hs)} file(s), {n} image(s){example})")
    return "; ".join(parts)


def series_given_for_a_file(name: str) -> UnsupportedDataError:
    """The error for ``series=`` given with a file rather than a folder.

    Parameters
    ----------
    name : str
        The path as given, for the message.

    Returns
    -------
    UnsupportedDataError
        To raise.
    """
    return UnsupportedDataError(
        "series= chooses among the series of a folder, but this path is a file",
        path=name,
        keyword="SeriesInstanceUID",
        argument="series",
        hint="pass the folder with series=, or the file without it",
    )


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _series_of_file(groups: list[list[DicomHeader]], target: str, folder: Path) -> list[DicomHeader] | None | str:
    """The group holding ``target`` (absolute, relative to the folder, or to the working
    directory); ``"missing"`` when no such file exists, None when it is not an image of the folder."""
    candidates = [target] if os.path.isabs(target) else [os.path.join(folder, target), target]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        return "missing"
    real_folder = os.path.realpath(folder)
    for c in found:  # fast path: the name relative to the folder, as the scan recorded it
        rel = os.path.normpath(os.path.relpath(os.path.realpath(c), real_folder))
        for g in groups:
            for h in g:
                if os.path.normpath(h.name) == rel:
                    return g
    keys = {_file_key(c) for c in found} - {None}
    for g in groups:  # links and other spellings: compare the files themselves
        for h in g:
            if _file_key(os.fspath(h.path)) in keys:
                return g
    return None


def _choose(
    groups: list[list[DicomHeader]], series: int | str | os.PathLike[str], folder: Path, where: str
) -> list[DicomHeader]:
    kind, value = parse_series_choice(series)
    holds = f"it holds: {_describe(groups)}"
    if kind == "number":
        chosen = [g for g in groups if g[0].series_number == value]
        if len(chosen) == 1:
            return chosen[0]
        if not chosen:
            raise SeriesGeometryError(
                f"no image series with number {value} in this folder; {holds}", path=where, keyword="SeriesNumber",
                argument="series",
            )
        raise SeriesGeometryError(
            f"several image series with number {value} in this folder; {holds}",
            path=where,
            keyword="SeriesNumber",
            argument="series",
            hint="choose one with series=<path of one of its files> (relative to the folder, e.g. "
            f"series={chosen[0][0].name!r}) or with its SeriesInstanceUID",
        )
    if kind == "uid":
        chosen = [g for g in groups if g[0].series_uid == value]
        if chosen:
            return chosen[0]
        found = _series_of_file(groups, str(series), folder)  # a file named like a UID?
        if isinstance(found, list):
            return found
        raise SeriesGeometryError(
            f"no image series with the SeriesInstanceUID given in this folder; {holds}",
            path=where,
            keyword="SeriesInstanceUID",
            argument="series",
            hint="series= takes a SeriesNumber, a SeriesInstanceUID or the path of one file of the series",
        )
    found = _series_of_file(groups, value, folder)
    if isinstance(found, list):
        return found
    what = "no such file" if found == "missing" else "not one of this folder's DICOM image files"
    raise SeriesGeometryError(
        f"series={value!r}: {what} (paths are taken relative to the folder, or as given); {holds}",
        path=where,
        keyword="SeriesInstanceUID",
        argument="series",
        hint="series= takes a SeriesNumber, a SeriesInstanceUID or the path of one file of the series",
    )


def group_series_files(headers: list[DicomHeader]) -> list[list[DicomHeader]]:
    groups: dict[Any, list[DicomHeader]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    out = list(groups.values())
    out.sort(key=lambda hs: (hs[0].series_number is None, hs[0].series_number or 0))
    return out


def _same(values: list[np.ndarray | None], tol: float) -> int | None:
    """Index of the first value differing from the first one, or None."""
    ref = values[0]
    for i, v in enumerate(values[1:], 1):
        if (v is None) != (ref is None) or (v is not None and np.max(np.abs(v - ref)) > tol):
            return i
    return None


def _key_value(h: DicomHeader, keyword: str) -> tuple[float, ...] | None:
    """The numbers of a top-level attribute (None when absent, empty or not numeric)."""
    try:
        value = h.ds.get(keyword, None)
    except Exception:  # a malformed value: the key is not usable (never echoed)
        return None
    if value is None or isinstance(value, bytes):
        return None
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        numbers_ = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    if not numbers_ or not all(np.isfinite(numbers_)):
        return None
    return numbers_


def _repeats(dist: np.ndarray) -> bool:
    """Whether two positions along the normal lie closer than the duplicate tolerance."""
    return len(dist) > 1 and bool(np.any(np.diff(np.sort(dist)) < DUPLICATE_TOLERANCE_MM))


def _split_volumes(hs: list[DicomHeader], dist: np.ndarray) -> SeriesVolumes | None:
    """Split files whose positions repeat by the first usable key of VOLUME_KEYS.

    A key is usable when every file carries a number for it, it takes at least two
    values, and no position repeats within the files sharing a value. A key with a
    different value in every file while the files lie at several positions is a
    per-slice counter (some scanners number each slice's acquisition), not a
    volume index, and is skipped.
    """
    one_position = float(np.ptp(dist)) < DUPLICATE_TOLERANCE_MM
    for keyword in VOLUME_KEYS:
        values = []
        for h in hs:
            v = _key_value(h, keyword)
            if v is None:
                break
            values.append(v)
        else:
            distinct = sorted(set(values))
            if len(distinct) < 2 or (len(distinct) == len(hs) and not one_position):
                continue
            index = {v: i for i, v in enumerate(distinct)}
            members: list[list[int]] = [[] for _ in distinct]
            for i, v in enumerate(values):
                members[index[v]].append(i)
            groups = [np.array(m, dtype=np.intp) for m in members]
            if any(_repeats(dist[g]) for g in groups):
                continue
            return SeriesVolumes(keyword, groups)
    return None


def _common_checks(hs: list[DicomHeader], where: str, limits: Limits) -> tuple[np.ndarray, np.ndarray] | None:
    """Checks shared by every file of a series; ``(positions, orientation)``, None for a single file."""
    first = hs[0]
    for h in hs:
        h.check_image(limits)
    if len(hs) == 1 and (first.frames > 1 or first.is_enhanced or is_projection(first)):
        return None
    if any(h.frames != 1 or h.is_enhanced for h in hs):
        raise UnsupportedDataError(
            "a series of several multi-frame files is not supported; read each file on its own",
            path=where,
            keyword="NumberOfFrames",
        )
    if is_projection(first):
        raise SeriesGeometryError(
            f"this series holds {len(hs)} projection images; a projection radiograph is one file",
            path=where,
            keyword="SeriesInstanceUID",
            hint="pass the path of one file instead of the folder",
        )
    for attr, kw in (("rows", "Rows"), ("columns", "Columns")):
        bad = [h for h in hs if getattr(h, attr) != getattr(first, attr)]
        if bad:
            raise SeriesGeometryError(
                f"slices differ in {kw}: {first.name!r} and {bad[0].name!r}", path=where, keyword=kw,
                hint="the folder mixes images of different sizes; keep one series per folder",
            )
    iops = [h.orientation() for h in hs]
    ipps = [h.position() for h in hs]
    for h, iop, ipp in zip(hs, iops, ipps):
        if iop is None or ipp is None:
            kw = "ImageOrientationPatient" if iop is None else "ImagePositionPatient"
            raise CorruptFileError(f"a {first.modality} slice must carry {kw}", path=h.name, keyword=kw)
    i = _same(iops, ORIENTATION_TOLERANCE)
    if i is not None:
        ref = iops[0]
        n_other = sum(1 for v in iops if np.max(np.abs(v - ref)) > ORIENTATION_TOLERANCE)
        raise SeriesGeometryError(
            f"mixed orientations: {hs[i].name!r} is oriented differently from {first.name!r} "
            f"({n_other} of {len(hs)} slices differ; localizer/scout images in the series?)",
            path=where,
            keyword="ImageOrientationPatient",
            hint="remove the localizer images or pick the files of one orientation",
        )
    pss = [h.pixel_spacing() for h in hs]
    if pss[0] is None:
        raise CorruptFileError("a slice must carry PixelSpacing", path=first.name, keyword="PixelSpacing")
    i = _same(pss, 1e-4 * max(1.0, float(np.max(pss[0]))))
    if i is not None:
        raise SeriesGeometryError(
            f"slices differ in PixelSpacing: {first.name!r} and {hs[i].name!r}", path=where, keyword="PixelSpacing"
        )
    if np.any(pss[0] <= 0):
        raise CorruptFileError("pixel spacing must be positive", path=first.name, keyword="PixelSpacing")
    return np.array(ipps), iops[0]


def series_geometry_of(
    hs: list[DicomHeader], where: str, limits: Limits
) -> tuple[Stack | None, SeriesVolumes | None, tuple[np.ndarray, np.ndarray] | None]:
    """Check a series (headers only): ``(stack, None, geometry)`` for one volume,
    ``(None, volumes, geometry)`` when repeated positions split it into volumes,
    ``(None, None, None)`` for a single file read as such."""
    geometry = _common_checks(hs, where, limits)
    if geometry is None:
        return None, None, None
    positions, iop = geometry
    first = hs[0]
    try:
        stack = assemble_stack(
            positions, iop, [h.name for h in hs], what="slice", where=where, single_spacing=single_slice_spacing(first)
        )
    except SeriesGeometryError as err:
        normal = check_orientation(iop, name=where)[2]
        dist = positions @ normal
        if not _repeats(dist):  # a gap, tilt, non-uniform spacing: not about volumes
            raise
        volumes = _split_volumes(hs, dist)
        if volumes is None:
            raise SeriesGeometryError(
                err.message, path=err.path, keyword=err.keyword,
                hint=f"{err.hint}; medmulti tried to split the series into volumes by "
                f"{', '.join(VOLUME_KEYS[:-1])} and {VOLUME_KEYS[-1]}, and none of them separated the repeated "
                "positions (each must be present in every file, take at least two values, and give volumes whose "
                "positions do not repeat)",
            ) from None
        return None, volumes, geometry
    limits.check_voxels(len(hs) * first.rows * first.columns, path=where, keyword="Rows")
    return stack, None, geometry


def volume_stack(
    hs: list[DicomHeader], volumes: SeriesVolumes, k: int, geometry: tuple[np.ndarray, np.ndarray], where: str,
    limits: Limits,
) -> Stack:
    """Assemble volume ``k`` on its own; ``Stack.order`` indexes ``hs``."""
    positions, iop = geometry
    members = volumes.groups[k]
    first = hs[int(members[0])]
    limits.check_voxels(len(members) * first.rows * first.columns, path=where, keyword="Rows")
    try:
        stack = assemble_stack(
            positions[members], iop, [hs[int(i)].name for i in members], what="slice", where=where,
            single_spacing=single_slice_spacing(first),
        )
    except SeriesGeometryError as err:
        raise SeriesGeometryError(
            f"volume {k} of {volumes.n} (by {volumes.keyword}): {err.message}",
            path=err.path, keyword=err.keyword, hint=err.hint,
        ) from None
    stack.order = members[stack.order]
    return stack


def refuse_volumes(volumes: SeriesVolumes, where: str) -> UnsupportedDataError:
    """The error for a series holding several volumes read without ``volume=``.

    Parameters
    ----------
    volumes : SeriesVolumes
        The split.
    where : str
        Folder named in the error.

    Returns
    -------
    UnsupportedDataError
        Naming the count, the keyword and the slice counts (never a value).
    """
    return UnsupportedDataError(
        f"this series holds {volumes.describe()}; medmulti reads one 3D volume",
        path=where,
        keyword=volumes.keyword,
        argument="volume",
        hint=f"volume=0..{volumes.n - 1} (manifest column <modality>_volume) reads one; volumes are ordered by "
        f"{volumes.keyword}, ascending",
    )


def _check_volume_index(volume: int, volumes: SeriesVolumes, where: str) -> int:
    if not 0 <= int(volume) < volumes.n:
        raise UnsupportedDataError(
            f"volume={int(volume)} is out of range for {volumes.n} volumes (by {volumes.keyword})",
            path=where,
            keyword=volumes.keyword,
            argument="volume",
            hint=f"volume= is 0-based: 0 to {volumes.n - 1}",
        )
    return int(volume)


def _check_series(
    hs: list[DicomHeader], where: str, limits: Limits, volume: int | None = None
) -> tuple[Stack | None, SeriesVolumes | None]:
    """Check a series and choose its volume (headers only).

    Returns ``(stack, volumes)``: ``stack`` is None for a single file read as
    such; ``volumes`` is None unless repeated positions split the series, in
    which case ``stack`` is that of volume ``volume`` (its ``order`` indexes
    ``hs``). Several volumes without ``volume=``, or ``volume=`` out of range,
    raise UnsupportedDataError; ``volume=`` for a series holding one volume is
    left to the caller (a single file may still take it).
    """
    stack, volumes, geometry = series_geometry_of(hs, where, limits)
    if volumes is None:
        return stack, None
    if volume is None:
        raise refuse_volumes(volumes, where)
    k = _check_volume_index(volume, volumes, where)
    return volume_stack(hs, volumes, k, geometry, where, limits), volumes


def plan_series(
    folder: Path,
    *,
    series: int | str | os.PathLike[str] | None = None,
    volume: int | None = None,
    limits: Limits,
    display: str | None = None,
    root: str | os.PathLike[str] | None = None,
    only: frozenset[str] | None = None,
) -> SeriesPlan:
    """Scan a folder, choose the series and check it (headers only).

    Parameters
    ----------
    folder : pathlib.Path
        The folder.
    series : int, str or os.PathLike, optional
        The series to read when the folder holds several image series: a
        SeriesNumber (int, or a string of digits), a SeriesInstanceUID (a
        string of digits and dots), or the path of one of its files (absolute,
        relative to the folder, or relative to the working directory).
    volume : int, optional
        0-based volume of a series whose slice positions repeat (split by
        :data:`VOLUME_KEYS`); the plan then holds that volume's files. Refused
        for a series of single-frame files holding one volume; passed on for a
        single multi-frame file (checked when it is read).
    limits : Limits
        Caps.
    display : str, optional
        Folder name for messages (default: the path as given).
    root : str or PathLike, optional
        The folder symlinks under ``folder`` may point into (default: ``folder``
        itself); a link leading elsewhere is refused (:func:`scan_folder`).
    only : frozenset of str, optional
        Keep only these attributes of each header (see :func:`scan_folder`);
        default: every attribute.

    Returns
    -------
    SeriesPlan

    Raises
    ------
    MissingFileError
        No DICOM file in the folder; a file or subfolder that cannot be read.
    UnsafePathError
        A symlink under the folder leads outside ``root``.
    UnsupportedDataError
        A FIFO, socket or device under the folder (never opened); only non-image DICOM objects in the folder; a series holding several
        volumes without ``volume=``, ``volume=`` out of range, or given for a
        series of single-frame files holding one volume.
    SeriesGeometryError
        Several series without ``series=``, a ``series`` that names no series
        (or several series sharing a SeriesNumber), or a series that does not
        assemble.
    CorruptFileError, UnsupportedDataError, ResourceLimitError
        As for single files.
    TypeError
        ``series`` of another type.
    """
    where = display or str(folder)
    headers, non_image, non_dicom = scan_folder(folder, limits, display=where, root=root, only=only)
    warnings = []
    if non_image:
        warnings.append(f"{non_image} non-image DICOM object(s) ignored")
    if non_dicom:
        warnings.append(f"{non_dicom} non-DICOM file(s) ignored")
    if not headers and non_image:
        raise UnsupportedDataError(
            f"this folder holds only non-image DICOM objects ({'; '.join(warnings)})",
            path=where,
            keyword="PixelData",
            hint="structured reports, RT objects, DICOMDIR files and presentation states are not images",
        )
    if not headers:
        raise MissingFileError(
            "no DICOM image found in this folder" + (f" ({'; '.join(warnings)})" if warnings else ""),
            path=where,
            hint="check that the path points at a DICOM series folder",
        )
    groups = group_series_files(headers)
    if series is not None:
        hs = _choose(groups, series, folder, where)
        if len(groups) > 1:
            warnings.append(f"{len(groups) - 1} other image series ignored (series= given)")
    elif len(groups) > 1:
        numbers_ = [g[0].series_number for g in groups]
        hint = (
            "pass series=<SeriesNumber> to choose one (or its SeriesInstanceUID, or the path of one of its "
            "files), or give each series its own folder"
        )
        if len(set(numbers_)) < len(numbers_) or None in numbers_:  # numbers cannot tell them apart
            colliding = [g for g, num in zip(groups, numbers_) if num is None or numbers_.count(num) > 1]
            smallest = min(colliding, key=len)
            names = ", ".join(h.name for h in smallest[:5]) + (" ..." if len(smallest) > 5 else "")
            hint = (
                "several series share one SeriesNumber (or have none), so series=<SeriesNumber> cannot tell them "
                "apart: pass series=<path of one of its files> (relative to the folder, e.g. "
                f"series={groups[0][0].name!r}; each series above names one) or its SeriesInstanceUID. "
                f"The smallest ({len(smallest)} file(s): {names}) may be a stray file from another study: "
                "remove it, or move each series to its own folder"
            )
        raise SeriesGeometryError(
            f"this folder holds {len(groups)} image series: {_describe(groups)}",
            path=where,
            keyword="SeriesInstanceUID",
            argument="series",
            hint=hint,
        )
    else:
        hs = groups[0]
    stack, volumes = _check_series(hs, where, limits, volume)
    if stack is None:
        return SeriesPlan(folder, hs, None, True, non_image + non_dicom, warnings)
    if volumes is None:
        no_volume_choice(volume, SINGLE_VOLUME_SERIES, where)
    ordered = [hs[i] for i in stack.order]
    return SeriesPlan(
        folder, ordered, stack, False, non_image + non_dicom, warnings, volumes, None if volumes is None else int(volume)
    )


#: How ``volume=`` refusals name a series of single-frame files without repeated positions.
SINGLE_VOLUME_SERIES = "this series of single-frame files (no slice position repeats)"


def full_header(h: DicomHeader, limits: Limits) -> DicomHeader:
    """Parse ``h``'s file again in full, as :func:`scan_folder` does without ``only=``.

    Parameters
    ----------
    h : DicomHeader
        A header that may hold only some attributes (``read_header(only=...)``).
    limits : Limits
        Caps.

    Returns
    -------
    DicomHeader
        Every attribute of the file.

    Raises
    ------
    MissingFileError
        The file cannot be opened any more.
    CorruptFileError, UnsupportedDataError, ResourceLimitError
        As :func:`~medmulti.io.dicom_header.read_header`.
    """
    try:
        f = open_regular(h.path, name=h.name, follow=False)
    except OSError:
        raise MissingFileError("a file in the folder cannot be read", path=h.name) from None
    with f:
        return read_header(h.path, name=h.name, limits=limits, check_depth=False, fileobj=f)


def read_dicom_series(
    folder: Path,
    modality: str | None = None,
    *,
    series: int | str | os.PathLike[str] | None = None,
    volume: int | None = None,
    limits: Limits,
    workers: int | None = None,
    display: str | None = None,
    plan: SeriesPlan | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Image:
    """Read one DICOM series from a folder into a float32 volume.

    Parameters
    ----------
    folder : pathlib.Path
        The folder (searched recursively).
    modality : str, optional
        Modality recorded when the headers have none.
    series : int, str or os.PathLike, optional
        The series to choose among several: SeriesNumber, SeriesInstanceUID or
        the path of one of its files (see :func:`plan_series`).
    volume : int, optional
        0-based volume when the chosen series holds several: single-frame files
        whose slice positions repeat (split by :data:`VOLUME_KEYS`, ordered by
        the key's value), or one multi-volume enhanced multi-frame file;
        refused for series holding one volume.
    limits : Limits
        Caps.
    workers : int, optional
        Threads decoding a JPEG 2000 series with SimpleITK
        (:func:`~medmulti.io.j2k_threads.decode_series_threads`), or worker
        processes decoding with pydicom where SimpleITK cannot give pydicom's values
        (default: usable CPUs, at most 8; ``1`` decodes with pydicom in this process).
    display : str, optional
        Folder name for messages.
    plan : SeriesPlan, optional
        A plan from :func:`plan_series` (avoids scanning twice).
    root : str or PathLike, optional
        The folder symlinks under ``folder`` may point into (default: ``folder``
        itself); a link leading elsewhere is refused (:func:`scan_folder`).

    Returns
    -------
    Image
        ``(slices, rows, columns)`` float32 after each slice's modality LUT,
        slices ascending along the normal; affine as SimpleITK's. For one
        volume of several, ``meta["volume"]``, ``meta["n_volumes"]`` and
        ``meta["volume_key"]`` (the keyword that split them).

    Raises
    ------
    MissingFileError, CorruptFileError, SeriesGeometryError, UnsupportedDataError, ResourceLimitError
    UnsafePathError
        A symlink under the folder leads outside ``root``.
    """
    where = display or str(folder)
    if plan is None:
        plan = plan_series(folder, series=series, volume=volume, limits=limits, display=where, root=root,
                           only=SERIES_KEYWORDS)
    if plan.single_file:
        img = read_dicom_file(full_header(plan.headers[0], limits), modality, limits, volume=volume)
        img.meta["n_files"] = 1
        return img
    if plan.volumes is None:
        no_volume_choice(volume, SINGLE_VOLUME_SERIES, where)
    elif volume is not None and int(volume) != plan.volume:
        raise ValueError("the plan was made for another volume= than the one given")  # a caller's bug, not the data's
    hs, stack = plan.headers, plan.stack
    first = hs[0]
    mod = first.modality if first.ds.get("Modality", None) else (modality or "OT").upper()
    n = len(hs)
    rescales = [h.rescale() for h in hs]
    compressed = [h for h in hs if not h.is_native]
    nworkers = default_workers() if workers is None else max(1, int(workers))
    vol: np.ndarray | None = None
    if compressed and len(compressed) == n and nworkers > 1 and n >= 2 and all(h.transfer_syntax in THREAD_SYNTAXES for h in hs):
        with reader_errors(where, memory="not enough memory for this series",
                           corrupt="the series' pixel data cannot be decoded"):
            vol = decode_series_threads(hs, rescales, nworkers)  # SimpleITK in threads: no processes
    parallel = vol is None and compressed and len(compressed) == n and nworkers > 1 and n >= 4 \
        and all(h.transfer_syntax in PARALLEL_SYNTAXES for h in hs)
    if parallel and not workers_allowed("JPEG 2000 decoding"):
        parallel = False
    if parallel:
        try:
            vol = decode_series_parallel(hs, rescales, nworkers)
        except MedmultiError:
            raise
        except Exception:  # the pool could not start or a worker died (e.g. a script
            # without an ``if __name__ == "__main__":`` guard): decode here instead
            logger.warning("parallel JPEG 2000 decoding failed; decoding in this process (workers=1)")
            reset_pool()
            parallel = False
    with reader_errors(
        where,
        memory="not enough memory for this series",
        corrupt="the series' pixel data cannot be decoded",  # worker crash (BrokenProcessPool) or unexpected decoder failure
    ):
        if vol is None and not parallel:
            vol = np.empty((n, first.rows, first.columns), np.float32)
            buf = None
            for k, h in enumerate(hs):
                stored = read_stored(h, out=buf)
                if h.is_native:
                    buf = stored
                slope, intercept = rescales[k]
                apply_rescale_into(stored[0], vol[k], slope, intercept)
    ps = first.pixel_spacing()
    affine = affine_from_itk(stack.origin, (ps[1], ps[0], stack.slice_spacing), stack.direction.ravel())
    meta = base_meta(first)
    meta["source"] = "dicom-series"
    meta["n_files"] = n
    meta["compressed"] = bool(compressed)
    first_r = rescales[0]
    meta["rescale"] = {"slope": first_r[0], "intercept": first_r[1]} if all(r == first_r for r in rescales) else {"per_slice": True}
    meta.update(voi_meta(full_header(first, limits).ds, inverted=False, low=0.0, high=0.0))
    if plan.volumes is not None:
        meta["volume"] = plan.volume
        meta["n_volumes"] = plan.volumes.n
        meta["volume_key"] = plan.volumes.keyword
    if plan.warnings:
        meta["warnings"] = list(plan.warnings)
    return Image(vol, affine, (stack.slice_spacing, float(ps[0]), float(ps[1])), mod, meta)
