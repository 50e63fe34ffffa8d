"""The manifest format (``format: 1``): columns, rows, and the pure per-field checks.

A manifest is a CSV with a header line, one row per patient (or per patient study
with a ``study_id`` column):

``patient_id``
    Pseudonymous patient key (required, non-empty).
``study_id``
    Optional; with it a patient may have several rows (one per study) and the row
    key is ``patient_id/study_id``.
``split``
    ``train``, ``val`` or ``test``.
``fold``
    Optional: the row's cross-validation fold, a non-negative integer (``0`` to
    ``K-1``), or empty (a ``test`` row, held out of every fold). Written by
    :func:`medmulti.manifest.split.split_manifest`; read by ``train(cv=K)``.
label columns
    As the spec's ``labels`` says: ``column`` (one class name per row) or ``columns``
    (one 0/1 column per class).
one column per spec modality
    Named as the modality (``ct``, ``mr``...), holding a path relative to the
    manifest's folder (DICOM series folder, DICOM file, NIfTI). Empty = absent.
``<modality>_sha256``
    Optional pinned digest of that input (see :func:`medmulti.manifest.checks.sha256_of`).
``<modality>_series``
    Optional: which series of the modality's folder to read, when it holds several:
    a SeriesNumber, a SeriesInstanceUID, or the path of one file of the series
    relative to the modality's folder (checked as safely as a path cell).
``<modality>_volume``
    Optional: the 0-based volume of a 4D NIfTI file or of a multi-volume enhanced
    DICOM file.
``x_*``
    Free columns (age, site...) kept in :attr:`ManifestRow.extra`, never checked.

Keys (``patient_id``, ``study_id``) are compared in their canonical form
(:func:`canonical_key`: invisible, control and format characters removed, NFKC), so
``SYN0001`` and ``SYN0001`` followed by a zero-width space are one patient.

Lines starting with ``#`` before the header are comments; ``# format: 1`` declares
the format version (1 is assumed when absent).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ManifestError
from ..io.source_ref import SeriesChoice, SourceRef, parse_series_choice
from ..spec import StudySpec
from .report import Problem

__all__ = [
    "MANIFEST_FORMAT",
    "SPLITS",
    "ManifestRow",
    "Manifest",
    "expected_columns",
    "check_fields",
    "parse_series_cell",
    "parse_volume_cell",
    "parse_fold_cell",
    "canonical_key",
]

MANIFEST_FORMAT = 1
SPLITS = ("train", "val", "test")
#: The optional manifest column holding a row's cross-validation fold (0-based).
FOLD_COLUMN = "fold"
SHA256_SUFFIX = "_sha256"
SERIES_SUFFIX = "_series"
VOLUME_SUFFIX = "_volume"
EXTRA_PREFIX = "x_"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VOLUME = re.compile(r"[0-9]+")

# Characters a key is compared without: control (Cc), format (Cf: zero-width spaces and
# joiners, bidi controls, BOM, soft hyphen), surrogate, private-use and unassigned code
# points, line/paragraph separators, and the other Default_Ignorable_Code_Points of
# Unicode (DerivedCoreProperties.txt: variation selectors, Hangul fillers, CGJ...).
_IGNORED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_IGNORED_RANGES = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
                   (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0000, 0xE0FFF))


def _ignored(ch: str) -> bool:
    if unicodedata.category(ch) in _IGNORED_CATEGORIES:
        return True
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _IGNORED_RANGES)


def canonical_key(text: str) -> str:
    """Return the form in which a patient or study key is compared.

    Invisible characters are removed (control, format, line/paragraph separator,
    surrogate, private-use, unassigned and default-ignorable code points: zero-width
    spaces and joiners, bidi controls, BOMs, soft hyphens, variation selectors...),
    the rest is normalised to NFKC (full-width ``ＳＹＮ１`` is ``SYN1``, a no-break
    space is a space) and surrounding white space is stripped. Case is kept.

    Parameters
    ----------
    text : str
        A key as written in the manifest (or given on the command line).

    Returns
    -------
    str
        The canonical key; ``""`` when nothing visible is left.

    Notes
    -----
    Unicode Standard Annex #15 (normalisation forms) and the
    Default_Ignorable_Code_Point property of UAX #44.

    Examples
    --------
    >>> canonical_key("SYN0001\u200b") == canonical_key("ＳＹＮ０００１") == "SYN0001"
    True
    >>> canonical_key("\u200b\u2060")
    ''
    """
    if text.isascii() and text.isprintable():
        return text.strip()
    kept = "".join(ch for ch in text if not _ignored(ch))
    kept = unicodedata.normalize("NFKC", kept)
    return "".join(ch for ch in kept if not _ignored(ch)).strip()


def _changed_characters(text: str) -> list[str]:
    """``U+XXXX`` for the characters :func:`canonical_key` removes or rewrites (first five)."""
    out: list[str] = []
    for ch in text:
        if (_ignored(ch) or unicodedata.normalize("NFKC", ch) != ch) and f"U+{ord(ch):04X}" not in out:
            out.append(f"U+{ord(ch):04X}")
    return out[:5]


def parse_series_cell(cell: str) -> SeriesChoice:
    """Tell what a ``<modality>_series`` cell names (pure; nothing is read).

    Parameters
    ----------
    cell : str
        The cell, stripped and non-empty.

    Returns
    -------
    SeriesChoice
        ``(kind, value)``: ``("number", int)`` for digits only (a SeriesNumber), ``("uid", str)``
        for digits and dots (a SeriesInstanceUID), else ``("file", str)``: the
        path of one file of the series, relative to the modality's folder. As
        :func:`medmulti.io.read_image` reads ``series=``.
    """
    return parse_series_choice(cell)  # the readers' own rule


def parse_volume_cell(cell: str) -> int | None:
    """Return the volume index a ``<modality>_volume`` cell holds, or ``None`` when it is not one.

    Parameters
    ----------
    cell : str
        The cell, stripped and non-empty.

    Returns
    -------
    int or None
        The 0-based index for a non-negative integer (``"2"``, ``"+2"``, ``"2.0"``
        are read as 2), else ``None``.
    """
    text = cell.strip().lstrip("+")
    if text.endswith(".0"):
        text = text[:-2]
    return int(text) if _VOLUME.fullmatch(text) else None


def parse_fold_cell(cell: str) -> int | None:
    """Return the fold a ``fold`` cell holds, or ``None`` when it is not one.

    Parameters
    ----------
    cell : str
        The cell, stripped and non-empty.

    Returns
    -------
    int or None
        The 0-based fold for a non-negative integer (read as :func:`parse_volume_cell`
        reads a volume index), else ``None``.

    Examples
    --------
    >>> parse_fold_cell("2"), parse_fold_cell("-1")
    (2, None)
    """
    return parse_volume_cell(cell)


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row: a patient (or a patient study) and its inputs.

    Parameters
    ----------
    line : int
        1-based line number in the CSV file (the header is a line too).
    patient_id : str
        Patient key in its canonical form (:func:`canonical_key` of the cell; the
        cell as written when it holds only visible characters).
    study_id : str or None
        Study key (canonical too), when the manifest has a ``study_id`` column.
    split : str
        As written (``train``/``val``/``test`` when valid).
    labels : dict
        Label column -> cell text.
    paths : dict
        Modality name -> path as written, or ``None`` when the cell is empty.
    sources : dict
        Modality name -> resolved, safety-checked :class:`~pathlib.Path`, or a
        :class:`~medmulti.io.SourceRef` (its ``path`` resolved and checked the
        same way) when the row chooses a series or a volume, or ``None`` (absent,
        or refused: see ``refused``; or a ``series``/``volume`` cell that cannot
        be used: see :func:`check_fields`).
    sha256 : dict
        Modality name -> pinned lowercase hex digest, for the pinned inputs.
    refused : dict
        Modality name -> why its path was refused as unsafe, and
        ``<modality>_series`` -> why the series file path was (only when loaded
        with ``strict=False``; a strict load raises instead).
    extra : dict
        The free ``x_*`` columns.
    series : dict
        Modality name -> the ``<modality>_series`` cell as written, for the rows
        that fill it (left out of ``repr``: it may be a SeriesInstanceUID).
    volume : dict
        Modality name -> the ``<modality>_volume`` cell as written, for the rows
        that fill it.
    written_keys : dict
        ``"patient_id"``/``"study_id"`` -> the cell as written, for the key cells
        :func:`canonical_key` changed (left out of ``repr``: they hold invisible
        or control characters).
    fold : str or None
        The ``fold`` cell as written, when the manifest has the column and the cell
        is not empty (see :func:`parse_fold_cell`).
    labels_optional : bool
        True for a row loaded with ``load_manifest(..., labels="optional")`` (the
        patients ``predict`` scores): its label cells may be empty (see
        :attr:`labeled`) and its ``split`` empty (the manifest has no ``split``
        column, or the cell is empty).
    """

    line: int
    patient_id: str
    study_id: str | None
    split: str
    labels: dict[str, str]
    paths: dict[str, str | None]
    sources: dict[str, Path | SourceRef | None]
    sha256: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a UID: not in the repr
    volume: dict[str, str] = field(default_factory=dict)
    written_keys: dict[str, str] = field(default_factory=dict, repr=False)
    fold: str | None = None
    labels_optional: bool = False

    @property
    def key(self) -> str:
        """``patient_id``, or ``patient_id/study_id`` when the row has a study."""
        return self.patient_id if not self.study_id else f"{self.patient_id}/{self.study_id}"

    @property
    def labeled(self) -> bool:
        """False for a row without a label: loaded with ``labels="optional"`` and every
        label cell empty. Such a row can be scored (``predict``), never trained or
        evaluated on; the sequence serves it a placeholder target."""
        return not self.labels_optional or any(cell.strip() for cell in self.labels.values())

    def __hash__(self) -> int:  # dict fields: hash on the identity of the row
        return hash((self.line, self.patient_id, self.study_id))


