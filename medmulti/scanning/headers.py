"""Read the headers of a batch of files: the pure, picklable task a scan maps over its files.

:func:`read_batch` takes a :class:`Batch` (file names relative to the root and the
paths to open) and returns a :class:`BatchResult`: one :class:`SeriesPart` per DICOM
series found in the batch (the files of one series in one folder, usually the whole
series) and one :class:`FileNote` per file that is not a DICOM image. It opens each file
once (:func:`medmulti.io.safe_files.open_regular`: regular files only, never a FIFO),
recognises DICOM by its content (preamble and ``DICM``, else a dataset that parses) and
NIfTI by its magic, and parses DICOM headers with the readers' strict header parser
(:func:`medmulti.io.dicom_header.read_header`, no pixels, only the attributes of
:data:`SCAN_KEYWORDS`: explicit VR little endian files are walked by their element
headers rather than parsed element by element). Each series part is checked
with the readers' own header-level geometry rules
(:func:`medmulti.io.dicom_series.series_geometry_of`): what ``read_image`` would say
about it (gaps, mixed orientations, volumes), before any pixel is read.

Identifying values (PatientID, PatientName, AccessionNumber, dates, descriptions)
are kept in the records for grouping, keys and rules; they never leave the scan
package except as the pseudonymous key, and no message here quotes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MedmultiError, UnsupportedDataError
from ..io.assembly import ORIENTATION_TOLERANCE
from ..io.detect import FileFormat, detect_format, sniff_bytes
from ..io.dicom_bytes import FAST_KEYWORDS
from ..io.dicom_file import is_projection
from ..io.dicom_header import DicomHeader, read_header
from ..io.dicom_series import VOLUME_KEYS, series_geometry_of, volume_stack
from ..io.limits import DEFAULT_LIMITS, Limits
from ..io.safe_files import open_regular
from ..io.series_list import plane_of

__all__ = ["Batch", "BatchResult", "SeriesPart", "FileNote", "read_batch", "NOTE_KINDS", "SCAN_KEYWORDS"]

#: The attributes a scan reads from each header (``read_header(only=...)``): those the
#: header's accessors and the readers' series checks use, and those the rules choose by.
SCAN_KEYWORDS = frozenset(FAST_KEYWORDS) | frozenset(VOLUME_KEYS)

#: What a file that is not part of a DICOM image series is: ``nifti`` (a NIfTI file,
#: taken by the spec's patterns), ``not_dicom`` (anything else by content),
#: ``non_image`` (a DICOM object that is not an image: DICOMDIR, SR, RT...),
#: ``corrupt`` (recognised as DICOM, header unparseable), ``unreadable`` (cannot be
#: opened or read), ``no_identity`` (a DICOM image without PatientID).
NOTE_KINDS = ("nifti", "not_dicom", "non_image", "corrupt", "unreadable", "no_identity")


@dataclass(frozen=True)
class Batch:
    """Files to read in one task.

    Attributes
    ----------
    names : tuple of str
        Paths relative to the root (``/``-separated), for records and messages.
    paths : tuple of str
        The files to open (symlinks already resolved inside the root).
    limits : Limits
        The readers' caps.
    """

    names: tuple[str, ...]
    paths: tuple[str, ...]
    limits: Limits = DEFAULT_LIMITS


@dataclass
class FileNote:
    """A file that is not part of a DICOM image series.

    Attributes
    ----------
    name : str
        Path relative to the root.
    kind : str
        One of :data:`NOTE_KINDS`.
    reason : str
        Why, in words (the error class and message for ``corrupt``; never a header value).
    """

    name: str
    kind: str
    reason: str = ""


@dataclass
class SeriesPart:
    """The files of one DICOM series found in one batch (usually one folder: the whole series).

    Identifying fields (``patient_id``, ``patient_name``, ``accession``,
    ``study_date``, ``study_time``, ``description``, ``protocol``,
    ``sequence_name``) are for grouping and rules only: never shown.

    Attributes
    ----------
    patient_id, patient_name, accession : str
        PatientID, PatientName, AccessionNumber of the first file (``""`` when absent).
    study_uid, study_date, study_time : str
        StudyInstanceUID, StudyDate, StudyTime of the first file.
    series_uid : str
        SeriesInstanceUID (``""`` when absent: then the part is one file).
    series_number : int or None
        SeriesNumber.
    modality : str
        DICOM Modality (``"OT"`` when absent).
    description, protocol, sequence_name : str
        SeriesDescription, ProtocolName, SequenceName of the first file.
    image_type : tuple of str
        Every ImageType value of any file (upper case).
    original : bool
        Every file's ImageType starts with ``ORIGINAL``.
    mr_3d : bool
        MRAcquisitionType is ``3D``.
    projection : bool
        Projection radiographs (:func:`medmulti.io.dicom_file.is_projection`).
    enhanced : bool
        An enhanced multi-frame object.
    plane : str
        Of the first file (:func:`medmulti.io.series_list.plane_of`).
    orientation : tuple of float or None
        ImageOrientationPatient of the first file.
    mixed_orientations : bool
        Files oriented differently (beyond the readers' tolerance).
    rows, columns : int
        Of the first file.
    slice_thickness : float or None
        SliceThickness of the first file (mm).
    files : list of str
        Names relative to the root.
    sop_uids : list of str
        SOPInstanceUID per file.
    frames : list of int
        Images per file.
    views : list of str
        ViewPosition per file (upper case, ``""`` when absent).
    pixels : list of int
        Rows x Columns per file.
    file_problems : list of str or None
        Per file, what the readers' header checks say (projection files only; None: fine).
    no_pixels : int
        Files without PixelData.
    geometry : str
        ``"ok"`` (the part assembles as ``read_image`` would read it), ``"problem"``.
    problem : str or None
        The readers' verdict when ``geometry`` is ``"problem"`` (class and message).
    n_volumes : int
        Volumes the series holds (repeated slice positions split by the readers' keys).
    volume_key : str or None
        The keyword that splits them.
    slice_spacing : float or None
        Distance between slices of the (first) volume, mm.
    """

    patient_id: str
    patient_name: str
    accession: str
    study_uid: str
    study_date: str
    study_time: str
    series_uid: str
    series_number: int | None
    modality: str
    description: str
    protocol: str
    sequence_name: str
    image_type: tuple[str, ...]
    original: bool
    mr_3d: bool
    projection: bool
    enhanced: bool
    plane: str
    orientation: tuple[float, ...] | None
    mixed_orientations: bool
    rows: int
    columns: int
    slice_thickness: float | None
    files: list[str] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    pixels: list[int] = field(default_factory=list)
    file_problems: list[str | None] = field(default_factory=list)
    no_pixels: int = 0
    geometry: str = "ok"
    problem: str | None = None
    n_volumes: int = 1
    volume_key: str | None = None
    slice_spacing: float | None = None


@dataclass
class BatchResult:
    """What :func:`read_batch` found.

    Attributes
    ----------
    parts : list of SeriesPart
    notes : list of FileNote
    n_files : int
        Files in the batch.
    """

    parts: list[SeriesPart]
    notes: list[FileNote]
    n_files: int


def _text(h: DicomHeader, keyword: str) -> str:
    """A header value as one stripped text (multiple values joined by a backslash); ``""`` when absent."""
    try:
        value = h.get(keyword)
    except Exception:  # a malformed value: treated as absent (never echoed)
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        return "\\".join(str(v).strip() for v in value)
    if isinstance(value, bytes):
        return ""
    return str(value).strip()


def _float(text: str) -> float | None:
    try:
        value = float(text.split("\\")[0])
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, MedmultiError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"unexpected {type(exc).__name__} while checking the headers"


def _read_one(name: str, path: str, limits: Limits) -> DicomHeader | FileNote:
    """One file: its DICOM header, or a note saying what it is instead."""
    try:
        f = open_regular(path, name=name, follow=False)
    except UnsupportedDataError as exc:  # swapped for a FIFO or device since the walk
        return FileNote(name, "unreadable", exc.message)
    except OSError:
        return FileNote(name, "unreadable", "the file cannot be opened")
    with f:
        try:
            head = f.read(2048)
        except OSError:
            return FileNote(name, "unreadable", "the file cannot be read")
        fmt = sniff_bytes(head)
        if fmt == FileFormat.NIFTI:
            return FileNote(name, "nifti")
        if head[:2] == b"\x1f\x8b":
            try:
                inner = detect_format(path)
            except (OSError, MedmultiError):
                inner = FileFormat.UNKNOWN
            if inner == FileFormat.NIFTI_GZ:
                return FileNote(name, "nifti")
            return FileNote(name, "not_dicom", "a gzip file that is not NIfTI")
        if fmt not in (FileFormat.DICOM, FileFormat.DICOM_RAW):
            return FileNote(name, "not_dicom")
        try:
            return read_header(Path(path), name=name, limits=limits, head=head, check_depth=False, fileobj=f,
                               only=SCAN_KEYWORDS)
        except MedmultiError as exc:
            if fmt == FileFormat.DICOM_RAW:  # a guess from the first bytes only: not DICOM after all
                return FileNote(name, "not_dicom", "not parseable as DICOM")
            return FileNote(name, "corrupt", _error_text(exc))
        except Exception as exc:  # the header parser wraps pydicom; anything else is kept without its text
            return FileNote(name, "corrupt", _error_text(exc))


def _part(hs: list[DicomHeader], where: str, limits: Limits) -> SeriesPart:
    """Summarise the files of one series (headers only) and check them as the readers would."""
    first = hs[0]
    image_type: dict[str, None] = {}
    original = True
    for h in hs:
        values = [v.upper() for v in _text(h, "ImageType").split("\\") if v]
        image_type.update(dict.fromkeys(values))
        original = original and bool(values) and values[0] == "ORIGINAL"
    projection = is_projection(first)
    try:
        iop = first.orientation()
    except MedmultiError:
        iop = None
    mixed = False
    if not projection and len(hs) > 1:
        ref = iop
        for h in hs[1:]:
            try:
                other = h.orientation()
            except MedmultiError:
                other = None
            if (other is None) != (ref is None) or (other is not None and ref is not None
                                                    and float(np.max(np.abs(other - ref))) > ORIENTATION_TOLERANCE):
                mixed = True
                break
    part = SeriesPart(
        patient_id=_text(first, "PatientID"),
        patient_name=_text(first, "PatientName"),
        accession=_text(first, "AccessionNumber"),
        study_uid=_text(first, "StudyInstanceUID"),
        study_date=_text(first, "StudyDate"),
        study_time=_text(first, "StudyTime"),
        series_uid=first.series_uid or "",
        series_number=first.series_number,
        modality=first.modality,
        description=_text(first, "SeriesDescription"),
        protocol=_text(first, "ProtocolName"),
        sequence_name=_text(first, "SequenceName"),
        image_type=tuple(image_type),
        original=original,
        mr_3d=_text(first, "MRAcquisitionType").upper() == "3D",
        projection=projection,
        enhanced=first.is_enhanced,
        plane=plane_of(first),
        orientation=None if iop is None else tuple(float(v) for v in iop),
        mixed_orientations=mixed,
        rows=first.rows,
        columns=first.columns,
        slice_thickness=_float(_text(first, "SliceThickness")),
    )
    for h in hs:
        part.files.append(h.name)
        part.sop_uids.append(_text(h, "SOPInstanceUID"))
        part.frames.append(h.frames)
        part.pixels.append(h.rows * h.columns)
        part.no_pixels += 0 if h.has_pixels else 1
        if projection:
            part.views.append(_text(h, "ViewPosition").upper())
            try:
                h.check_image(limits)
                part.file_problems.append(None)
            except Exception as exc:
                part.file_problems.append(_error_text(exc))
    if projection:
        bad = [p for p in part.file_problems if p is not None]
        if len(bad) == len(hs):
            part.geometry, part.problem = "problem", bad[0]
        return part
    try:
        stack, volumes, geometry = series_geometry_of(hs, where, limits)
        if volumes is not None and geometry is not None:
            part.n_volumes, part.volume_key = volumes.n, volumes.keyword
            spacings = [volume_stack(hs, volumes, k, geometry, where, limits).slice_spacing for k in range(volumes.n)]
            part.slice_spacing = float(spacings[0])
        elif stack is not None:
            part.slice_spacing = float(stack.slice_spacing)
    except Exception as exc:
        part.geometry, part.problem = "problem", _error_text(exc)
    return part


def read_batch(batch: Batch) -> BatchResult:
    """Read the headers of a batch of files and summarise the DICOM series in it (pure; picklable).

    Parameters
    ----------
    batch : Batch
        File names relative to the root, the paths to open, the caps.

    Returns
    -------
    BatchResult
        One :class:`SeriesPart` per SeriesInstanceUID (files without one: a part
        each), in the order their first file was met, and one :class:`FileNote` per
        file that is not a DICOM image (NIfTI files included).

    Notes
    -----
    Never raises for a file: a file that cannot be opened, parsed or checked is a
    note or a part's ``problem``. The header parse stops before the pixel data; a
    file's size is compared with the pixel data its header declares, so a truncated
    file is found without reading its pixels.
    """
    groups: dict[tuple[str, str], list[DicomHeader]] = {}
    notes: list[FileNote] = []
    for name, path in zip(batch.names, batch.paths):
        got = _read_one(name, path, batch.limits)
        if isinstance(got, FileNote):
            notes.append(got)
            continue
        if got.is_non_image:
            notes.append(FileNote(name, "non_image", f"a DICOM {got.modality} object that is not an image"))
            continue
        patient_id = _text(got, "PatientID")
        if not patient_id:
            notes.append(FileNote(name, "no_identity", "a DICOM image without PatientID: whose it is is unknown"))
            continue
        # one series per (patient, SeriesInstanceUID); a file without the UID is a series of its own
        groups.setdefault((patient_id, got.series_uid or f"\x00{name}"), []).append(got)
    parts = []
    for hs in groups.values():
        folders = {h.name.rpartition("/")[0] for h in hs}
        where = hs[0].name if len(hs) == 1 else (folders.pop() if len(folders) == 1 else "several folders") or "."
        parts.append(_part(hs, where, batch.limits))
    return BatchResult(parts=parts, notes=notes, n_files=len(batch.names))
