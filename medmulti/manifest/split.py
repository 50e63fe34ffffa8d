"""Split a cohort into train/val/test or into cross-validation folds, by patient and stratified.

:func:`assign_splits` is the pure rule (row keys and labels in, one split name or fold
number per row out); :func:`split_manifest` applies it to a manifest CSV and writes a copy
with a ``split`` or ``fold`` column (what ``medmulti split`` runs). ``train(cv=K)`` uses the
same rule to assign folds when its manifest has no ``fold`` column.

Rules
-----
- **Grouped by patient**: every row of one patient key (its canonical form, see
  :func:`~medmulti.manifest.schema.canonical_key`; all the studies of a patient) lands in
  the same split or fold, so no patient leaks between them.
- **Stratified**: within each label value (a patient whose rows disagree is its own
  stratum), patients are shuffled with ``seed`` and dealt one by one to the split (fold)
  furthest behind its share of that stratum; ties go to the split furthest behind its
  share of the whole cohort, then to the first. Each split's count of every stratum is
  then within one patient of ``ratio * patients of the stratum``.
- **Deterministic**: the same rows, labels, ratios (or folds) and seed give the same
  assignment, on any machine (numpy's ``default_rng``).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from ..errors import ManifestError
from ..spec import StudySpec
from .admission import admit
from .load import load_manifest, read_rows
from .schema import FOLD_COLUMN, SPLITS, canonical_key

__all__ = ["assign_splits", "split_manifest", "identity_groups", "SplitResult", "parse_ratios", "FOLD_COLUMN"]

def parse_ratios(ratios: Sequence[float] | str) -> tuple[float, ...]:
    """Check split ratios: two or three non-negative numbers (train, val[, test]) summing to 1.

    Parameters
    ----------
    ratios : sequence of float or str
        E.g. ``(0.7, 0.15, 0.15)`` or ``"0.7,0.15,0.15"``.

    Returns
    -------
    tuple of float

    Raises
    ------
    ValueError
        Not two or three numbers, a negative one, or a sum other than 1 (within 1e-6).

    Examples
    --------
    >>> parse_ratios("0.7,0.15,0.15")
    (0.7, 0.15, 0.15)
    """
    if isinstance(ratios, str):
        try:
            values = tuple(float(t) for t in ratios.split(","))
        except ValueError:
            raise ValueError(f"ratios must be numbers separated by commas, got {ratios!r}") from None
    else:
        values = tuple(float(r) for r in ratios)
    if len(values) not in (2, 3) or any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"ratios must be two or three non-negative numbers (train, val[, test]), got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {values} (sum {sum(values):g})")
    return values


def assign_splits(
    keys: Sequence[str],
    labels: Sequence[Hashable] | None = None,
    *,
    ratios: Sequence[float] | str | None = None,
    folds: int | None = None,
    seed: int = 0,
) -> list[str] | list[int]:
    """Assign rows to splits or folds, grouped by patient and stratified by label (pure).

    Parameters
    ----------
    keys : sequence of str
        The patient key of each row (compared in canonical form); rows sharing a key
        are one group.
    labels : sequence, optional
        The stratum of each row (a label cell; any hashable). ``None``: no stratification.
    ratios : sequence of float or str, optional
        Shares of ``train``, ``val`` (and ``test``); see :func:`parse_ratios`.
    folds : int, optional
        Number of folds (>= 2, at most the number of patients). Exactly one of
        ``ratios`` and ``folds``.
    seed : int
        Seeds the shuffle.

    Returns
    -------
    list of str or list of int
        Per row: a split name (``ratios``) or a fold number ``0 .. folds-1`` (``folds``).

    Raises
    ------
    ValueError
        Both or neither of ``ratios`` / ``folds``, bad ratios, ``folds`` out of range,
        ``labels`` of another length than ``keys``.

    Examples
    --------
    >>> assign_splits(["a", "a", "b", "c", "d"], folds=2, seed=0)
    [1, 1, 0, 0, 1]
    >>> assign_splits(["p1", "p2"], ["x", "y"], ratios=(0.5, 0.5, 0.0))
    ['train', 'val']
    """
    if (ratios is None) == (folds is None):
        raise ValueError("give exactly one of ratios and folds")
    if labels is not None and len(labels) != len(keys):
        raise ValueError(f"{len(labels)} labels for {len(keys)} rows")
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(canonical_key(key), []).append(i)
    if folds is not None:
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= len(groups):
            raise ValueError(f"folds must be an integer from 2 to the number of patients ({len(groups)}), got {folds!r}")
        shares = np.full(int(folds), 1.0 / int(folds))
    else:
        shares = np.asarray(parse_ratios(ratios))  # type: ignore[arg-type]
    strata: dict[str, list[str]] = {}
    for key, rows in groups.items():
        values = sorted({repr(labels[i]) for i in rows}) if labels is not None else [""]
        strata.setdefault("|".join(values), []).append(key)

    rng = np.random.default_rng(int(seed))
    overall = np.zeros(len(shares))
    placed: dict[str, int] = {}
    for name in sorted(strata):
        members = sorted(strata[name])
        counts = np.zeros(len(shares))
        for i in rng.permutation(len(members)):
            behind = shares * (counts.sum() + 1) - counts
            tied = np.flatnonzero(behind >= behind.max() - 1e-9)
            overall_behind = shares[tied] * (overall.sum() + 1) - overall[tied]
            chosen = int(tied[np.flatnonzero(overall_behind >= overall_behind.max() - 1e-9)[0]])
            counts[chosen] += 1
            overall[chosen] += 1
            placed[members[i]] = chosen
    bins = [placed[canonical_key(k)] for k in keys]
    return bins if folds is not None else [SPLITS[b] for b in bins]


@dataclass
class SplitResult:
    """What :func:`split_manifest` wrote.

    Attributes
    ----------
    path : Path
        The new manifest.
    column : str
        ``"split"`` or ``"fold"``.
    patients : dict
        Split name or fold number (as text) -> stratum (label cell; ``""`` without
        ``stratify``) -> patients.
    held_out : int
        Patients left out of the folds because they are in the ``test`` split.
    merged : int
        Patient keys that share a header identity with another key (with a ``spec``:
        one person under several keys) and were therefore kept in one split or fold.
    """

    path: Path
    column: str
    patients: dict[str, dict[str, int]]
    held_out: int = 0
    merged: int = 0


def identity_groups(manifest: str | PathLike[str], spec: Any, *, data_root: Any = None,
                    workers: int | None = None, progress: bool = False) -> dict[str, str]:
    """Group patient keys whose DICOM headers name one person (what admission finds).

    Parameters
    ----------
    manifest : str or PathLike
        The manifest CSV.
    spec : StudySpec or path
        The study spec.
    data_root : str or PathLike, optional
        A folder allowed to hold inputs outside the manifest's folder.
    workers : int, optional
        Worker processes reading headers.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        Canonical patient key -> the key of its group (the smallest key of the
        person); keys sharing a PatientID, or a name + birth date, are one group.
        Identities are compared as per-run keyed digests, never kept.
    """
    spec = spec if isinstance(spec, StudySpec) else StudySpec.from_yaml(spec)
    man = load_manifest(manifest, spec, data_root=data_root, strict=False)
    adm = admit(man, spec, workers=workers, progress=progress, desc="reading identities")
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    owner: dict[str, str] = {}
    for res in adm.results:
        key = canonical_key(res.row.patient_id)
        find(key)
        for person in res.persons.values():
            for d in person.digests:
                if d in owner:
                    a, b = find(owner[d]), find(key)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                else:
                    owner[d] = key
    return {k: find(k) for k in parent}


def split_manifest(
    manifest: str | PathLike[str],
    out: str | PathLike[str],
    *,
    ratios: Sequence[float] | str | None = None,
    folds: int | None = None,
    stratify: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    spec: Any = None,
    data_root: str | PathLike[str] | None = None,
) -> SplitResult:
    """Write a copy of a manifest with a ``split`` column (``ratios``) or a ``fold`` column (``folds``).

    No spec is needed: the CSV is read as text, every other cell is copied unchanged,
    and the comment lines before the header (``# format: 1``) are kept.

    Parameters
    ----------
    manifest : str or PathLike
        The manifest CSV (needs a ``patient_id`` column).
    out : str or PathLike
        The new manifest, in the same folder as ``manifest`` (its paths are relative to
        that folder). Written atomically (temporary file, fsync, rename).
    ratios : sequence of float or str, optional
        ``train, val[, test]`` shares (see :func:`parse_ratios`): the ``split`` column is
        written (added when absent, replaced when present).
    folds : int, optional
        Number of folds: the ``fold`` column (0-based) is written for every row whose
        ``split`` is not ``test``; ``test`` rows keep their split and get an empty fold.
        A manifest without a ``split`` column gets one, ``train`` on every row.
    stratify : str, optional
        The column to stratify by (a label column); ``None``: not stratified.
    seed : int
        Seeds the assignment (see :func:`assign_splits`).
    overwrite : bool
        Replace an existing ``out`` (never ``manifest`` itself).
    spec : StudySpec or path, optional
        With the study spec, the inputs' DICOM headers are read as admission reads
        them (:func:`identity_groups`) and keys naming one person are kept in one
        split or fold, as one patient. Without it, rows are grouped by key only.
    data_root : str or PathLike, optional
        With ``spec``: a folder allowed to hold inputs outside the manifest's folder.

    Returns
    -------
    SplitResult

    Raises
    ------
    ManifestError
        No ``patient_id`` or ``stratify`` column, a row with a bad cell count or an empty
        ``patient_id``, a patient both in ``test`` and in another split (``folds``).
    MissingFileError
        The manifest cannot be read.
    ValueError
        ``out`` is the manifest, exists without ``overwrite``, or lies in another folder;
        bad ``ratios`` / ``folds``.

    Notes
    -----
    Cells are copied as the loader reads them: none is prefixed against spreadsheet
    formulas (:func:`medmulti.text.csv_safe`), since a prefixed path or key would no
    longer be the same path or key. The cells this function writes are split names and
    fold numbers.
    """
    src, dst = Path(manifest), Path(out)
    if (ratios is None) == (folds is None):
        raise ValueError("give exactly one of ratios and folds")
    if os.path.realpath(src) == os.path.realpath(dst) or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
        raise ValueError("the output is the input manifest; write the split manifest to a new file")
    if os.path.realpath(dst.parent) != os.path.realpath(src.parent):
        raise ValueError("write the split manifest next to the input manifest (in the same folder): its paths are "
                         "relative to the manifest's folder")
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst.name!r} exists; choose another output or allow overwriting")
    skipped, reader, line_of = read_rows(src)
    comments = src.read_bytes().decode("utf-8-sig").splitlines(keepends=True)[:skipped]
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ManifestError("the manifest has no header line", path=src) from None
    for column in ("patient_id", stratify):
        if column is not None and column not in header:
            raise ManifestError("column not found" + (" (the --stratify column)" if column == stratify else ""),
                                column=column, row=skipped + 1, path=src)
    rows: list[list[str]] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ManifestError(f"{len(cells)} cells, the header has {len(header)}", row=line_of(), path=src)
        if not canonical_key(cells[header.index("patient_id")]):
            raise ManifestError("patient_id is empty", row=line_of(), column="patient_id", path=src)
        rows.append(cells)
    if not rows:
        raise ManifestError("the manifest has no rows", path=src)

    column = "split" if ratios is not None else FOLD_COLUMN
    for name in ("split", column):
        if name not in header:
            header.append(name)
            for cells in rows:
                cells.append("train")  # a new split column; a new fold column is filled below
    col = {h: i for i, h in enumerate(header)}
    keys = [canonical_key(r[col["patient_id"]]) for r in rows]
    merged = 0
    if spec is not None:
        group_of = identity_groups(src, spec, data_root=data_root)
        sizes = Counter(group_of.get(k, k) for k in set(keys))
        merged = sum(1 for k in set(keys) if sizes[group_of.get(k, k)] > 1)
        keys = [group_of.get(k, k) for k in keys]
    strata = [r[col[stratify]].strip() for r in rows] if stratify else [""] * len(rows)
    chosen = list(range(len(rows)))
    held_out: set[str] = set()
    if folds is not None:
        tested = {k for k, r in zip(keys, rows) if r[col["split"]].strip() == "test"}
        mixed = sorted(k for k, r in zip(keys, rows) if k in tested and r[col["split"]].strip() != "test")
        if mixed:
            raise ManifestError("the patient is in split 'test' and in another split", patient_id=mixed[0],
                                path=src, column="split", hint="put every row of a patient in one split")
        chosen = [i for i, k in enumerate(keys) if k not in tested]
        held_out = tested
        for i in range(len(rows)):
            rows[i][col[column]] = ""
    if folds is not None and len({keys[i] for i in chosen}) < 2:
        raise ValueError("fewer than 2 patients outside the test split: nothing to fold")
    assigned = assign_splits([keys[i] for i in chosen], [strata[i] for i in chosen], ratios=ratios, folds=folds,
                             seed=seed)
    patients: dict[str, Counter] = {}
    seen: set[tuple[str, str]] = set()
    for i, value in zip(chosen, assigned):
        rows[i][col[column]] = str(value)
        if (keys[i], str(value)) not in seen:
            seen.add((keys[i], str(value)))
            patients.setdefault(str(value), Counter())[strata[i]] += 1
    _write_atomically(dst, comments, header, rows)
    return SplitResult(path=dst, column=column, held_out=len(held_out), merged=merged,
                       patients={b: dict(sorted(patients[b].items())) for b in sorted(patients, key=_bin_order)})


def _bin_order(value: str) -> tuple[int, int]:
    """Splits in ``SPLITS`` order, folds by number."""
    return (SPLITS.index(value), 0) if value in SPLITS else (len(SPLITS), int(value))


def _write_atomically(path: Path, comments: list[str], header: list[str], rows: list[list[str]]) -> None:
    text = io.StringIO(newline="")
    text.writelines(c if c.endswith(("\n", "\r")) else c + "\n" for c in comments)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
