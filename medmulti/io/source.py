"""``inspect_source``: header-level summary and checks of an image source.

Used by validation on whole cohorts, so it parses headers only (each DICOM file
is opened once) unless ``deep=True``. It applies the same rules as
:func:`~medmulti.io.read_image` for everything decidable from headers (missing
files, unparseable headers, truncation - declared pixel data vs the file's size -,
series choice and geometry) and raises the same typed errors. A ``.nii.gz`` is
also inflated to its end (no value is converted), so a cut or damaged gzip
stream raises :class:`~medmulti.errors.CorruptFileError` as ``read_image`` does.

Identity attributes are never returned, only short SHA-256 digests of them, so
two sources can be compared (same patient? same study? same frame of
reference? same image, by a 64 KiB pixel probe?) without anything identifying
being printed or stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFileError, UnsupportedDataError
from ..image import affine_from_itk
from .assembly import check_orientation
from .detect import FileFormat
from .dicom_enhanced import enhanced_geometry
from .dicom_file import is_projection, single_slice_spacing
from .dicom_header import UNKNOWN_SPACING_WARNING, DicomHeader, read_header
from .dicom_series import SERIES_KEYWORDS, full_header, plan_series, series_given_for_a_file
from .error_ladder import source_errors
from .limits import DEFAULT_LIMITS, Limits
from .nifti import NiftiStream, checked_affine, finish_nifti_stream, itk_geometry, read_nifti_header
from .quiet import quiet_pydicom
from .reader import read_image, resolve_format
from .safe_files import open_regular
from .source_ref import SourceRef, parse_series_choice
from .volume_choice import check_volume_argument, no_volume_choice

__all__ = ["SourceInfo", "SourceRef", "inspect_source", "digest", "identity_key"]

DIGEST_HEX = 16
#: Most bytes of stored pixel data (DICOM) or of the file (NIfTI) the fast-mode
#: ``"pixels_probe"`` digest reads, taken from the middle.
PROBE_BYTES = 64 * 1024


def digest(*values: Any) -> str | None:
    """Short SHA-256 hex digest of values (None when all are empty).

    Parameters
    ----------
    *values : any
        Values (converted with ``str`` and stripped).

    Returns
    -------
    str or None
        The first 16 hex characters of the SHA-256 of the values joined by
        ``\\x1f``; never print or store it with the values.
    """
    parts = ["" if v is None else str(v).strip() for v in values]
    if not any(parts):
        return None
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()[:DIGEST_HEX]


@dataclass
class SourceInfo:
    """Header-level summary of one image source (no identifying values).

    Attributes
    ----------
    kind : str
        ``"dicom-series"``, ``"dicom-file"`` or ``"nifti"``.
    modality : str
        DICOM Modality, or the given modality / ``"MR"`` for NIfTI.
    shape : tuple of int
        Array shape ``read_image`` returns (array axis order).
    spacing : tuple of float
        mm, array axis order.
    files : list of pathlib.Path
        Files making up the image (sorted slice order for a series).
    n_files : int
    digests : dict
        ``"patient"``, ``"study"``, ``"series"``, ``"frame_of_reference"``,
        ``"pixels"``, ``"pixels_probe"`` -> short SHA-256 hex or None
        (``"pixels"`` only with ``deep=True``). ``"pixels_probe"`` is a cheap
        sample of the image (see :func:`inspect_source`, Notes), computed in
        both modes. Compare them; never print them.
    warnings : list of str
        Notes without header values.
    affine : numpy.ndarray or None
        The affine ``read_image`` returns (None for projection radiographs).
    patient_keys, study_keys : frozenset of str
        DICOM only: the distinct short digests of each file's PatientID and
        StudyInstanceUID (:func:`identity_key`), so validation can tell whether
        the files mix patients or studies without opening them again. Empty for
        NIfTI. Compare them; never print them.
    """

    kind: str
    modality: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    files: list[Path]
    n_files: int
    digests: dict[str, str | None]
    warnings: list[str] = field(default_factory=list)
    affine: np.ndarray | None = None
    patient_keys: frozenset[str] = frozenset()
    study_keys: frozenset[str] = frozenset()


def identity_key(value: Any) -> str:
    """Short SHA-256 digest of one identity value, empty values included.

    Parameters
    ----------
    value : any
        A PatientID or StudyInstanceUID (``None`` counts as empty).

    Returns
    -------
    str
        16 hex characters of the SHA-256 of ``str(value).strip()``; equal values
        give equal keys, an empty value has a key too (unlike :func:`digest`).
    """
    text = "" if value is None else str(value).strip()
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_HEX]


def _values(headers: list[DicomHeader], keyword: str) -> list[Any]:
    """``h.ds.get(keyword)`` for each header, each distinct stored value converted once.

    The files of a series repeat their identity attributes byte for byte; pydicom's
    conversion of an element costs 20-40 us, so converting each file's copy again
    was a quarter of a fast validation. Two elements share a conversion only when
    their raw bytes, VR, encoding and the file's SpecificCharacterSet bytes are equal.
    """
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    seen: dict[tuple[Any, ...], Any] = {}
    out = []
    for h in headers:
        store = getattr(h.ds, "_dict", None)
        elem = None if store is None else store.get(tag)
        if elem is None or not getattr(elem, "is_raw", False) or not isinstance(elem.value, bytes):
            out.append(h.ds.get(keyword, None))
            continue
        charset = store.get(0x00080005)
        charset_key = charset.value if getattr(charset, "is_raw", False) else repr(getattr(charset, "value", None))
        key = (elem.VR, elem.is_implicit_VR, elem.is_little_endian, elem.value, charset_key)
        if key not in seen:
            seen[key] = h.ds.get(keyword, None)
        out.append(seen[key])
    return out


def _with_identities(info: SourceInfo, headers: list[DicomHeader]) -> SourceInfo:
    info.patient_keys = frozenset(identity_key(v) for v in _values(headers, "PatientID"))
    info.study_keys = frozenset(identity_key(v) for v in _values(headers, "StudyInstanceUID"))
    return info


def _identity_digests(h: DicomHeader) -> dict[str, str | None]:
    ds = h.ds
    return {
        "patient": digest(ds.get("PatientID", None), ds.get("PatientName", None), ds.get("PatientBirthDate", None)),
        "study": digest(ds.get("StudyInstanceUID", None)),
        "series": digest(ds.get("SeriesInstanceUID", None)),
        "frame_of_reference": digest(ds.get("FrameOfReferenceUID", None)),
        "pixels": None,
        "pixels_probe": None,
    }


def _probe_digest(fields: tuple[Any, ...], block: bytes) -> str:
    sha = hashlib.sha256("\x1f".join(str(v) for v in fields).encode("ascii", "replace") + b"\x1e")
    sha.update(block)
    return sha.hexdigest()[:DIGEST_HEX]


def _middle(start: int, length: int) -> tuple[int, int]:
    """Offset and size of the (at most) PROBE_BYTES in the middle of ``length`` bytes from ``start``."""
    n = min(PROBE_BYTES, max(0, length))
    return start + (length - n) // 2, n


def _dicom_probe(h: DicomHeader, n_files: int, volume: int | None) -> str | None:
    """Probe digest of one DICOM file's stored pixel data (None without PixelData).

    Over (Rows, Columns, frames, transfer syntax, PixelData length, ``n_files``,
    ``volume``) and at most :data:`PROBE_BYTES` of the stored PixelData bytes
    from the middle of the value: one seek and one small read.
    """
    if h.pixel_offset is None:
        return None
    available = max(0, h.file_size - h.pixel_offset)
    length = available if h.pixel_length is None else min(h.pixel_length, available)
    start, n = _middle(h.pixel_offset, length)
    with h.open_pixels() as f:
        f.seek(start)
        block = f.read(n)
    fields = ("dicom", h.rows, h.columns, h.frames, h.transfer_syntax, length, n_files, volume)
    return _probe_digest(fields, block)


def _nifti_probe(p: Path, info: Any, volume: int | None) -> str:
    """Probe digest of a NIfTI file: header dims/datatype and at most PROBE_BYTES of the file's middle.

    The bytes are the file's (compressed for ``.nii.gz``), so only a byte-identical
    copy matches.
    """
    import os

    size = os.path.getsize(p)
    start, n = _middle(0, size)
    with open_regular(p) as f:
        f.seek(start)
        block = f.read(n)
    fields = ("nifti", tuple(int(d) for d in info.shape), info.dtype.str, size, volume)
    return _probe_digest(fields, block)


def _pixel_digest(headers: list[DicomHeader]) -> str:
    sha = hashlib.sha256()
    for h in headers:
        with h.open_pixels() as f:
            remaining = h.pixel_length if h.pixel_length is not None else h.file_size - h.pixel_offset
            while remaining > 0:
                block = f.read(min(1 << 20, remaining))
                if not block:
                    break
                sha.update(block)
                remaining -= len(block)
    return sha.hexdigest()[:DIGEST_HEX]


def _inspect_dicom_file(h: DicomHeader, name: str, limits: Limits, volume: int | None = None) -> SourceInfo:
    h.check_image(limits)
    digests = _identity_digests(h)
    if is_projection(h):
        if h.frames != 1:
            raise UnsupportedDataError("multi-frame projection images are not supported", path=name, keyword="NumberOfFrames")
        no_volume_choice(volume, "a projection image", name)
        spacing, spacing_source = h.projection_spacing()
        h.modality_lut()  # a damaged Modality LUT is refused here, as read_image does
        warnings = [UNKNOWN_SPACING_WARNING] if spacing_source == "none" else []
        return SourceInfo("dicom-file", h.modality, (h.rows, h.columns), spacing, [h.path], 1, digests, warnings)
    n_frames = h.frames
    if h.is_enhanced:
        stack, ps, _ = enhanced_geometry(h, volume=volume)
        dz = stack.slice_spacing
        origin, direction = stack.origin, stack.direction
        n_frames = len(stack.order)
    else:
        if h.frames != 1:
            raise UnsupportedDataError("multi-frame objects without functional groups are not supported", path=name, keyword="NumberOfFrames")
        no_volume_choice(volume, "a single-frame DICOM file", name)
        h.modality_lut()  # a damaged Modality LUT is refused here, as read_image does
        ipp, iop, ps = h.position(), h.orientation(), h.pixel_spacing()
        for value, kw in ((ipp, "ImagePositionPatient"), (iop, "ImageOrientationPatient"), (ps, "PixelSpacing")):
            if value is None:
                raise CorruptFileError(f"a {h.modality} slice must carry {kw}", path=name, keyword=kw)
        row, col, normal = check_orientation(iop, name=name)
        dz, origin, direction = single_slice_spacing(h), ipp, np.column_stack([row, col, normal])
    affine = affine_from_itk(origin, (ps[1], ps[0], dz), direction.ravel())
    return SourceInfo(
        "dicom-file", h.modality, (n_frames, h.rows, h.columns), (dz, float(ps[0]), float(ps[1])), [h.path], 1, digests, [], affine
    )


def _inspect_nifti(p: Path, name: str, gz: bool, modality: str | None, volume: int | None, limits: Limits) -> SourceInfo:
    import os

    with NiftiStream(p, gz, name) as stream:
        info, consumed = read_nifti_header(stream, name, limits)
        shape = info.shape
        if len(shape) == 4 and volume is None:
            raise UnsupportedDataError(
                f"this NIfTI file is 4D ({shape[3]} volumes); medmulti reads 3D volumes",
                path=name, keyword="dim", argument="volume", hint="pass volume=<index> (0-based) to read one of them",
            )
        if len(shape) == 4 and not 0 <= int(volume) < shape[3]:
            raise UnsupportedDataError(f"volume={int(volume)} is out of range for {shape[3]} volumes", path=name, keyword="dim", argument="volume")
        if len(shape) == 3 and volume not in (None, 0):  # as read_image
            raise UnsupportedDataError("volume= was given but the NIfTI file is 3D", path=name, keyword="dim", argument="volume")
        need = info.vox_offset + int(np.prod(shape, dtype=object)) * info.dtype.itemsize
        if not gz and os.path.getsize(p) < need:
            raise CorruptFileError("the NIfTI file is truncated: it ends before the declared data", path=name, keyword="dim")
        if gz:
            # inflate the whole stream (no value conversion) as read_image does: a cut or damaged
            # .nii.gz is an error here, not at training time
            finish_nifti_stream(stream, need - consumed, name)
    origin, spacing, direction, _ = itk_geometry(p, name, info.header, gz=gz)
    nx, ny, nz = shape[:3]
    return SourceInfo(
        "nifti",
        (modality or "MR").upper(),
        (nz, ny, nx),
        (float(spacing[2]), float(spacing[1]), float(spacing[0])),
        [p],
        1,
        {"patient": None, "study": None, "series": None, "frame_of_reference": None, "pixels": None,
         "pixels_probe": _nifti_probe(p, info, volume)},
        [],
        checked_affine(origin, spacing, direction, name),
    )


#: The attributes :func:`inspect_source` keeps of each file of a series folder: those
#: :func:`~medmulti.io.read_image` keeps (:data:`~medmulti.io.dicom_series.SERIES_KEYWORDS`,
#: which explicit VR little endian files give by a walk of their element headers instead of
#: a full parse) and the identity attributes the checks digest. A folder holding one file
#: is checked from that file's whole header, as ``read_image`` reads it.
INSPECT_KEYWORDS = SERIES_KEYWORDS | frozenset({
    "PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "FrameOfReferenceUID",
})


@quiet_pydicom
def inspect_source(
    path: str | PathLike[str],
    *,
    modality: str | None = None,
    deep: bool = False,
    series: int | str | PathLike[str] | None = None,
    volume: int | None = None,
    limits: Limits | None = None,
    root: str | PathLike[str] | None = None,
) -> SourceInfo:
    """Summarise and check an image source from its headers.

    Parameters
    ----------
    path : str, PathLike or SourceRef
        DICOM file, DICOM series folder or NIfTI file; a :class:`SourceRef`
        also gives ``series`` and ``volume`` (the explicit arguments win).
    modality : str, optional
        Modality named in errors (and recorded for NIfTI).
    deep : bool
        Also decode every pixel (as :func:`read_image` does) and digest the raw
        pixel bytes.
    series : int, str or PathLike, optional
        The series to choose among several in a folder: SeriesNumber,
        SeriesInstanceUID or the path of one of its files (as
        :func:`read_image`).
    volume : int, optional
        Volume of a 4D NIfTI file, of a multi-volume enhanced DICOM file, or of
        a series of single-frame files whose slice positions repeat (as
        :func:`read_image`); the info then describes that volume's files.
    limits : Limits, optional
        Caps (default :data:`~medmulti.io.limits.DEFAULT_LIMITS`).
    root : str or PathLike, optional
        For a folder: the folder symlinks inside it may point into (default:
        the folder itself; a ``SourceRef`` may carry one), as ``root=`` of
        :func:`read_image`.

    Returns
    -------
    SourceInfo

    Raises
    ------
    MissingFileError, CorruptFileError, UnsupportedDataError, SeriesGeometryError, ResourceLimitError
        As :func:`read_image` for anything decidable from the headers (and
        everything else with ``deep=True``); a FIFO, socket or device is
        :class:`UnsupportedDataError` (never opened). A ``.nii.gz`` whose gzip
        stream ends early, fails to inflate or fails its CRC-32/length check
        is :class:`CorruptFileError` in both modes (the stream is inflated,
        not decoded; see :func:`~medmulti.io.nifti.finish_nifti_stream`).
    UnsafePathError
        A symlink inside the folder leads outside ``root`` (or loops).

    Notes
    -----
    ``digests["pixels_probe"]`` (both modes) lets validation find the same image
    under two patients without reading every pixel: a SHA-256 over the image's
    shape and encoding and at most :data:`PROBE_BYTES` (64 KiB) taken from the
    middle of the stored data, one small read per source. For a DICOM file: Rows,
    Columns, frames, transfer syntax, PixelData length and the middle of the
    stored PixelData bytes; for a DICOM series: the same over its middle file in
    slice order, plus the number of files; for NIfTI: the header's dims and
    datatype, the file size and the middle of the file's bytes (the compressed
    bytes of a ``.nii.gz``: a byte-identical copy matches, one re-compressed
    with other settings does not). Equal probes mean "very probably the same image"; pixels outside
    the sample are not compared (``deep=True`` digests all of them in
    ``digests["pixels"]``).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> info = inspect_source(get_testdata_file("MR_small.dcm"))
    >>> info.kind, info.shape
    ('dicom-file', (1, 64, 64))
    """
    limits = DEFAULT_LIMITS if limits is None else limits
    if isinstance(path, SourceRef):
        root = path.root if root is None else root
        path, series, volume = path.resolve(series, volume)
    name = str(path)
    p = Path(path)
    if series is not None:
        parse_series_choice(series)  # TypeError for a wrong type
    check_volume_argument(volume)
    with source_errors(name, modality, memory="not enough memory to inspect this source", fill=("modality",)):
        if p.is_dir():
            plan = plan_series(p, series=series, volume=volume, limits=limits, display=name, root=root,
                               only=INSPECT_KEYWORDS)
            if plan.single_file:  # checked as a single file is: from its whole header
                full = full_header(plan.headers[0], limits)
                info = _inspect_dicom_file(full, full.name, limits, volume)
                info.kind = "dicom-series"
                info.warnings = list(plan.warnings) + list(info.warnings)
                headers = [full]
            else:
                headers = plan.headers  # volume= was checked by plan_series (the chosen volume's files)
                first, stack = headers[0], plan.stack
                ps = first.pixel_spacing()
                digests = _identity_digests(first)
                warnings = list(plan.warnings)
                people = zip(*(_values(headers, k) for k in ("PatientID", "PatientName", "PatientBirthDate")))
                if len({digest(*person) for person in people}) > 1:
                    warnings.append("the files of this series belong to more than one patient identity")
                info = SourceInfo(
                    "dicom-series",
                    first.modality,
                    (len(headers), first.rows, first.columns),
                    (stack.slice_spacing, float(ps[0]), float(ps[1])),
                    [h.path for h in headers],
                    len(headers),
                    digests,
                    warnings,
                    affine_from_itk(stack.origin, (ps[1], ps[0], stack.slice_spacing), stack.direction.ravel()),
                )
            _with_identities(info, headers)
            # the files are the chosen volume's, in slice order: the middle one stands for the series
            middle = headers[len(headers) // 2]
            info.digests["pixels_probe"] = _dicom_probe(middle, len(headers), volume if plan.single_file else None)
            if deep:
                read_image(p, modality, series=series, volume=volume, limits=limits, root=root)
                info.digests["pixels"] = _pixel_digest(headers)
            return info
        if series is not None and p.exists():
            raise series_given_for_a_file(name)
        fmt = resolve_format(p, name)
        if fmt in (FileFormat.NIFTI, FileFormat.NIFTI_GZ):
            info = _inspect_nifti(p, name, fmt == FileFormat.NIFTI_GZ, modality, volume, limits)
            if deep:
                img = read_image(p, modality, volume=volume, limits=limits)
                info.digests["pixels"] = hashlib.sha256(img.array.tobytes()).hexdigest()[:DIGEST_HEX]
            return info
        h = read_header(p, name=name, limits=limits)
        info = _with_identities(_inspect_dicom_file(h, name, limits, volume), [h])
        info.digests["pixels_probe"] = _dicom_probe(h, 1, volume)
        if deep:
            read_image(p, modality, volume=volume, limits=limits)
            info.digests["pixels"] = _pixel_digest([h])
        return info
