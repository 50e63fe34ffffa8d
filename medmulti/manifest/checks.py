"""The checks: per row (pure function of the row and the spec) and across rows.

:func:`check_row` reads each input of one row at header level through
:func:`medmulti.io.inspect_source` (``deep=True`` also decodes the pixels) and
returns every problem it finds; :func:`cross_row_checks` compares the rows'
identity digests (leakage, duplicated images, the same study under two patients)
and the label counts. Digests are compared, never printed: no message holds a
value read from a header.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import (
    CorruptFileError,
    MedmultiError,
    MissingFileError,
    ResourceLimitError,
    SeriesGeometryError,
    UnsafePathError,
    UnsupportedDataError,
)
from ..intensity import foreground_mask
from ..io import inspect_source, read_image
from ..io.safe_files import check_regular, list_files, open_regular
from ..io.source import identity_key
from ..io.source_ref import SourceRef
from ..spec import KIND_MODALITIES, StudySpec
from .identity import PersonDigests, person_digests
from .report import Problem
from .schema import SERIES_SUFFIX, SPLITS, VOLUME_SUFFIX, ManifestRow, canonical_key, check_fields

__all__ = [
    "RowCheck",
    "CHECKS",
    "check_row",
    "cross_row_checks",
    "sha256_of",
    "ERROR_CHECKS",
    "HEADER_MODALITIES",
    "ANISOTROPY_WARN_RATIO",
    "IMBALANCE_WARN_FRACTION",
    "TINY_SPLIT_PATIENTS",
    "LOW_COVERAGE_FRACTION",
    "coverage_fraction",
]

log = logging.getLogger("medmulti.manifest")

#: Reader error type -> (check name, what to do).
ERROR_CHECKS: dict[type, tuple[str, str]] = {
    MissingFileError: ("missing_file", "check the path: the file or folder does not exist or cannot be read"),
    CorruptFileError: ("corrupt_file", "the file is truncated or damaged: export it again from the PACS"),
    SeriesGeometryError: ("series_geometry", "the series does not form one regular volume (missing, duplicate or "
                                             "mixed slices): export the complete series again into its own folder"),
    UnsupportedDataError: ("unsupported_data", "point the manifest at an image (CT/MR series, X-ray file, NIfTI) "
                                               "that medmulti reads"),
    ResourceLimitError: ("resource_limit", "the input is larger than the configured limits, or declares more data "
                                           "than it holds: check the file, or raise the limits"),
    UnsafePathError: ("unsafe_path", "a symlink in the input's folder leads outside the manifest folder: copy the "
                                     "file into the folder instead of linking to it"),
}

#: Check name -> what to do, for a reader error that carries no hint of its own.
_DEFAULT_HINTS = {check: hint for check, hint in ERROR_CHECKS.values()}

#: Every check name validation reports -> its severity (the names are stable: tools read them).
CHECKS: dict[str, str] = {
    "bad_split": "error",
    "bad_fold": "error",
    "unknown_label": "error",
    "bad_sha256": "error",
    "bad_series": "error",
    "bad_volume": "error",
    "unsafe_path": "error",
    "missing_modality": "error",
    "missing_file": "error",
    "corrupt_file": "error",
    "series_geometry": "error",
    "unsupported_data": "error",
    "resource_limit": "error",
    "read_error": "error",
    "modality_mismatch": "error",
    "wrong_dims": "error",
    "patient_identity": "error",
    "sha256_mismatch": "error",
    "duplicate_row": "error",
    "patient_in_two_splits": "error",
    "same_study_two_patients": "error",
    "duplicate_image": "error",
    "no_inputs": "error",
    "not_a_volume": "error",
    "no_overlap": "error",
    "same_person_two_keys": "error",
    "same_person_one_split": "warning",
    "identity_not_compared": "warning",
    "low_coverage": "warning",
    "no_reference": "warning",
    "one_class_split": "warning",
    "class_imbalance": "warning",
    "tiny_split": "warning",
    "anisotropic_spacing": "warning",
    "reader_warning": "warning",
    "key_normalised": "warning",
}

#: Spec kind -> DICOM Modality values accepted in the header (the one table, in the spec).
HEADER_MODALITIES = KIND_MODALITIES

#: 3D inputs whose largest/smallest voxel size exceeds this ratio get a warning.
ANISOTROPY_WARN_RATIO = 4.0
#: A class whose share of the labelled rows is below this gets a warning.
IMBALANCE_WARN_FRACTION = 0.2
#: A split with fewer patients than this (but some) gets a warning.
TINY_SPLIT_PATIENTS = 5
#: A 3D input covering less than this share of the reference's field of view gets a warning.
LOW_COVERAGE_FRACTION = 0.5
#: Sample points per axis of the reference grid for :func:`coverage_fraction`.
COVERAGE_SAMPLES = 16

_IDENTITY_TAGS = ["PatientID", "StudyInstanceUID"]


@dataclass
class RowCheck:
    """Result of :func:`check_row`.

    Parameters
    ----------
    row : ManifestRow
        The row checked.
    problems : list of Problem
        Everything found in this row alone.
    sources : dict
        Modality name -> ``SourceInfo`` for the inputs that could be inspected.
    identity : dict
        Modality name -> digests used by the cross-row checks (``"patient"``,
        ``"study"``, ``"series"``, ``"pixels"`` (deep mode), ``"pixels_probe"``;
        short hex or ``None``). Never printed.
    n_files : int
        Files inspected.
    thumbnail : str or None
        Base64 PNG of the first readable modality's middle slice, when asked for
        (at least ``THUMBNAIL_MIN_PX`` pixels on its short side).
    thumbnail_modality : str or None
        The modality name the thumbnail shows.
    persons : dict
        Modality name -> :class:`~medmulti.manifest.identity.PersonDigests` of a
        DICOM input (keyed with the run's key; only when ``identity_key`` was given,
        and not for an input whose patient differs from the row's). Never printed.
    coverage : dict
        Modality name -> share of the reference's field of view a non-reference
        3D input covers (scanner coordinates, before registration).
    """

    row: ManifestRow
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, dict[str, str | None]] = field(default_factory=dict)
    n_files: int = 0
    thumbnail: str | None = None
    thumbnail_modality: str | None = None
    persons: dict[str, PersonDigests] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)


def sha256_of(path: str | PathLike[str]) -> str:
    """Return the sha256 (hex) pinned in a ``<modality>_sha256`` column.

    Parameters
    ----------
    path : str or PathLike
        A file or a folder.

    Returns
    -------
    str
        For a file, the sha256 of its bytes (as ``sha256sum FILE``). For a folder,
        the sha256 of the text that ``sha256sum`` prints for every regular file
        below it, sorted by relative POSIX path (byte order), one line
        ``"<hex>  <relative/path>\\n"`` each; i.e. the output of
        ``cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum``.
        A symlink to a file inside the folder counts as that file (``find -L``);
        the folder is listed as the readers list it
        (:func:`~medmulti.io.safe_files.list_files`), so nothing outside it is read.

    Raises
    ------
    MissingFileError
        If the path does not exist or cannot be read.
    UnsupportedDataError
        A FIFO, socket or device (never opened), named or inside the folder.
    UnsafePathError
        A symlink inside the folder leads outside it.
    """
    p = Path(path)

    def file_hex(f: Path) -> str:
        h = hashlib.sha256()
        try:
            with open_regular(f) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            raise MissingFileError("cannot read the file to compute its sha256", path=f) from None
        return h.hexdigest()

    if not p.is_dir():
        check_regular(p)  # a FIFO would block open() forever
        return file_hex(p)
    entries, _ = list_files(p)
    files = sorted((Path(e.name).as_posix().encode("utf-8"), e.path) for e in entries)
    h = hashlib.sha256()
    for rel, f in files:
        h.update(f"{file_hex(f)}  ".encode() + rel + b"\n")
    return h.hexdigest()


def _short(value: Any) -> str:
    return identity_key(value)  # the same keys inspect_source collects


def _identity_scan(files: Sequence[Path]) -> tuple[set[str], set[str]]:
    """Patient and study digests of DICOM files (header only; never returned as text)."""
    from pydicom.filereader import read_partial
    from pydicom.tag import Tag

    tags = [Tag(t) for t in _IDENTITY_TAGS]
    last = max(tags)

    def stop(tag, vr, length) -> bool:  # the identity tags come early: stop parsing after them
        return tag > last

    patients: set[str] = set()
    studies: set[str] = set()
    for f in files:
        try:
            with open_regular(f) as fh:
                ds = read_partial(fh, stop_when=stop, specific_tags=tags)
        except Exception:  # the reader reports unreadable files
            continue
        # PatientID only: names and dates are formatted differently by different devices
        patients.add(_short(str(ds.get("PatientID", "") or "").strip()))
        studies.add(_short(ds.get("StudyInstanceUID", "")))
    return patients, studies


def _folder_files(folder: Path) -> list[Path]:
    """The regular files under a series folder, listed as the readers list them (empty if it cannot be)."""
    try:
        entries, _ = list_files(folder)
    except MedmultiError:  # reported by the reader
        return []
    return sorted(e.path for e in entries)


def _inspect(source: Path | SourceRef, deep: bool):
    return inspect_source(source, deep=deep)


def _path_of(source: Path | SourceRef) -> Path:
    return source.path if isinstance(source, SourceRef) else Path(source)


def _in_manifest_terms(row: ManifestRow, name: str, exc: MedmultiError) -> tuple[str, str | None]:
    """Say ``<name>_series``/``<name>_volume`` where a reader's error is about its ``series=``/``volume=``.

    Decided by the error's ``argument`` field, never by its text. The series a row
    gives is never repeated (it may be a SeriesInstanceUID): a series file path
    the reader quotes is replaced by the column's name.
    """
    message, hint = exc.message, exc.hint
    src = row.sources.get(name)
    scol, vcol = name + SERIES_SUFFIX, name + VOLUME_SUFFIX
    if exc.argument == "series":
        if isinstance(src, SourceRef) and isinstance(src.series, Path):
            message = message.replace(f"series={str(src.series)!r}", f"the file given in column {scol}")
        if name not in row.series:
            hint = (f"choose the series in a {scol} column: its SeriesNumber, or the path of one of its files "
                    f"relative to the {name} folder (the message names one file of each series when they share a "
                    "number); or give each series its own folder")
        elif isinstance(src, SourceRef) and src.path.is_file():
            message = f"{scol} chooses among the series of a folder, but the {name} path is a file"
            hint = f"empty the {scol} cell, or point the {name} column at the series folder"
        else:
            if not message.startswith("the file given in column"):
                message = f"the series given in column {scol}: {message}"
            hint = (f"check {scol}: a SeriesNumber, a SeriesInstanceUID, or the path of one file of the series "
                    f"relative to the {name} folder (the message lists the folder's series)")
    elif exc.argument == "volume":
        if name not in row.volume:
            hint = f"choose the volume in a {vcol} column: its 0-based index (see the message for how many there are)"
        else:
            message = message.replace("volume= ", f"{vcol} ").replace("volume=", f"{vcol} ")
            hint = (f"check {vcol}: a 0-based index below the number of volumes, or an empty cell for an input "
                    "holding one volume")
    return message, hint


def _error_problem(row: ManifestRow, name: str, exc: BaseException) -> Problem:
    written = row.paths.get(name)
    shown = written
    err_path = getattr(exc, "path", None)
    src = row.sources.get(name)
    src = None if src is None else _path_of(src)
    if err_path and src is not None and written and src.is_dir():
        ep = Path(err_path)
        try:
            rel = ep.relative_to(src) if ep.is_absolute() else ep
            # lexists: a symlink that leads out is named, never followed
            if str(rel) != "." and ".." not in rel.parts and os.path.lexists(src / rel):
                shown = f"{written.rstrip('/')}/{rel.as_posix()}"
        except (ValueError, OSError):
            pass
    if not isinstance(exc, MedmultiError):
        # a reader bug or an unexpected library failure; its text may hold header values,
        # so only the type is reported.
        return Problem.from_error(exc, patient_id=row.key, modality=name, path=shown)
    message, exc_hint = _in_manifest_terms(row, name, exc)
    check = exc.check if exc.check in CHECKS else "read_error"
    return Problem(row.key, name, shown, check, "error", message,
                   exc_hint or _DEFAULT_HINTS.get(check, "the input could not be read; see the message"))


def _mixed_identity(row: ManifestRow, name: str) -> Problem:
    return Problem(row.key, name, row.paths.get(name), "patient_identity", "error",
                   "the DICOM files of this input belong to more than one patient or study",
                   "remove the files of the other patient/study from this folder")


#: Shortest side of a validation thumbnail, pixels: smaller images are enlarged (nearest neighbour).
THUMBNAIL_MIN_PX = 128
#: Longest side of a validation thumbnail, pixels: larger images are subsampled first.
THUMBNAIL_MAX_PX = 384


def _enlarge(a, min_px: int = THUMBNAIL_MIN_PX, max_px: int = THUMBNAIL_MAX_PX):
    """Subsample ``a`` (2D) to at most ``max_px`` a side, then repeat pixels until its short side reaches ``min_px``."""
    import numpy as np

    step = max(1, int(np.ceil(max(a.shape) / max_px)))
    a = a[::step, ::step]
    k = max(1, min(int(np.ceil(min_px / max(1, min(a.shape)))), max_px // max(1, max(a.shape))))
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def _thumbnail(source: Path | SourceRef) -> str | None:
    """Base64 PNG of the middle slice (CT in a soft-tissue window), at least ``THUMBNAIL_MIN_PX`` a side."""
    import numpy as np

    ref = SourceRef.coerce(source)
    try:
        img = read_image(ref.path, **ref.read_kwargs())
    except Exception:
        return None
    a = np.asarray(img.array, np.float32)
    if a.ndim == 3:
        a = a[a.shape[0] // 2]
    if str(img.modality).upper() == "CT":
        lo, hi = -160.0, 240.0  # soft-tissue window (centre 40, width 400 HU)
    else:  # from the slice's 1st percentile (background) to the body's 99th (not the noise's)
        body = a[foreground_mask(a)]
        lo, hi = float(np.percentile(a, 1)), float(np.percentile(body if body.size else a, 99))
    a = _enlarge(np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1))
    from matplotlib import image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, a, cmap="gray", vmin=0, vmax=1, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def coverage_fraction(reference: Any, moving: Any, samples: int = COVERAGE_SAMPLES) -> float | None:
    """Share of the reference's field of view that a 3D input covers, in scanner coordinates.

    Parameters
    ----------
    reference, moving : SourceInfo
        Header summaries with ``shape`` (3D) and ``affine`` (index -> LPS mm).
    samples : int
        Points per axis of the reference grid tested (``samples**3`` in all).

    Returns
    -------
    float or None
        The fraction of reference sample points (voxel centres spread evenly over
        its grid) that fall inside the moving image's voxel grid; ``None`` when
        either has no 3D geometry.
    """
    import numpy as np

    ra, ma = getattr(reference, "affine", None), getattr(moving, "affine", None)
    rs, ms = tuple(getattr(reference, "shape", ()) or ()), tuple(getattr(moving, "shape", ()) or ())
    if ra is None or ma is None or len(rs) != 3 or len(ms) != 3:
        return None
    axes = [np.linspace(0.0, n - 1.0, min(samples, n)) for n in rs]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ np.asarray(ra, float)[:3, :3].T + np.asarray(ra, float)[:3, 3]
    try:
        inv = np.linalg.inv(np.asarray(ma, float))
    except np.linalg.LinAlgError:
        return None
    idx = world @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(ms, float) - 0.5), axis=1)
    return float(inside.mean())


def _geometry_problems(row: ManifestRow, spec: StudySpec, out: RowCheck) -> list[Problem]:
    """``no_overlap`` / ``low_coverage`` for 3D inputs against the reference; ``no_reference``."""
    ref = spec.reference
    found: list[Problem] = []
    if ref is None:
        return found
    if row.sources.get(ref.name) is None and not row.refused.get(ref.name):
        for m in spec.modalities:
            if m.dims == 3 and m.name != ref.name and row.sources.get(m.name) is not None:
                found.append(Problem(row.key, m.name, row.paths.get(m.name), "no_reference", "warning",
                                     f"the reference modality {ref.name!r} is absent, so this 3D input has no grid to "
                                     "be resampled onto and is fed as zeros",
                                     f"give the patient a {ref.name} input, or drop this row"))
        return found
    ref_info = out.sources.get(ref.name)
    if ref_info is None:
        return found
    for m in spec.modalities:
        info = out.sources.get(m.name)
        if m.dims != 3 or m.name == ref.name or info is None:
            continue
        frac = coverage_fraction(ref_info, info)
        if frac is None:
            continue
        out.coverage[m.name] = frac
        written = row.paths.get(m.name)
        if frac == 0.0 and m.register == "none":
            found.append(Problem(row.key, m.name, written, "no_overlap", "error",
                                 f"the input does not overlap the {ref.name} field of view at all (scanner "
                                 "coordinates), and the spec does not register it: it would be resampled to zeros",
                                 f"check that it belongs to this patient and study, or set register: rigid for "
                                 f"{m.name} in the spec"))
        elif frac < LOW_COVERAGE_FRACTION:
            found.append(Problem(row.key, m.name, written, "low_coverage", "warning",
                                 f"the input covers {frac:.0%} of the {ref.name} field of view (scanner "
                                 "coordinates); the rest of its grid is filled with background",
                                 "check the field of view, or that it belongs to this study"))
    return found


def check_row(row: ManifestRow, spec: StudySpec, *, deep: bool = False, thumbnail: bool = False,
              identity_key: bytes | None = None) -> RowCheck:
    """Check one manifest row and its inputs.

    Parameters
    ----------
    row : ManifestRow
        The row (from :func:`~medmulti.manifest.load_manifest`, ``strict=False``
        to keep rows with problems).
    spec : StudySpec
        The study spec.
    deep : bool
        Also decode every pixel (slower). The fast mode reads headers and checks
        file sizes against the declared pixel data, which catches truncated files.
    thumbnail : bool
        Also render a PNG of the first readable modality (for HTML reports),
        enlarged (nearest neighbour) to at least ``THUMBNAIL_MIN_PX`` a side.
    identity_key : bytes, optional
        The run's HMAC key (:func:`~medmulti.manifest.identity.new_run_key`): the
        header identity of each DICOM input is kept as keyed digests in
        ``persons`` for :func:`cross_row_checks` (same person under two keys).

    Returns
    -------
    RowCheck
        Problems (errors and warnings), the inspected sources and their digests.

    Notes
    -----
    Checks, per modality: the path is safe and present when required
    (``unsafe_path``, ``missing_modality``), the pinned sha256 matches
    (``sha256_mismatch``), the input reads, with the series and volume the row
    chooses (``missing_file``, ``corrupt_file``, ``series_geometry``,
    ``unsupported_data``, ``resource_limit``, ``read_error``), the header
    Modality fits the spec kind (``modality_mismatch``), the dimensionality fits
    (``wrong_dims``), every DICOM file of a series belongs to one patient and
    study and the patient agrees with the row's other modalities (``patient_identity``); warnings for strongly
    anisotropic voxels (``anisotropic_spacing``) and reader warnings
    (``reader_warning``). A row naming no image at all (``no_inputs``); a
    single slice or a localizer given for a 3D modality (``not_a_volume``); a
    3D input that covers none of the reference's field of view and is not
    registered (``no_overlap``), or less than ``LOW_COVERAGE_FRACTION`` of it
    (``low_coverage``, warning); a 3D input of a row without its reference
    modality, which is fed as zeros (``no_reference``, warning).
    Row cells: ``bad_split``, ``bad_fold``, ``unknown_label``,
    ``bad_sha256``, ``bad_series``, ``bad_volume``. Messages name a chosen
    series by its column (``ct_series``), never by the cell's value.
    """
    out = RowCheck(row=row, problems=list(check_fields(row, spec)))
    patient_of: dict[str, str] = {}
    for m in spec.modalities:
        src = row.sources.get(m.name)
        written = row.paths.get(m.name)
        if src is None:
            continue
        folder = _path_of(src)
        if m.name in row.sha256 and len(row.sha256[m.name]) == 64:
            try:
                actual = sha256_of(folder)
            except MedmultiError:
                actual = None  # reported below by the reader (missing, FIFO, symlink leading out...)
            if actual is not None and actual != row.sha256[m.name]:
                out.problems.append(Problem(row.key, m.name, written, "sha256_mismatch", "error",
                                            "the input's sha256 differs from the pinned value",
                                            "the data changed since it was pinned: restore it, or update the "
                                            f"{m.name}_sha256 cell if the change is intended"))
        try:
            info = _inspect(src, deep)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a problem record
            if isinstance(exc, SeriesGeometryError) and folder.is_dir():
                patients, _ = _identity_scan(_folder_files(folder))
                if len(patients) > 1:  # several studies of one patient stay a series problem
                    out.problems.append(_mixed_identity(row, m.name))
                    continue
            out.problems.append(_error_problem(row, m.name, exc))
            continue
        out.sources[m.name] = info
        out.n_files += int(getattr(info, "n_files", len(getattr(info, "files", []) or [])) or 0)
        digests = dict(getattr(info, "digests", {}) or {})
        ident = {k: digests.get(k) for k in ("patient", "study", "series", "pixels", "pixels_probe")}
        kind = getattr(info, "kind", "")
        mixed = False
        if kind.startswith("dicom"):
            header_mod = str(getattr(info, "modality", "") or "").upper()
            if header_mod not in HEADER_MODALITIES[m.kind]:
                out.problems.append(Problem(row.key, m.name, written, "modality_mismatch", "error",
                                            f"the header Modality is not one of {list(HEADER_MODALITIES[m.kind])} "
                                            f"expected for a {m.kind} column",
                                            "check that the path points at the right series for this column"))
            if getattr(info, "patient_keys", None):  # collected while parsing the headers
                patients, studies = set(info.patient_keys), set(info.study_keys)
            else:
                patients, studies = _identity_scan(list(getattr(info, "files", []) or []))
            if len(patients) > 1 or len(studies) > 1:
                out.problems.append(_mixed_identity(row, m.name))
                ident = {k: None for k in ident}  # mixed: not used to match other rows
                mixed = True
            elif patients:
                patient_of[m.name] = next(iter(patients))
                ident["patient"] = patient_of[m.name]
                ident["study"] = ident["study"] or next(iter(studies))
        shape = tuple(getattr(info, "shape", ()) or ())
        person = None
        files = list(getattr(info, "files", []) or [])
        if kind.startswith("dicom") and files:
            person = person_digests(files[0], identity_key or b"")
            if identity_key is not None and not mixed:
                out.persons[m.name] = person
        if shape and len(shape) != m.dims:
            out.problems.append(Problem(row.key, m.name, written, "wrong_dims", "error",
                                        f"the input is {len(shape)}D but the spec declares {m.dims}D",
                                        "check that the path points at the right image for this column"))
        elif m.dims == 3 and (person is not None and person.localizer or (len(shape) == 3 and shape[0] == 1)):
            what = "a localizer (scout)" if person is not None and person.localizer else "a single slice"
            out.problems.append(Problem(row.key, m.name, written, "not_a_volume", "error",
                                        f"the input is {what}, not a volume, but the spec declares a 3D {m.kind}",
                                        "point the path at the diagnostic series (choose it with the "
                                        f"{m.name}{SERIES_SUFFIX} column when the folder holds several)"))
        spacing = [float(s) for s in (getattr(info, "spacing", ()) or ()) if s]
        if m.dims == 3 and len(spacing) == 3 and max(spacing) / min(spacing) > ANISOTROPY_WARN_RATIO:
            out.problems.append(Problem(row.key, m.name, written, "anisotropic_spacing", "warning",
                                        f"voxel sizes differ by more than {ANISOTROPY_WARN_RATIO:g}x",
                                        "fine for training after resampling, but thin structures may be lost"))
        for w in getattr(info, "warnings", []) or []:
            w = str(w).replace("(series= given)", f"({m.name}{SERIES_SUFFIX} given)")
            out.problems.append(Problem(row.key, m.name, written, "reader_warning", "warning", w, ""))
        out.identity[m.name] = ident
    if len(set(patient_of.values())) > 1:
        counts = Counter(patient_of.values())
        ref = spec.reference.name if spec.reference is not None and spec.reference.name in patient_of else None
        majority = patient_of[ref] if ref else counts.most_common(1)[0][0]
        for name, digest in patient_of.items():
            if digest != majority:
                out.persons.pop(name, None)  # another patient's file: not this row's identity
                out.problems.append(Problem(row.key, name, row.paths.get(name), "patient_identity", "error",
                                            "the header patient identity differs from the row's other modalities",
                                            "this input probably belongs to another patient: check the path"))
    if all(not row.paths.get(m.name) for m in spec.modalities) and not row.refused:
        out.problems.append(Problem(row.key, None, None, "no_inputs", "error",
                                    f"line {row.line}: the row names no image at all",
                                    "give the patient at least one input, or remove the row"))
    out.problems.extend(_geometry_problems(row, spec, out))
    if thumbnail:
        for m in spec.modalities:
            bad = any(p.is_error and p.modality == m.name for p in out.problems)
            if m.name in out.sources and not bad:
                out.thumbnail = _thumbnail(row.sources[m.name])  # type: ignore[arg-type]
                if out.thumbnail:
                    out.thumbnail_modality = m.name
                    break
    return out


_DUPLICATE_HINT = "the same image is listed under another patient: remove the duplicate"


def _identity_matches(results: list[RowCheck], what: tuple[str, ...], check: str, prefix: str | None,
                      hint: str, skip: set[tuple[str, str]] | None = None) -> list[Problem]:
    """Flag every input whose digest (any of ``what``) is shared with a row of another patient."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[tuple[ManifestRow, str]]] = defaultdict(list)
    for res in results:
        for name, ident in res.identity.items():
            for k in what:
                d = ident.get(k)
                if d:
                    owners[(k, d)].add(canonical_key(res.row.patient_id))
                    where[(k, d)].append((res.row, name))
    flagged: set[tuple[str, str]] = set() if skip is None else skip
    out: list[Problem] = []
    for dk, pids in owners.items():
        if len(pids) < 2:
            continue
        for row, name in where[dk]:
            if (row.key, name) in flagged:
                continue
            flagged.add((row.key, name))
            out.append(_listed_twice(row, name, check, sorted(pids - {canonical_key(row.patient_id)}),
                                     {r.split for r, _ in where[dk]}, prefix, hint))
    return out


def _listed_twice(row: ManifestRow, name: str, check: str, others: list[str], splits: set[str],
                  prefix: str | None, hint: str) -> Problem:
    extra = " in another split" if len(splits) > 1 else ""
    lead = f"{prefix} is also listed" if prefix else "also listed"
    return Problem(row.key, name, row.paths.get(name), check, "error",
                   f"{lead} under patient(s) {others}{extra}", hint)


def _duplicate_images(results: list[RowCheck]) -> list[Problem]:
    """``duplicate_image``: the full pixel digest where both inputs have one, else the probe."""
    flagged: set[tuple[str, str]] = set()
    out = _identity_matches(results, ("pixels",), "duplicate_image", "the same image (all pixels)",
                            _DUPLICATE_HINT, flagged)
    by_probe: dict[str, list[tuple[ManifestRow, str, str | None]]] = defaultdict(list)
    for res in results:
        for name, ident in res.identity.items():
            if ident.get("pixels_probe"):
                by_probe[ident["pixels_probe"]].append((res.row, name, ident.get("pixels")))
    for entries in by_probe.values():
        if len({canonical_key(row.patient_id) for row, _, _ in entries}) < 2:
            continue
        for row, name, full in entries:
            if (row.key, name) in flagged:
                continue
            # a partner of another patient whose image is not known to differ (deep: full digests win)
            partners = [(r, f) for r, n, f in entries
                        if canonical_key(r.patient_id) != canonical_key(row.patient_id)
                        and not (full and f and f != full)]
            if not partners:
                continue
            flagged.add((row.key, name))
            out.append(_listed_twice(row, name, "duplicate_image", sorted({r.patient_id for r, _ in partners}),
                                     {row.split} | {r.split for r, _ in partners},
                                     "the same image (sampled pixels)", _DUPLICATE_HINT))
    return out


def _same_person(results: list[RowCheck]) -> list[Problem]:
    """``same_person_two_keys`` (other split: error) / ``same_person_one_split`` (warning); placeholder note."""
    owners: dict[str, set[str]] = defaultdict(set)
    where: dict[str, list[tuple[ManifestRow, str]]] = defaultdict(list)
    placeholders = 0
    for res in results:
        for name, person in res.persons.items():
            placeholders += bool(person.placeholder)
            for d in person.digests:
                owners[d].add(canonical_key(res.row.patient_id))
                where[d].append((res.row, name))
    out: list[Problem] = []
    flagged: set[tuple[str, str]] = set()
    for d, pids in owners.items():
        if len(pids) < 2:
            continue
        for row, name in where[d]:
            if (row.key, name) in flagged:
                continue
            flagged.add((row.key, name))
            me = canonical_key(row.patient_id)
            others = sorted(pids - {me})
            other_splits = {r.split for r, _ in where[d] if canonical_key(r.patient_id) != me}
            if other_splits - {row.split}:
                out.append(Problem(row.key, name, row.paths.get(name), "same_person_two_keys", "error",
                                   f"the header identity (PatientID, or name + birth date) is also that of patient(s) "
                                   f"{others} in another split: one person under two keys (leakage)",
                                   "give the person one key, or put every key of the person in one split"))
            else:
                out.append(Problem(row.key, name, row.paths.get(name), "same_person_one_split", "warning",
                                   f"the header identity (PatientID, or name + birth date) is also that of patient(s) "
                                   f"{others} in the same split: one person under two keys",
                                   "merge the keys if they are one person (a split by key keeps them apart later)"))
    if placeholders:
        out.append(Problem(None, None, None, "identity_not_compared", "warning",
                           f"{placeholders} DICOM input(s) carry an empty or placeholder patient identity "
                           "(e.g. ANONYMOUS, 0000): they could not be compared for the same person under two keys",
                           "nothing to do if the cohort was anonymised on purpose; keys are then the only link"))
    return out


def cross_row_checks(results: Iterable[RowCheck], spec: StudySpec) -> list[Problem]:
    """Checks that need every row: leakage, duplicates, label balance, split sizes.

    Parameters
    ----------
    results : iterable of RowCheck
        One per manifest row.
    spec : StudySpec
        The study spec.

    Returns
    -------
    list of Problem
        Errors ``duplicate_row`` (the same row key twice in one split),
        ``patient_in_two_splits``, ``same_study_two_patients`` (a study/series digest
        under two patient IDs) and ``duplicate_image`` (the same image under two
        patient IDs), ``same_person_two_keys`` (one header identity under two keys in
        different splits; in one split the warning ``same_person_one_split``);
        warnings ``class_imbalance``, ``one_class_split``, ``tiny_split`` and
        ``identity_not_compared`` (inputs whose identity is a placeholder).

    Notes
    -----
    ``duplicate_image`` compares the full pixel digest (``"pixels"``, deep mode)
    where both inputs have one, and otherwise the pixel probe (``"pixels_probe"``,
    64 KiB sampled from the middle of the pixel data, both modes): in deep mode
    a probe collision whose full pixels differ is not flagged.

    Keys are compared in their canonical form (:func:`~medmulti.manifest.schema.canonical_key`):
    ``SYN0001`` and ``SYN0001`` with a zero-width space are one patient.
    """
    results = list(results)
    rows = [r.row for r in results]
    out: list[Problem] = []
    by_key: dict[str, list[ManifestRow]] = defaultdict(list)
    splits_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_key[canonical_key(r.key)].append(r)
        if r.split in SPLITS:
            splits_of[canonical_key(r.patient_id)].add(r.split)
    for key, rs in by_key.items():
        if len(rs) > 1 and len({r.split for r in rs}) == 1:
            out.append(Problem(key, None, None, "duplicate_row", "error",
                               f"the same row key is on lines {[r.line for r in rs]}",
                               "keep one row per patient (add a study_id column for several studies)"))
    for pid, splits in splits_of.items():
        if len(splits) > 1:
            out.append(Problem(pid, None, None, "patient_in_two_splits", "error",
                               f"the patient is in splits {sorted(splits)} (leakage)",
                               "put every row of a patient in one split"))
    out.extend(_identity_matches(results, ("study", "series"), "same_study_two_patients", None,
                                 "the same study/series is listed under another patient: fix the path or merge "
                                 "the patients"))
    out.extend(_duplicate_images(results))
    out.extend(_same_person(results))
    labels = spec.labels
    if labels.columns is None:
        valid = [r for r in rows if r.labels.get(labels.column) in labels.classes]  # type: ignore[arg-type]
        counts = Counter(r.labels[labels.column] for r in valid)  # type: ignore[index]
        if valid:
            for c in labels.classes:
                share = counts.get(c, 0) / len(valid)
                if share < IMBALANCE_WARN_FRACTION:
                    out.append(Problem(None, None, None, "class_imbalance", "warning",
                                       f"class {c!r} is {share:.0%} of the labelled rows",
                                       f"class {c!r} is {share:.0%} of the rows: consider class_balance=True "
                                       "or sample weights when training"))
        for s in SPLITS:
            classes = {r.labels.get(labels.column) for r in valid if r.split == s}  # type: ignore[arg-type]
            if len(classes) == 1 and len([r for r in valid if r.split == s]) > 1:
                out.append(Problem(None, None, None, "one_class_split", "warning",
                                   f"split {s!r} holds one class only",
                                   f"its ROC AUC is undefined: put patients of every class in split {s!r}"))
    for s in SPLITS:
        n = len({canonical_key(r.patient_id) for r in rows if r.split == s})
        if 0 < n < TINY_SPLIT_PATIENTS:
            out.append(Problem(None, None, None, "tiny_split", "warning",
                               f"split {s!r} has only {n} patient(s)",
                               f"split {s!r} has only {n} patient(s): metrics on it are noisy"))
    return out