@dataclass
class Manifest:
    """A loaded manifest: rows with resolved, safe paths, plus its spec.

    Parameters
    ----------
    path : pathlib.Path
        The CSV file.
    root : pathlib.Path
        The folder relative paths are resolved against (the manifest's folder).
    spec : StudySpec
        The study spec the manifest was read with.
    rows : list of ManifestRow
        In file order.
    data_root : pathlib.Path
        The folder every input must lie in (``root`` unless given explicitly).
    problems : list of Problem
        Row-level problems collected by a non-strict load (empty after a strict one).
    """

    path: Path
    root: Path
    spec: StudySpec
    rows: list[ManifestRow]
    data_root: Path | None = None
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data_root is None:
            self.data_root = self.root

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    def split(self, name: str) -> list[ManifestRow]:
        """Return the rows of one split (``"train"``, ``"val"`` or ``"test"``).

        Raises
        ------
        ManifestError
            If ``name`` is not a valid split.
        """
        if name not in SPLITS:
            raise ManifestError(f"split must be one of {list(SPLITS)}, got {name!r}", path=self.path)
        return [r for r in self.rows if r.split == name]

    @property
    def patient_ids(self) -> list[str]:
        """Distinct patient IDs in file order."""
        return list(dict.fromkeys(r.patient_id for r in self.rows))


