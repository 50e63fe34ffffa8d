"""``validate_manifest``: every check on every row, in parallel, into one report."""

from __future__ import annotations

import functools
import logging
import os
import time
from os import PathLike
from pathlib import Path

from .._processes import WorkerPool, workers_allowed
from ..spec import StudySpec
from .checks import RowCheck, check_row, cross_row_checks
from .load import load_manifest
from .report import ValidationReport

__all__ = ["validate_manifest"]

log = logging.getLogger("medmulti.manifest")


def _check_rows(rows, spec: StudySpec, *, workers: int, deep: bool, thumbnails: bool, progress: bool) -> list[RowCheck]:
    from tqdm.auto import tqdm

    job = functools.partial(check_row, spec=spec, deep=deep, thumbnail=thumbnails)
    bar = tqdm(total=len(rows), desc="validate", unit="patient", disable=not progress)
    results: list[RowCheck] = []
    try:
        if workers <= 1 or len(rows) < 2 or not workers_allowed("validation", "default"):
            for row in rows:
                results.append(job(row))
                bar.update(1)
        else:
            chunk = max(1, min(32, len(rows) // (workers * 8)))
            with WorkerPool(workers) as pool:  # Ctrl-C: workers stopped, not left on a queue lock
                for res in pool.map(job, rows, chunksize=chunk):
                    results.append(res)
                    bar.update(1)
    finally:
        bar.close()
    return results


def validate_manifest(
    manifest_path: str | PathLike[str],
    spec: StudySpec | str | PathLike[str],
    *,
    workers: int | None = None,
    deep: bool = False,
    data_root: str | PathLike[str] | None = None,
    progress: bool = True,
    thumbnails: bool = False,
) -> ValidationReport:
    """Check a manifest and every input it names; report every problem at once.

    Parameters
    ----------
    manifest_path : str or PathLike
        The manifest CSV.
    spec : StudySpec or path
        The study spec, or its YAML file.
    workers : int, optional
        Worker processes (default: all cores); 1 checks in this process.
    deep : bool
        Decode every pixel too. Without it, headers are read and file sizes are
        compared with the declared pixel data (truncated files are still found).
    data_root : str or PathLike, optional
        A folder allowed to hold inputs outside the manifest's folder.
    progress : bool
        Show a tqdm progress bar.
    thumbnails : bool
        Render a thumbnail per patient (for :meth:`ValidationReport.to_html`,
        labelled with its modality, beside a "not readable" tile per input that
        could not be read); reads the pixels of one modality per patient.

    Returns
    -------
    ValidationReport
        ``.ok`` is False when any error was found; warnings do not fail.

    Raises
    ------
    MissingFileError
        The manifest or spec file does not exist.
    ManifestError
        The manifest cannot be parsed at all (missing/unknown columns, no rows...).
        Row-level problems are reported, not raised.
    SpecError
        The spec is invalid.

    Examples
    --------
    >>> report = validate_manifest("cohort/manifest.csv", "cohort/spec.yaml")  # doctest: +SKIP
    >>> report.ok, len(report.problems)  # doctest: +SKIP
    (True, 0)
    """
    t0 = time.perf_counter()
    if not isinstance(spec, StudySpec):
        spec = StudySpec.from_yaml(spec)
    manifest = load_manifest(manifest_path, spec, data_root=data_root, strict=False)
    n_workers = int(workers) if workers else (os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(manifest.rows)))
    results = _check_rows(manifest.rows, spec, workers=n_workers, deep=deep, thumbnails=thumbnails,
                          progress=progress)
    problems = [p for r in results for p in r.problems]
    problems += cross_row_checks(results, spec)
    report = ValidationReport(
        problems=problems,
        patients=list(dict.fromkeys(r.key for r in manifest.rows)),
        n_files=sum(r.n_files for r in results),
        manifest_path=str(Path(manifest_path)),
        thumbnails={r.row.key: r.thumbnail for r in results if r.thumbnail} if thumbnails else None,
        thumbnail_modalities={r.row.key: r.thumbnail_modality for r in results if r.thumbnail_modality},
        seconds=time.perf_counter() - t0,
    )
    log.info("validated %d rows (%d files) in %.2f s: %d errors, %d warnings", len(manifest.rows), report.n_files,
             report.seconds, len(report.errors), len(report.warnings))
    return report
