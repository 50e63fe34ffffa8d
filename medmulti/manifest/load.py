"""Reading a manifest CSV and resolving its paths safely.

Paths in a manifest are relative to the manifest's folder. A path that would leave
the allowed folder (``..``, an absolute path, a Windows drive or UNC path, a
percent-encoded ``..``, a symlink pointing outside, a NUL byte, an over-long path)
is refused with :class:`~medmulti.errors.UnsafePathError`, unless the caller gives an
explicit ``data_root`` that contains the resolved path. Paths are only ever built
from manifest cells, never from DICOM header values. :func:`patient_manifest` builds
the one-row manifest of a patient given by its files (``predict_patient``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import logging
import os
import re
from collections import Counter
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping
from urllib.parse import unquote

from ..errors import ManifestError, MissingFileError, UnsafePathError
from ..io.safe_files import SymlinkEscape, is_within, resolve_within
from ..io.source_ref import SourceRef
from ..spec import StudySpec
from .schema import (
    EXTRA_PREFIX,
    FOLD_COLUMN,
    MANIFEST_FORMAT,
    SERIES_SUFFIX,
    SHA256_SUFFIX,
    VOLUME_SUFFIX,
    Manifest,
    ManifestRow,
    canonical_key,
    check_fields,
    expected_columns,
    parse_series_cell,
    parse_volume_cell,
)

__all__ = ["load_manifest", "patient_manifest", "resolve_path", "MAX_PATH_CHARS", "LABEL_MODES"]

log = logging.getLogger("medmulti.manifest")

#: ``load_manifest(labels=...)``: labels and splits required (train, evaluate, validate) or optional (predict).
LABEL_MODES = ("required", "optional")
#: Longest manifest path accepted (characters); longer ones are refused as unsafe.
MAX_PATH_CHARS = 1024
_MAX_COMPONENT = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_FORMAT_LINE = re.compile(r"^#\s*format\s*:\s*(\S+)\s*$")




def resolve_path(
    text: str,
    root: str | PathLike[str],
    *,
    data_root: str | PathLike[str] | None = None,
    base: str | PathLike[str] | None = None,
) -> Path:
    """Resolve one manifest path cell to a safe absolute path.

    Parameters
    ----------
    text : str
        The cell as written (relative to ``root``; ``/`` or ``\\`` separators).
    root : str or PathLike
        The manifest's folder.
    data_root : str or PathLike, optional
        An explicit folder that may hold inputs outside ``root``. Without it, every
        input must lie inside ``root``.
    base : str or PathLike, optional
        The folder a relative ``text`` is taken relative to (default ``root``);
        e.g. a modality's folder for a ``<modality>_series`` file path. The
        allowed folder stays ``root`` (or ``data_root``).

    Returns
    -------
    pathlib.Path
        The resolved path (symlinks followed), inside the allowed folder. It may not
        exist: that is reported by the file checks, not here.

    Raises
    ------
    UnsafePathError
        A NUL byte, an over-long path or component, a Windows drive/UNC path, an
        absolute path or a ``..`` (also percent-encoded) leaving the allowed folder,
        or a symlink resolving outside it.
    """
    if "\x00" in text:
        raise UnsafePathError("the path contains a NUL byte", path=repr(text))
    if len(text) > MAX_PATH_CHARS:
        raise UnsafePathError(f"the path is longer than {MAX_PATH_CHARS} characters", path=text[:40] + "...")
    allowed = Path(os.path.realpath(data_root if data_root is not None else root))
    base = Path(os.path.realpath(root if base is None else base))
    explicit = data_root is not None
    where = "data root" if explicit else "manifest folder"
    decoded = unquote(text)
    if decoded != text:
        dnorm = decoded.replace("\\", "/")
        if ("\x00" in decoded or ".." in PurePosixPath(dnorm).parts or dnorm.startswith("/")
                or _DRIVE.match(dnorm)):
            raise UnsafePathError("the path holds a percent-encoded '..', separator or NUL byte", path=text,
                                  hint="write the path without %-escapes")
    norm = text.replace("\\", "/")
    if any(len(part) > _MAX_COMPONENT for part in PurePosixPath(norm).parts):
        raise UnsafePathError(f"a path component is longer than {_MAX_COMPONENT} characters", path=text[:40] + "...")
    if _DRIVE.match(norm) or norm.startswith("//"):
        raise UnsafePathError("a Windows drive or network (UNC) path is not allowed in a manifest", path=text,
                              hint="write paths relative to the manifest's folder")
    if norm.startswith("/") and not explicit:
        raise UnsafePathError("an absolute path is not allowed in a manifest", path=text,
                              hint="write paths relative to the manifest's folder, or pass an explicit data root "
                                   "that contains them")
    lexical = Path(os.path.normpath(base / norm)) if not norm.startswith("/") else Path(os.path.normpath(norm))
    if not is_within(lexical, allowed):
        why = "absolute path" if norm.startswith("/") else "'..' leads"
        raise UnsafePathError(f"{why} outside the {where}", path=text,
                              hint="move the data under the manifest's folder, or pass an explicit data root "
                                   "that contains it")
    return _walk(lexical, allowed, text, where)


def _walk(lexical: Path, allowed: Path, text: str, where: str) -> Path:
    """Follow symlinks component by component, refusing (before any stat) one that leads outside.

    The rule the readers apply inside series folders too
    (:func:`medmulti.io.safe_files.resolve_within`): a link's target is checked
    lexically first, so nothing outside ``allowed`` is ever touched, not even by ``lstat``.
    """
    try:
        return resolve_within(lexical, allowed)
    except SymlinkEscape as exc:
        if exc.loop:
            raise UnsafePathError("too many symlinks on the path", path=text) from None
        raise UnsafePathError(f"a symlink on the path points outside the {where}", path=text,
                              hint="copy the data, or pass an explicit data root that contains the target") from None


def read_rows(p: Path) -> tuple[int, Iterator[list[str]], Callable[[], int]]:
    """Open the manifest's CSV: ``(comment lines skipped, row iterator, physical lines read so far)``.

    The text is read as a file with ``newline=""`` (the csv module's rule): only
    ``\\n``, ``\\r`` and ``\\r\\n`` end a line, and a quoted cell may hold any of them;
    U+2028, NEL and form feeds inside a cell are cell content. ``csv.Error`` (a cell
    over the csv module's field size limit, 131,072 characters) is a
    :class:`ManifestError` naming the line.
    """
    try:
        raw = p.read_bytes()
    except OSError:
        raise MissingFileError("the manifest cannot be read", path=p) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError("the manifest is not UTF-8 text", path=p) from None
    fh = io.StringIO(text, newline="")
    fmt = MANIFEST_FORMAT
    skipped = 0
    first: list[str] = []
    for line in fh:
        if not line.startswith("#"):
            first = [line]
            break
        m = _FORMAT_LINE.match(line.strip())
        if m:
            try:
                fmt = int(m.group(1))
            except ValueError:
                raise ManifestError(f"bad format line; expected '# format: {MANIFEST_FORMAT}'", row=skipped + 1,
                                    path=p) from None
        skipped += 1
    if fmt != MANIFEST_FORMAT:
        raise ManifestError(f"unsupported manifest format {fmt}; this medmulti reads format {MANIFEST_FORMAT}", path=p)
    reader = csv.reader(itertools.chain(first, fh))

    def rows() -> Iterator[list[str]]:
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                why = ("a cell is longer than the csv module's limit of "
                       f"{csv.field_size_limit():,} characters" if "field limit" in str(exc) else "malformed CSV")
                raise ManifestError(why, row=skipped + reader.line_num, path=p,
                                    hint="a manifest cell holds a short path, key or label") from None
            yield cells

    return skipped, rows(), lambda: skipped + reader.line_num


def load_manifest(
    path: str | PathLike[str],
    spec: StudySpec | str | PathLike[str],
    *,
    data_root: str | PathLike[str] | None = None,
    strict: bool = True,
    labels: str = "required",
) -> Manifest:
    """Load a manifest CSV against a study spec.

    Parameters
    ----------
    path : str or PathLike
        The manifest CSV (see :mod:`medmulti.manifest.schema` and ``docs/manifest.md``).
    spec : StudySpec or path
        The study spec, or its YAML file.
    data_root : str or PathLike, optional
        A folder allowed to hold inputs outside the manifest's folder.
    strict : bool
        ``True`` (default): any row-level problem (bad split, unknown label, unsafe
        path, missing required modality, a bad ``<modality>_series`` or
        ``<modality>_volume`` cell, the same row key twice) raises.
        ``False``: such problems are collected in :attr:`Manifest.problems` and the
        rows kept (unsafe paths get ``sources[name] = None``); used by validation.
    labels : {"required", "optional"}
        ``"required"`` (default; ``validate``, ``train``, ``evaluate``): the
        ``split`` and label columns must exist and every row hold a valid split and
        label. ``"optional"`` (``predict``): the patients to score; the ``split``
        and label columns may be missing and their cells empty. A row whose label
        cells are all empty is unlabeled (:attr:`ManifestRow.labeled` is False); an
        empty or absent split is ``""``. A label or split that is written is still
        checked.

    Returns
    -------
    Manifest

    Raises
    ------
    MissingFileError
        The manifest (or the spec file) does not exist.
    ManifestError
        Missing, unknown or repeated columns, no rows, a row with a bad cell count,
        a cell longer than the csv module's field size limit, or an empty
        ``patient_id`` (also one holding only invisible characters) (always), and
        with ``strict=True`` every row-level error; the message names the line and
        column.

    Notes
    -----
    ``patient_id`` and ``study_id`` are kept and compared in their canonical form
    (:func:`~medmulti.manifest.schema.canonical_key`); a key the canonical form
    changes is the ``key_normalised`` warning (logged by a strict load).
    UnsafePathError
        With ``strict=True``, a path (or a ``<modality>_series`` file path) leaving
        the allowed folder.
    SpecError
        The spec file is invalid.
    ValueError
        ``labels`` is not one of :data:`LABEL_MODES`.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    if not isinstance(spec, StudySpec):
        spec = StudySpec.from_yaml(spec)
    p = Path(path)
    if not p.is_file():
        raise MissingFileError("manifest not found", path=p)
    root = Path(os.path.realpath(p.parent))
    droot = Path(os.path.realpath(data_root)) if data_root is not None else None
    if droot is not None and not droot.is_dir():
        raise MissingFileError("the data root is not a folder", path=droot)
    skipped, reader, line_of = read_rows(p)
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError("the manifest has no header line", path=p) from None
    header = [h.strip() for h in header]
    known = expected_columns(spec)
    for i, h in enumerate(header):
        if h not in known and not h.startswith(EXTRA_PREFIX):
            raise ManifestError(f"unknown column; known columns are {sorted(known)} (free columns start with "
                                f"'{EXTRA_PREFIX}')", row=skipped + 1, column=h or f"#{i + 1}", path=p)
    dup = sorted(h for h, n in Counter(header).items() if n > 1)
    if dup:
        raise ManifestError("column appears twice", row=skipped + 1, column=dup[0], path=p)
    optional = labels == "optional"
    required = ["patient_id"] + ([] if optional else ["split", *spec.labels.manifest_columns])
    required += [m.name for m in spec.modalities if m.required]
    for col in required:
        if col not in header:
            scored_only = col == "split" or col in spec.labels.manifest_columns
            raise ManifestError(
                "required column is missing", row=skipped + 1, column=col, path=p,
                hint=(f"add the {col!r} column; a manifest of patients without labels can only be scored, "
                      "with predict(run_dir, manifest)") if scored_only else None,
                cli_hint=(f"add the {col!r} column; a manifest of patients without labels can only be scored, "
                          "with `medmulti predict RUN MANIFEST`") if scored_only else None)
    rows: list[ManifestRow] = []
    problems = []
    for cells in reader:
        line = line_of()
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ManifestError(f"{len(cells)} cells, the header has {len(header)}", row=line, path=p)
        rec = {h: c.strip() for h, c in zip(header, cells)}
        written_keys = {}
        for column in ("patient_id", "study_id"):
            if column in rec:
                canonical = canonical_key(rec[column])
                if canonical != rec[column]:
                    written_keys[column] = rec[column]
                    rec[column] = canonical
        pid = rec["patient_id"]
        if not pid:
            raise ManifestError("patient_id is empty" + (" (it holds only invisible or control characters)"
                                                         if "patient_id" in written_keys else ""),
                                row=line, column="patient_id", path=p)
        paths: dict[str, str | None] = {}
        sources: dict[str, Path | None] = {}
        refused: dict[str, str] = {}
        sha: dict[str, str] = {}
        series: dict[str, str] = {}
        volume: dict[str, str] = {}
        for name in spec.names:
            cell = rec.get(name, "")
            paths[name] = cell or None
            sources[name] = None
            if cell:
                try:
                    sources[name] = resolve_path(cell, root, data_root=droot)
                except UnsafePathError as exc:
                    exc.with_context(patient_id=pid, modality=name)
                    if strict:
                        raise _unsafe(exc, line, name, cell, pid) from None
                    refused[name] = exc.message
            digest = rec.get(name + SHA256_SUFFIX, "")
            if digest:
                sha[name] = digest.lower()
            scell = rec.get(name + SERIES_SUFFIX, "")
            vcell = rec.get(name + VOLUME_SUFFIX, "")
            if scell:
                series[name] = scell
            if vcell:
                volume[name] = vcell
            if sources[name] is not None and (scell or vcell):
                sources[name] = _select(sources[name], scell, vcell, root=root, droot=droot, strict=strict,
                                        refused=refused, line=line, name=name, pid=pid)
        row = ManifestRow(
            line=line,
            patient_id=pid,
            study_id=rec.get("study_id") or None,
            split=rec.get("split", ""),
            labels={c: rec.get(c, "") for c in spec.labels.manifest_columns},
            paths=paths,
            sources=sources,
            sha256=sha,
            refused=refused,
            extra={h: rec[h] for h in header if h.startswith(EXTRA_PREFIX)},
            series=series,
            volume=volume,
            written_keys=written_keys,
            fold=rec.get(FOLD_COLUMN) or None,
            labels_optional=optional,
        )
        found = check_fields(row, spec)
        errors = [prob for prob in found if prob.is_error]
        if strict and errors:
            prob = errors[0]
            suffix = {"bad_series": SERIES_SUFFIX, "bad_volume": VOLUME_SUFFIX}.get(prob.check, "")
            column = (prob.modality and prob.modality + suffix) or {
                "bad_split": "split", "bad_fold": FOLD_COLUMN, "unknown_label": spec.labels.manifest_columns[0]}.get(prob.check)
            raise ManifestError(prob.message.split(": ", 1)[-1], row=line, column=column, patient_id=row.key,
                                modality=prob.modality, hint=prob.hint, path=p)
        if strict:  # only warnings are left: logged, Manifest.problems stays empty
            for prob in found:
                log.warning("%s", prob.message)
        else:
            problems.extend(found)
        rows.append(row)
    if not rows:
        raise ManifestError("the manifest has no rows", path=p)
    if strict:
        seen: dict[str, int] = {}
        for r in rows:
            if r.key in seen:
                raise ManifestError(f"row key {r.key!r} also on line {seen[r.key]}", row=r.line,
                                    column="patient_id", path=p,
                                    hint="one row per patient (add a study_id column for several studies)")
            seen[r.key] = r.line
    log.info("loaded manifest with %d rows", len(rows))
    return Manifest(path=p, root=root, spec=spec, rows=rows, data_root=droot, problems=problems)


def patient_manifest(
    sources: Mapping[str, str | PathLike[str] | SourceRef | None],
    spec: StudySpec | str | PathLike[str],
    *,
    patient_id: str = "patient",
    root: str | PathLike[str] | None = None,
) -> Manifest:
    """A manifest of one patient given by its files: one row, no split, no label.

    What ``predict_patient`` admits and scores, so that one patient named on the
    command line goes through the checks, the policies and the preprocessing of a
    manifest row.

    Parameters
    ----------
    sources : Mapping
        Spec modality name -> its input: a DICOM series folder, a DICOM file or a
        NIfTI file (absolute, or relative to ``root``), or a
        :class:`~medmulti.io.SourceRef` choosing a series or a volume. A modality
        left out (or ``None``) is absent.
    spec : StudySpec or path
        The study spec, or its YAML file.
    patient_id : str
        The key naming the patient in messages (in canonical form,
        :func:`~medmulti.manifest.schema.canonical_key`).
    root : str or PathLike, optional
        The folder relative paths are taken from and messages name paths relative
        to (default: the current folder). The paths are the caller's own, as given
        to :func:`~medmulti.io.read_image`: they are not confined to ``root``.

    Returns
    -------
    Manifest
        One row (line 1) with ``labels_optional`` set, an empty split and empty
        label cells; ``paths`` hold the sources as given.

    Raises
    ------
    ValueError
        A name that is not one of the spec's modalities, no source at all, or a
        ``patient_id`` with nothing visible.
    SpecError
        The spec file is invalid.
    """
    if not isinstance(spec, StudySpec):
        spec = StudySpec.from_yaml(spec)
    unknown = sorted(n for n in sources if n not in spec.names)
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a modality of the spec; its modalities are {spec.names}")
    if not any(v is not None for v in sources.values()):
        raise ValueError(f"no source given; give one or more of {spec.names}")
    key = canonical_key(str(patient_id))
    if not key:
        raise ValueError("patient_id has nothing visible")
    base = Path(os.path.abspath(root if root is not None else os.curdir))
    paths: dict[str, str | None] = {}
    resolved: dict[str, Path | SourceRef | None] = {}
    for name in spec.names:
        given = sources.get(name)
        if given is None:
            paths[name], resolved[name] = None, None
        elif isinstance(given, SourceRef):
            paths[name] = os.fspath(given.path)
            resolved[name] = dataclasses.replace(given, path=Path(os.path.abspath(base / given.path)))
        else:
            paths[name] = os.fspath(given)
            resolved[name] = Path(os.path.abspath(base / os.fspath(given)))
    row = ManifestRow(line=1, patient_id=key, study_id=None, split="", labels={c: "" for c in
                      spec.labels.manifest_columns}, paths=paths, sources=resolved, labels_optional=True)
    return Manifest(path=base, root=base, spec=spec, rows=[row], data_root=base)


def _unsafe(exc: UnsafePathError, line: int, column: str, cell: str, pid: str,
            modality: str | None = None) -> UnsafePathError:
    return UnsafePathError(exc.message, row=line, column=column, path=cell, patient_id=pid,
                           modality=modality or column, hint=exc.hint)


def _select(source: Path, scell: str, vcell: str, *, root: Path, droot: Path | None, strict: bool,
            refused: dict[str, str], line: int, name: str, pid: str) -> SourceRef | None:
    """The row's source with its ``<name>_series``/``<name>_volume`` choice, or None when a cell is unusable.

    A series file path is resolved relative to the modality's folder with the path
    cells' safety rules (refused: raised when ``strict``, else noted in ``refused``);
    a bad volume cell is reported by :func:`check_fields`.
    """
    choice: int | str | Path | None = None
    usable = True
    if scell:
        kind, value = parse_series_cell(scell)
        if kind == "file":
            column = name + SERIES_SUFFIX
            try:
                choice = resolve_path(scell, root, data_root=droot, base=source)
            except UnsafePathError as exc:
                if strict:
                    raise _unsafe(exc, line, column, scell, pid, modality=name) from None
                refused[column] = exc.message
                usable = False
        else:
            choice = value
    index = None
    if vcell:
        index = parse_volume_cell(vcell)
        usable = usable and index is not None
    return SourceRef(source, series=choice, volume=index) if usable else None
