"""``scan``: an export folder in, a manifest and a scan report out.

Walk the folder (:mod:`~medmulti.scanning.walk`), read every file's header in worker
processes (:func:`~medmulti.scanning.headers.read_batch`, one task per folder or per 1,024
files of a large folder), group patient -> study -> series
(:mod:`~medmulti.scanning.cohort`), key the patients (:mod:`~medmulti.scanning.keys`), join
labels (:mod:`~medmulti.scanning.labels`), choose one series per spec modality
(:mod:`~medmulti.scanning.select`), then write the manifest and the report
(:mod:`~medmulti.scanning.report`).
"""

from __future__ import annotations

import logging
import os
import time
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import MedmultiError
from ..executor import iter_patients
from ..io.limits import DEFAULT_LIMITS, Limits
from ..manifest.schema import canonical_key
from ..manifest.split import assign_splits
from ..spec import StudySpec, check_nifti_pattern
from .cohort import Patient, build_patients
from .headers import Batch, BatchResult, FileNote, read_batch
from .keys import KEY_KINDS, default_secret_path, load_secret, normalise_patient_id, patient_keys
from .labels import LabelTable, read_labels
from .nifti import match_nifti
from .report import PatientResult, ScanResult, identity_pattern
from .select import choose
from .walk import Walk, read_dicomdir, walk_root

__all__ = ["scan", "parse_split", "batches_of", "BATCH_FILES"]

log = logging.getLogger("medmulti.scanning")

#: Files per task of a large folder (a smaller folder is one task).
BATCH_FILES = 1024


def parse_split(text: str) -> tuple[float, float, float]:
    """``train=0.7,val=0.15,test=0.15`` as the ratios of :func:`~medmulti.manifest.split.assign_splits`.

    Parameters
    ----------
    text : str
        ``name=share`` pairs separated by commas; names ``train``, ``val``, ``test``
        (a missing one has share 0); the shares sum to 1.

    Returns
    -------
    (float, float, float)
        Train, val and test shares.

    Raises
    ------
    ValueError
        An unknown or repeated name, a share that is not a number in [0, 1], a sum other than 1.

    Examples
    --------
    >>> parse_split("train=0.7,val=0.15,test=0.15")
    (0.7, 0.15, 0.15)
    >>> parse_split("train=0.8,val=0.2")
    (0.8, 0.2, 0.0)
    """
    shares = {"train": 0.0, "val": 0.0, "test": 0.0}
    seen = set()
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in shares or name in seen:
            raise ValueError(f"--split takes train=SHARE,val=SHARE[,test=SHARE], got {text!r}")
        seen.add(name)
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"--split: the share of {name} is not a number") from None
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"--split: the share of {name} must lie in [0, 1]")
        shares[name] = share
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"--split: the shares must sum to 1, got {total:g}")
    return shares["train"], shares["val"], shares["test"]


def batches_of(walk: Walk, limits: Limits) -> list[Batch]:
    """The header-reading tasks of a walk: one per folder, or per :data:`BATCH_FILES` files of a large folder.

    Parameters
    ----------
    walk : Walk
    limits : Limits
        The readers' caps.

    Returns
    -------
    list of Batch
        In walk order.
    """
    out = []
    for files in walk.folders.values():
        for i in range(0, len(files), BATCH_FILES):
            chunk = files[i : i + BATCH_FILES]
            out.append(Batch(tuple(e.name for e in chunk), tuple(e.path for e in chunk), limits))
    return out


