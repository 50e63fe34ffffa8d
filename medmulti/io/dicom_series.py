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
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFileError, MedmultiError, MissingFileError, SeriesGeometryError, UnsupportedDataError
from ..image import Image, affine_from_itk
from .assembly import ORIENTATION_TOLERANCE, Stack, assemble_stack
from .detect import FileFormat, sniff_bytes
from .dicom_file import base_meta, is_projection, no_volume_choice, read_dicom_file, single_slice_spacing
from .dicom_header import DicomHeader, read_header
from .limits import Limits
from .pixels import PARALLEL_SYNTAXES, _decode_options, decode_compressed_file, decode_pool, default_workers, read_stored, reset_pool
from .values import apply_rescale_into, voi_meta

__all__ = ["SeriesPlan", "scan_folder", "plan_series", "read_dicom_series", "parse_series_choice"]

logger = logging.getLogger("medmulti.io")

_UID = re.compile(r"[0-9]+(\.[0-9]+)+")
_NUMBER = re.compile(r"[0-9]+")


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
    """

    folder: Path
    headers: list[DicomHeader]
    stack: Stack | None
    single_file: bool
    ignored: int = 0
    warnings: list[str] = field(default_factory=list)


def scan_folder(folder: Path, limits: Limits, *, display: str | None = None) -> tuple[list[DicomHeader], int, int]:
    """Parse the header of every DICOM image file under ``folder`` (recursively).

    Parameters
    ----------
    folder : pathlib.Path
        The folder.
    limits : Limits
        Caps (``max_files`` bounds the walk).
    display : str, optional
        Folder name for messages.

    Returns
    -------
    (headers, n_non_image, n_non_dicom)
        Image headers in path order, and the counts of skipped files.

    Raises
    ------
    ResourceLimitError
        More than ``limits.max_files`` files.
    CorruptFileError
        A DICOM file that cannot be parsed (named relative to the folder).
    """
    from ..errors import ResourceLimitError

    headers: list[DicomHeader] = []
    non_image = non_dicom = 0
    count = 0
    base = os.fspath(folder)
    for root, dirs, files in os.walk(base):
        dirs.sort()
        rel_root = os.path.relpath(root, base)
        for fname in sorted(files):
            count += 1
            if count > limits.max_files:
                raise ResourceLimitError(
                    f"more than {limits.max_files:,} files under this folder", path=display or str(folder),
                    hint="point medmulti at one series folder, or raise Limits(max_files=...)",
                )
            path = os.path.join(root, fname)
            name = fname if rel_root == "." else os.path.join(rel_root, fname)
            try:
                if not os.path.isfile(path):
                    continue
                f = open(path, "rb")
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
                h = read_header(Path(path), name=name, limits=limits, head=head, check_depth=False, fileobj=f)
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


def parse_series_choice(series: int | str | os.PathLike[str]) -> tuple[str, int | str]:
    """Tell what a ``series=`` argument names.

    Parameters
    ----------
    series : int, str or os.PathLike
        An int or a string of digits is a SeriesNumber; a string of digits and
        dots (with at least one dot) is a SeriesInstanceUID; any other string
        or path is a file of the wanted series.

    Returns
    -------
    (kind, value)
        ``("number", int)``, ``("uid", str)`` or ``("file", str)``.

    Raises
    ------
    TypeError
        Any other type (``bool`` and ``float`` included).
    """
    if isinstance(series, bool):
        raise TypeError("series= must be a SeriesNumber (int), a SeriesInstanceUID or a file path, not bool")
    if isinstance(series, numbers.Integral):
        return "number", int(series)
    if isinstance(series, os.PathLike):
        return "file", os.fspath(series)
    if isinstance(series, str):
        text = series.strip()
        if _NUMBER.fullmatch(text):
            return "number", int(text)
        if _UID.fullmatch(text):
            return "uid", text
        return "file", series
    raise TypeError(
        f"series= must be a SeriesNumber (int), a SeriesInstanceUID or a file path, not {type(series).__name__}"
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
                f"no image series with number {value} in this folder; {holds}", path=where, keyword="SeriesNumber"
            )
        raise SeriesGeometryError(
            f"several image series with number {value} in this folder; {holds}",
            path=where,
            keyword="SeriesNumber",
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
        hint="series= takes a SeriesNumber, a SeriesInstanceUID or the path of one file of the series",
    )


def _group(headers: list[DicomHeader]) -> list[list[DicomHeader]]:
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


def _check_series(hs: list[DicomHeader], where: str, limits: Limits) -> Stack | None:
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
    limits.check_voxels(len(hs) * first.rows * first.columns, path=where, keyword="Rows")
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
    return assemble_stack(
        np.array(ipps), iops[0], [h.name for h in hs], what="slice", where=where, single_spacing=single_slice_spacing(first)
    )


def plan_series(
    folder: Path, *, series: int | str | os.PathLike[str] | None = None, limits: Limits, display: str | None = None
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
    limits : Limits
        Caps.
    display : str, optional
        Folder name for messages (default: the path as given).

    Returns
    -------
    SeriesPlan

    Raises
    ------
    MissingFileError
        No DICOM file in the folder.
    UnsupportedDataError
        Only non-image DICOM objects in the folder.
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
    headers, non_image, non_dicom = scan_folder(folder, limits, display=where)
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
    groups = _group(headers)
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
            hint=hint,
        )
    else:
        hs = groups[0]
    stack = _check_series(hs, where, limits)
    if stack is None:
        return SeriesPlan(folder, hs, None, True, non_image + non_dicom, warnings)
    ordered = [hs[i] for i in stack.order]
    return SeriesPlan(folder, ordered, stack, False, non_image + non_dicom, warnings)


def _decode_parallel(hs: list[DicomHeader], vol: np.ndarray, rescales, workers: int) -> None:
    pool = decode_pool(workers)
    args = [(str(h.path), h.pixel_offset, h.transfer_syntax, _decode_options(h), h.name, h.buffer) for h in hs]
    chunk = max(1, len(args) // (workers * 8))
    results = pool.map(_decode_star, args, chunksize=chunk)
    for k, stored in enumerate(results):
        slope, intercept = rescales[k]
        apply_rescale_into(stored[0], vol[k], slope, intercept)


def _decode_star(args):
    return decode_compressed_file(*args)


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
        0-based volume when the chosen series is one multi-stack enhanced
        multi-frame file; refused for other series.
    limits : Limits
        Caps.
    workers : int, optional
        Processes used to decode JPEG 2000 series (default: usable CPUs, at most
        8; ``1`` decodes in this process).
    display : str, optional
        Folder name for messages.
    plan : SeriesPlan, optional
        A plan from :func:`plan_series` (avoids scanning twice).

    Returns
    -------
    Image
        ``(slices, rows, columns)`` float32 after each slice's modality LUT,
        slices ascending along the normal; affine as SimpleITK's.

    Raises
    ------
    MissingFileError, CorruptFileError, SeriesGeometryError, UnsupportedDataError, ResourceLimitError
    """
    where = display or str(folder)
    if plan is None:
        plan = plan_series(folder, series=series, limits=limits, display=where)
    if plan.single_file:
        img = read_dicom_file(plan.headers[0], modality, limits, volume=volume)
        img.meta["n_files"] = 1
        return img
    no_volume_choice(volume, "a DICOM series of single-frame files", where)
    hs, stack = plan.headers, plan.stack
    first = hs[0]
    mod = first.modality if first.ds.get("Modality", None) else (modality or "OT").upper()
    n = len(hs)
    vol = np.empty((n, first.rows, first.columns), np.float32)
    rescales = [h.rescale() for h in hs]
    compressed = [h for h in hs if not h.is_native]
    nworkers = default_workers() if workers is None else max(1, int(workers))
    parallel = compressed and len(compressed) == n and nworkers > 1 and n >= 4 and all(h.transfer_syntax in PARALLEL_SYNTAXES for h in hs)
    if parallel:
        try:
            _decode_parallel(hs, vol, rescales, nworkers)
        except MedmultiError:
            raise
        except Exception:  # the pool could not start or a worker died (e.g. a script
            # without an ``if __name__ == "__main__":`` guard): decode here instead
            logger.warning("parallel JPEG 2000 decoding failed; decoding in this process (workers=1)")
            reset_pool()
            parallel = False
    try:
        if not parallel:
            buf = None
            for k, h in enumerate(hs):
                stored = read_stored(h, out=buf)
                if h.is_native:
                    buf = stored
                slope, intercept = rescales[k]
                apply_rescale_into(stored[0], vol[k], slope, intercept)
    except MedmultiError:
        raise
    except MemoryError:
        from ..errors import ResourceLimitError

        raise ResourceLimitError("not enough memory for this series", path=where) from None
    except Exception:  # worker crash (BrokenProcessPool) or unexpected decoder failure
        raise CorruptFileError("the series' pixel data cannot be decoded", path=where) from None
    ps = first.pixel_spacing()
    affine = affine_from_itk(stack.origin, (ps[1], ps[0], stack.slice_spacing), stack.direction.ravel())
    meta = base_meta(first)
    meta["source"] = "dicom-series"
    meta["n_files"] = n
    meta["compressed"] = bool(compressed)
    first_r = rescales[0]
    meta["rescale"] = {"slope": first_r[0], "intercept": first_r[1]} if all(r == first_r for r in rescales) else {"per_slice": True}
    meta.update(voi_meta(first.ds, inverted=False, low=0.0, high=0.0))
    if plan.warnings:
        meta["warnings"] = list(plan.warnings)
    return Image(vol, affine, (stack.slice_spacing, float(ps[0]), float(ps[1])), mod, meta)
