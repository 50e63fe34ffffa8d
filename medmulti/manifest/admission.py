"""Admission: one verdict per patient, decided once, kept by every command.

:func:`admit` checks the rows of a manifest (every row, or the splits asked for)
with :func:`~medmulti.manifest.checks.check_row` in one pool of worker processes,
runs the cross-row checks (leakage, duplicates, the same person under two keys),
and applies the missing/corrupt policies: each row becomes a :class:`Verdict`,
``"admitted"`` (with the inputs it is fed, some maybe as zeros), ``"skipped"``
(with the problems that excluded it) or ``"refused"`` (a policy of ``"error"``
met a problem: :meth:`Verdict.error` is the typed error to raise).

It is the only code that decides: :func:`~medmulti.manifest.validate_manifest`
reports its problems, the sequence serves its admitted rows, ``train`` admits
its three splits at once and hands each sequence its verdicts.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..errors import MedmultiError
from ..executor import map_patients
from ..spec import StudySpec
from .checks import RowCheck, check_row, cross_row_checks
from .identity import new_run_key
from .report import Problem
from .schema import Manifest, ManifestRow, canonical_key

__all__ = ["Admission", "Verdict", "admit", "DEPTHS", "POLICIES", "MISSING_CHECKS", "apply_policies"]

log = logging.getLogger("medmulti.manifest")

#: How deep admission looks: headers and file sizes, or every pixel decoded too.
DEPTHS = ("header", "decode")
#: What a problem does to a patient: raise, exclude the patient, or feed zeros for the input.
POLICIES = ("error", "skip", "zeros")
#: Check names that count as "missing" for ``on_missing``; every other error counts under ``on_corrupt``.
MISSING_CHECKS = frozenset({"missing_modality", "missing_file"})


@dataclass(frozen=True)
class Verdict:
    """What admission decided for one manifest row.

    Attributes
    ----------
    key : str
        The row key (``patient_id`` or ``patient_id/study_id``).
    split : str
        The row's split.
    status : {"admitted", "skipped", "refused"}
        Served; excluded under ``skip``; or a problem met the ``error`` policy.
    present : dict
        Spec modality -> whether the input is fed (``False``: absent, or zeros).
    reasons : tuple of Problem
        The error problems that skipped, refused or zeroed something, in order.
    zeroed : tuple of (str, str)
        ``(modality, reason)`` for each input fed as zeros although its cell names one.
    """

    key: str
    split: str
    status: str
    present: Mapping[str, bool]
    reasons: tuple[Problem, ...] = ()
    zeroed: tuple[tuple[str, str], ...] = ()

    @property
    def admitted(self) -> bool:
        """True when the row is served."""
        return self.status == "admitted"

    def error(self) -> MedmultiError:
        """The typed error of the first problem that refused (or skipped) the row.

        Returns
        -------
        MedmultiError
            Converted with :meth:`Problem.to_error`.
        """
        if not self.reasons:
            raise ValueError(f"row {self.key!r} was {self.status} without a reason")
        return self.reasons[0].to_error()


@dataclass
class Admission:
    """The verdicts of one admission and every problem it found.

    Attributes
    ----------
    verdicts : list of Verdict
        One per row checked, in manifest order.
    problems : list of Problem
        Every finding (errors and warnings), row-level and cross-row.
    results : list of RowCheck
        The row checks (sources, digests, thumbnails), in manifest order.
    depth : str
        ``"header"`` or ``"decode"``.
    on_missing, on_corrupt : str
        The policies applied.
    """

    verdicts: list[Verdict]
    problems: list[Problem]
    results: list[RowCheck] = field(default_factory=list)
    depth: str = "header"
    on_missing: str = "error"
    on_corrupt: str = "error"

    def for_split(self, split: str) -> list[Verdict]:
        """The verdicts of one split, in manifest order."""
        return [v for v in self.verdicts if v.split == split]

    def verdict(self, key: str) -> Verdict:
        """The verdict of one row key.

        Raises
        ------
        KeyError
            The row was not admitted by this admission (another split).
        """
        index = self.__dict__.get("_index")
        if index is None or len(index) != len(self.verdicts):  # built once: the sequences look up every row
            index = self.__dict__["_index"] = {}
            for v in self.verdicts:
                index.setdefault(v.key, v)
        return index[key]

    def covers(self, splits: Iterable[str], on_missing: str, on_corrupt: str) -> bool:
        """True when these verdicts hold for the given splits and policies."""
        checked = {v.split for v in self.verdicts}
        return (self.on_missing, self.on_corrupt) == (on_missing, on_corrupt) and set(splits) <= checked

    @property
    def n_files(self) -> int:
        """Files inspected."""
        return sum(r.n_files for r in self.results)


def _applies_to(problem: Problem, row: ManifestRow) -> bool:
    if problem.patient_id is None:
        return False
    return problem.patient_id == row.key or (
        problem.modality is None and problem.patient_id == canonical_key(row.patient_id))


def apply_policies(row: ManifestRow, problems: Sequence[Problem], spec: StudySpec, *, on_missing: str,
                   on_corrupt: str) -> Verdict:
    """Decide one row from its error problems and the policies.

    Parameters
    ----------
    row : ManifestRow
        The row.
    problems : sequence of Problem
        Its problems (warnings are ignored).
    spec : StudySpec
        The study spec.
    on_missing, on_corrupt : {"error", "skip", "zeros"}
        The policies: a problem in :data:`MISSING_CHECKS` follows ``on_missing``,
        any other ``on_corrupt``. A row-level problem (no modality) under
        ``"zeros"`` skips the row.

    Returns
    -------
    Verdict
        Refused at the first problem under ``"error"``; else skipped at the first
        under ``"skip"``; else admitted with the zeroed inputs marked absent. A
        non-reference 3D input of a row without its reference is zeroed (it has no
        grid), and a required input left absent follows ``on_missing``.
    """
    zeros_policy = "zeros" in (on_missing, on_corrupt)
    optional = {m.name for m in spec.modalities if not m.required or zeros_policy}
    has = {m.name: row.sources.get(m.name) is not None for m in spec.modalities}
    reasons: list[Problem] = []
    zeroed: list[tuple[str, str]] = []
    skipped = False
    for p in problems:
        if not p.is_error:
            continue
        policy = on_missing if p.check in MISSING_CHECKS else on_corrupt
        if p.modality is None and policy == "zeros":
            policy = "skip"
        if policy == "error":
            return Verdict(row.key, row.split, "refused", has, (p,))
        reasons.append(p)
        if policy == "skip":
            skipped = True
        elif p.modality in has:
            has[p.modality] = False
            zeroed.append((p.modality, f"{p.check}: {p.message}"))
    if skipped:
        return Verdict(row.key, row.split, "skipped", has, tuple(p for p in reasons))
    ref = spec.reference
    if ref is not None and not has.get(ref.name, False):
        for m in spec.modalities:
            if m.dims == 3 and m.name != ref.name and has[m.name]:
                has[m.name] = False
                zeroed.append((m.name, "no_reference: the reference modality is absent"))
    for m in spec.modalities:
        if not has[m.name] and m.name not in optional:
            p = Problem(row.key, m.name, row.paths.get(m.name), "missing_modality", "error",
                        "the required input is absent",
                        f"give the patient a {m.name} input, or mark the modality required: false in the spec")
            if on_missing == "error":
                return Verdict(row.key, row.split, "refused", has, (p,))
            return Verdict(row.key, row.split, "skipped", has, (*reasons, p))
    return Verdict(row.key, row.split, "admitted", has, tuple(reasons), tuple(zeroed))


def _check(row: ManifestRow, spec: StudySpec, deep: bool, thumbnails: bool, identity_key: bytes) -> RowCheck:
    return check_row(row, spec, deep=deep, thumbnail=thumbnails, identity_key=identity_key)


def _check_rows(rows: list[ManifestRow], spec: StudySpec, *, deep: bool, thumbnails: bool, identity_key: bytes,
                workers: int, progress: bool, desc: str, executor: Any = "local",
                scheduler: str | None = None) -> list[RowCheck]:
    """``check_row`` over the rows through :func:`medmulti.executor.map_patients` (one pool or cluster)."""
    job = functools.partial(_check, spec=spec, deep=deep, thumbnails=thumbnails, identity_key=identity_key)
    # forked workers are fine until TensorFlow's threads exist; after, spawn them
    method = "spawn" if "tensorflow" in sys.modules else "default"
    outcomes = map_patients(job, rows, executor=executor, scheduler=scheduler, workers=workers, on_error="return",
                            progress=progress, desc=desc, leave=desc == "validate",
                            what="validation" if desc == "validate" else "checking patients", start_method=method)
    results = []
    for row, outcome in zip(rows, outcomes):
        if outcome.ok:
            results.append(outcome.value)
        else:  # check_row records data faults itself: this is a worker lost or a bug, kept as the row's problem
            results.append(RowCheck(row=row, problems=[Problem.from_error(outcome.error, patient_id=row.key)]))
    return results


def _leakage(manifest: Manifest, rows: list[ManifestRow]) -> list[Problem]:
    """``patient_in_two_splits`` for checked rows whose patient also has rows in splits not checked."""
    splits_of: dict[str, set[str]] = {}
    for r in manifest.rows:
        splits_of.setdefault(canonical_key(r.patient_id), set()).add(r.split)
    checked = {r.split for r in rows}
    out = []
    for r in rows:
        others = splits_of.get(canonical_key(r.patient_id), set()) - {r.split}
        if others and not others <= checked:
            out.append(Problem(r.key, None, None, "patient_in_two_splits", "error",
                               f"line {r.line}: the patient is also in split(s) {sorted(others)} (leakage)",
                               "put every row of a patient in one split"))
    return out


def admit(
    manifest: Manifest,
    spec: StudySpec,
    *,
    splits: Iterable[str] | None = None,
    depth: str = "header",
    on_missing: str = "error",
    on_corrupt: str = "error",
    workers: int | None = None,
    progress: bool = True,
    thumbnails: bool = False,
    desc: str = "checking patients",
    executor: Any = "local",
    scheduler: str | None = None,
) -> Admission:
    """Check the patients of a manifest and decide each one under the policies.

    Parameters
    ----------
    manifest : Manifest
        A loaded manifest (``strict=False`` keeps the rows with problems).
    spec : StudySpec
        The study spec.
    splits : iterable of str, optional
        Only the rows of these splits (default: every row). Cross-row checks see
        the rows checked; leakage into a split not checked is found from the keys.
    depth : {"header", "decode"}
        ``"header"`` reads headers and checks sizes (a truncated file or gzip
        stream is found); ``"decode"`` also decodes every pixel.
    on_missing, on_corrupt : {"error", "skip", "zeros"}
        The policies (see :func:`apply_policies`).
    workers : int, optional
        Worker processes (default: all cores); 1 checks in this process.
    progress : bool
        Show a progress bar.
    executor : {"local", "dask"} or dask.distributed.Client
        Where the row checks run (:func:`medmulti.executor.map_patients`); the
        cross-row checks run here on the digests the workers return.
    scheduler : str, optional
        A Dask scheduler address or file (with ``executor="dask"``).
    thumbnails : bool
        Render a thumbnail per row (validation's HTML report).
    desc : str
        The progress bar's label.

    Returns
    -------
    Admission
        One verdict per row checked, and every problem.

    Raises
    ------
    ValueError
        Unknown ``depth`` or policy.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth!r}")
    for arg, value in (("on_missing", on_missing), ("on_corrupt", on_corrupt)):
        if value not in POLICIES:
            raise ValueError(f"{arg} must be one of {POLICIES}, got {value!r}")
    wanted = None if splits is None else set(splits)
    rows = [r for r in manifest.rows if wanted is None or r.split in wanted]
    n_workers = int(workers) if workers else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(rows) or 1))
    results = _check_rows(rows, spec, deep=depth == "decode", thumbnails=thumbnails, identity_key=new_run_key(),
                          workers=n_workers, progress=progress, desc=desc, executor=executor, scheduler=scheduler)
    problems = [p for r in results for p in r.problems]
    problems += cross_row_checks(results, spec)
    if wanted is not None:
        problems += _leakage(manifest, rows)
    by_patient: dict[str, list[Problem]] = {}
    for p in problems:
        if p.patient_id is not None:
            by_patient.setdefault(p.patient_id, []).append(p)
    verdicts = []
    for r in rows:
        mine = by_patient.get(r.key, []) + [p for p in by_patient.get(canonical_key(r.patient_id), [])
                                            if canonical_key(r.patient_id) != r.key]
        verdicts.append(apply_policies(r, [p for p in mine if _applies_to(p, r)], spec,
                                       on_missing=on_missing, on_corrupt=on_corrupt))
    return Admission(verdicts=verdicts, problems=problems, results=results, depth=depth, on_missing=on_missing,
                     on_corrupt=on_corrupt)