def _read_all(batches: list[Batch], n_files: int, workers: int, progress: bool, executor: Any = "local",
              scheduler: str | None = None) -> list[BatchResult]:
    """``read_batch`` over the batches through :func:`medmulti.executor.iter_patients`, in input order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_files, desc="scan", unit="file", disable=not progress)
    results: list[BatchResult | None] = [None] * len(batches)
    try:
        for outcome in iter_patients(read_batch, batches, executor=executor, scheduler=scheduler, workers=workers,
                                     progress=False, what="scan", unit="batch", start_method="default",
                                     chunksize=max(1, min(16, len(batches) // (max(1, workers) * 8)))):
            res = outcome.result()
            results[outcome.index] = res
            bar.update(res.n_files)
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _dicomdir_info(walk: Walk, notes: Mapping[str, FileNote]) -> list[dict[str, Any]]:
    """Per DICOMDIR: files referenced, missing, not readable DICOM, and DICOM images beside it no DICOMDIR lists.

    References are compared case-insensitively (a CD's ISO 9660 names may be mounted in lower case).
    """
    names = {e.name.lower(): e.name for files in walk.folders.values() for e in files}
    entries = {e.name: e for files in walk.folders.values() for e in files}
    out = []
    referenced: set[str] = set()
    for name in walk.dicomdirs:
        info: dict[str, Any] = {"path": name, "readable": True, "referenced": 0, "missing": [], "not_dicom": 0,
                                "unreferenced": 0}
        try:
            refs = read_dicomdir(entries[name])
        except MedmultiError:
            info["readable"] = False
            out.append(info)
            continue
        found = {names[r.lower()] for r in refs if r.lower() in names}
        referenced |= found
        info["referenced"] = len(refs)
        info["missing"] = [r for r in refs if r.lower() not in names]
        info["not_dicom"] = sum(1 for r in found if r in notes and notes[r].kind in ("not_dicom", "corrupt",
                                                                                    "unreadable"))
        out.append(info)
    for info in out:  # DICOM images under a DICOMDIR's folder that no DICOMDIR references
        folder = info["path"].rpartition("/")[0]
        prefix = f"{folder}/" if folder else ""
        info["unreferenced"] = sum(1 for n in names.values() if n.startswith(prefix) and n not in referenced
                                   and n not in notes)
    return out


def _patterns(spec: StudySpec, nifti: Mapping[str, str | Sequence[str]] | None) -> dict[str, list[str]]:
    patterns = {m.name: list(m.selection.nifti) for m in spec.modalities if m.selection.nifti}
    for name, given in (nifti or {}).items():
        spec.modality(name)  # SpecError naming the spec's modalities
        items = [given] if isinstance(given, str) else list(given)
        for p in items:
            check_nifti_pattern(p, f"--nifti {name}")
        patterns[name] = items
    return patterns


def _label_of(patient: Patient, key: str, table: LabelTable | None) -> str | None:
    """The labels file's identifier joined to this patient, or None."""
    if table is None:
        return None
    if table.kind == "patient-id":
        ident = patient.patient_id
        return ident if ident in table.rows else None
    if table.kind == "key":
        ident = canonical_key(key)
        return ident if ident in table.rows else None
    hits = sorted(a for a in patient.accessions if a in table.rows)
    return hits[0] if hits else None


def scan(
    root: str | PathLike[str],
    spec: StudySpec | str | PathLike[str],
    *,
    out: str | PathLike[str] | None = None,
    nifti: Mapping[str, str | Sequence[str]] | None = None,
    key: str = "pseudonym",
    secret: str | PathLike[str] | None = None,
    labels: str | PathLike[str] | None = None,
    label_key: str = "patient-id",
    date_column: str | None = None,
    split: str | Sequence[float] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    limits: Limits | None = None,
    executor: Any = "local",
    scheduler: str | None = None,
) -> ScanResult:
    """Scan an export folder: choose one series per spec modality and patient; write a manifest.

    Parameters
    ----------
    root : str or PathLike
        The export: DICOM files in any nesting (extensions and a DICOMDIR optional),
        NIfTI files taken by pattern.
    spec : StudySpec or path
        The study spec (or its YAML file); each modality's ``select`` block gives its
        rules (:class:`~medmulti.spec.SeriesSelect`).
    out : str or PathLike, optional
        Write the manifest here, and the report beside it (``<stem>.scan.txt``,
        ``.scan.json``, ``.scan.html``). Without it nothing is written
        (:meth:`ScanResult.write_manifest` writes later).
    nifti : mapping, optional
        Modality name -> NIfTI pattern(s), replacing the spec's ``select.nifti``.
    key : {"pseudonym", "patient-id"}
        Manifest keys: keyed hashes of the PatientID (default), or the PatientID
        itself (a warning is logged and reported).
    secret : str or PathLike, optional
        The secret file of the pseudonyms (default ``~/.config/medmulti/scan-secret``,
        created with mode 0600 when missing); never inside ``root`` or ``out``'s folder.
    labels : str or PathLike, optional
        A CSV of labels (see :func:`~medmulti.scanning.labels.read_labels`).
    label_key : {"patient-id", "accession", "key"}
        What the labels file's key column holds.
    date_column : str, optional
        A column of the labels file with each patient's reference date: among several
        studies, the closest is taken (else the most recent).
    split : str or sequence of float, optional
        ``"train=0.7,val=0.15,test=0.15"`` or ``(train, val, test)``: fill the split
        column by patient (stratified by label, :func:`~medmulti.manifest.assign_splits`).
        Without it the split column is left empty (``medmulti split`` fills it).
    seed : int
        Seeds the split.
    workers : int, optional
        Worker processes reading headers (default: all cores; 1 reads in this process).
    progress : bool
        Show a progress bar (files).
    overwrite : bool
        Replace existing output files.
    limits : Limits, optional
        The readers' caps.
    executor : {"local", "dask"} or dask.distributed.Client
        Where the headers are read (:func:`medmulti.executor.map_patients`); the
        files must be on storage every Dask worker sees at the same path.
    scheduler : str, optional
        A Dask scheduler address or scheduler file (with ``executor="dask"``).

    Returns
    -------
    ScanResult
        Per patient: the key, the choice per modality and why, the manifest row;
        the files passed over; ``summary()``, ``to_json``, ``to_html``.

    Raises
    ------
    MissingFileError
        ``root`` is not a folder; the spec, labels or secret file cannot be read.
    SpecError
        A bad spec, or a ``nifti`` pattern or modality name it refuses.
    ManifestError
        A labels file without its key or label columns.
    UnsafePathError
        The secret lies inside ``root`` or the manifest's folder.
    OutputError
        ``out`` exists (without ``overwrite``) or cannot be written.
    ValueError
        An unknown ``key`` / ``label_key``, bad ``split`` shares.

    Examples
    --------
    >>> result = scan("export/", "spec.yaml", out="manifest.csv")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if not isinstance(spec, StudySpec):
        spec = StudySpec.from_yaml(spec)
    if key not in KEY_KINDS:
        raise ValueError(f"key must be one of {KEY_KINDS}, got {key!r}")
    ratios = parse_split(split) if isinstance(split, str) else (tuple(split) if split is not None else None)
    patterns = _patterns(spec, nifti)
    limits = limits or DEFAULT_LIMITS
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        ScanResult.check_outputs(out_path, overwrite=overwrite)
    folders_to_avoid = [root] + ([out_path.parent if str(out_path.parent) else "."] if out_path is not None else [])
    secret_bytes = load_secret(secret, outside=folders_to_avoid) if key == "pseudonym" else None
    table = read_labels(labels, spec, kind=label_key, date_column=date_column) if labels is not None else None

    walk = walk_root(root)
    batches = batches_of(walk, limits)
    n_workers = max(1, min(int(workers) if workers else (os.cpu_count() or 1), len(batches) or 1))
    results = _read_all(batches, walk.n_files, n_workers, progress, executor=executor, scheduler=scheduler)
    parts = [p for r in results for p in r.parts]
    notes = {n.name: n for r in results for n in r.notes}
    patients = build_patients(parts)

    found, unkeyed = match_nifti([n for n, note in notes.items() if note.kind == "nifti"], patterns)
    by_id = {p.patient_id: p for p in patients}
    for modality, idents in found.items():
        for ident, files in idents.items():
            pid = normalise_patient_id(ident)
            if not pid:
                unkeyed.extend(files)
                continue
            patient = by_id.get(pid)
            if patient is None:
                patient = by_id[pid] = Patient(patient_id=pid)
                patients.append(patient)
            patient.nifti.setdefault(modality, []).extend(files)

    keys = patient_keys([p.patient_id for p in patients], kind=key, secret=secret_bytes)
    results_by_patient: list[PatientResult] = []
    for patient in patients:
        k = keys[patient.patient_id]
        ident = _label_of(patient, k, table)
        date = table.dates.get(ident) if (table is not None and ident is not None) else None
        if table is not None and ident is not None:
            table.used.add(ident)
        choices = {m.name: choose(patient, m, date=date) for m in spec.modalities}
        label_cells = table.rows[ident][1] if (table is not None and ident is not None) else None
        results_by_patient.append(PatientResult.build(k, patient, choices, spec, label_cells))

    written = [r for r in results_by_patient if r.row is not None]
    if ratios is not None and written:
        strata = [tuple(r.row.get(c, "") for c in spec.labels.manifest_columns) for r in written]
        for r, s in zip(written, assign_splits([r.key for r in written], strata, ratios=ratios, seed=int(seed))):
            r.row["split"] = str(s)
    result = ScanResult(
        root=os.fspath(root), spec=spec, patients=results_by_patient, walk_passed_over=walk.passed_over,
        notes=list(notes.values()), dicomdirs=_dicomdir_info(walk, notes), nifti_unkeyed=sorted(set(unkeyed)),
        n_files=walk.n_files, key_kind=key, labels=table, split=ratios, seed=int(seed), workers=n_workers,
        identity=identity_pattern(patients),
        secret=None if key != "pseudonym" else os.fspath(secret if secret is not None else default_secret_path()),
    )
    result.seconds = time.perf_counter() - t0
    if key == "patient-id":
        log.warning("the manifest keys are the patients' PatientIDs (--key patient-id): the manifest identifies "
                    "patients; share it only where PatientIDs may go")
    if out_path is not None:
        result.write(out_path, overwrite=overwrite)
    log.info("scanned %d files in %.1f s: %d patients, %d rows written", walk.n_files, result.seconds,
             len(results_by_patient), len(written))
    return result