def expected_columns(spec: StudySpec) -> dict[str, str]:
    """Return the known manifest columns and what each holds.

    Parameters
    ----------
    spec : StudySpec
        The study spec.

    Returns
    -------
    dict
        Column name -> role (``"patient_id"``, ``"study_id"``, ``"split"``,
        ``"fold"``, ``"label"``, ``"modality"``, ``"sha256"``, ``"series"``,
        ``"volume"``). ``study_id``, ``fold`` and the sha256, series and volume
        columns are optional; the rest are required.
    """
    cols = {"patient_id": "patient_id", "study_id": "study_id", "split": "split", FOLD_COLUMN: "fold"}
    for c in spec.labels.manifest_columns:
        cols[c] = "label"
    for name in spec.names:
        cols[name] = "modality"
        cols[name + SHA256_SUFFIX] = "sha256"
        cols[name + SERIES_SUFFIX] = "series"
        cols[name + VOLUME_SUFFIX] = "volume"
    return cols


def check_fields(row: ManifestRow, spec: StudySpec) -> list[Problem]:
    """Check a row's cells without touching any file (pure).

    Parameters
    ----------
    row : ManifestRow
        The row.
    spec : StudySpec
        The study spec.

    Returns
    -------
    list of Problem
        ``bad_split``, ``bad_fold`` (not a non-negative integer), ``unknown_label``, ``bad_sha256``, ``bad_series`` (a series
        chosen for an empty path), ``bad_volume`` (not a non-negative integer, or
        given for an empty path), ``unsafe_path`` (the path, or the series file
        path) and ``missing_modality`` problems (all errors), and the
        ``key_normalised`` warning (a key cell holding invisible, control or
        compatibility characters, compared in its canonical form). No message
        repeats a series cell (it may be a SeriesInstanceUID). A row with
        ``labels_optional`` may have an empty split and, when every label cell is
        empty, no label (neither is a problem).
    """
    out: list[Problem] = []
    pid = row.key
    for column, written in row.written_keys.items():
        canonical = row.patient_id if column == "patient_id" else (row.study_id or "")
        out.append(Problem(pid, None, None, "key_normalised", "warning",
                           f"line {row.line}: {column} holds invisible, control or compatibility characters "
                           f"({', '.join(_changed_characters(written))}); it is compared as {canonical!r}",
                           f"write {column} in plain characters: keys that differ only by such characters are "
                           "the same patient"))
    if row.split not in SPLITS and not (row.labels_optional and row.split == ""):
        out.append(Problem(pid, None, None, "bad_split", "error",
                           f"line {row.line}: split {row.split!r} is not one of {list(SPLITS)}",
                           "write train, val or test in the 'split' column"))
    if row.fold is not None and parse_fold_cell(row.fold) is None:
        out.append(Problem(pid, None, None, "bad_fold", "error",
                           f"line {row.line}: fold {row.fold!r} is not a non-negative integer",
                           "write the fold number (0 for the first) in the 'fold' column, or leave it empty"))
    labels = spec.labels
    if not row.labeled:
        pass  # a row to score only (labels="optional"): nothing to check
    elif labels.columns is None:
        cell = row.labels.get(labels.column, "")  # type: ignore[arg-type]
        if cell not in labels.classes:
            out.append(Problem(pid, None, None, "unknown_label", "error",
                               f"line {row.line}: label {cell!r} in column {labels.column!r} "
                               f"is not one of the spec's classes {labels.classes}",
                               "fix the label, or add the class to labels.classes in the spec"))
    else:
        for col in labels.columns:
            cell = row.labels.get(col, "").strip().lower()
            if cell not in ("0", "1", "0.0", "1.0", "true", "false", "yes", "no"):
                out.append(Problem(pid, None, None, "unknown_label", "error",
                                   f"line {row.line}: column {col!r} must hold 0 or 1, got {row.labels.get(col)!r}",
                                   "write 0 or 1 in every label column"))
    for name, digest in row.sha256.items():
        if not _HEX64.match(digest):
            out.append(Problem(pid, name, row.paths.get(name), "bad_sha256", "error",
                               f"line {row.line}: {name}{SHA256_SUFFIX} is not 64 hexadecimal characters",
                               "write the sha256 as 64 hex digits (see docs/manifest.md), or leave the cell empty"))
    for name, cell in row.volume.items():
        if parse_volume_cell(cell) is None:
            out.append(Problem(pid, name, row.paths.get(name), "bad_volume", "error",
                               f"line {row.line}: {name}{VOLUME_SUFFIX} must be a non-negative integer "
                               "(a 0-based volume index)",
                               f"write the index of the volume to read (0 for the first) in "
                               f"{name}{VOLUME_SUFFIX}, or leave the cell empty for a single-volume input"))
        elif row.paths.get(name) is None:
            out.append(Problem(pid, name, None, "bad_volume", "error",
                               f"line {row.line}: {name}{VOLUME_SUFFIX} is given but the {name} path is empty",
                               f"write the {name} path, or empty the {name}{VOLUME_SUFFIX} cell"))
    for name in row.series:
        if row.paths.get(name) is None:
            out.append(Problem(pid, name, None, "bad_series", "error",
                               f"line {row.line}: {name}{SERIES_SUFFIX} is given but the {name} path is empty",
                               f"write the {name} folder, or empty the {name}{SERIES_SUFFIX} cell"))
    for m in spec.modalities:
        written = row.paths.get(m.name)
        column = m.name + SERIES_SUFFIX
        if m.name in row.refused:
            out.append(Problem(pid, m.name, written, "unsafe_path", "error",
                               f"line {row.line}: {row.refused[m.name]}",
                               "move the data under the manifest's folder, or pass --data-root DIR "
                               "that contains it"))
        elif column in row.refused:
            out.append(Problem(pid, m.name, written, "unsafe_path", "error",
                               f"line {row.line}: the file given in column {column}: {row.refused[column]}",
                               f"write the path of one file of the series relative to the {m.name} folder "
                               f"(or its SeriesNumber) in {column}"))
        elif written is None and m.required:
            out.append(Problem(pid, m.name, None, "missing_modality", "error",
                               f"line {row.line}: required modality {m.name!r} has no path",
                               f"add the {m.name} path, drop the patient, or mark the modality "
                               "'required: false' in the spec"))
    return out
