"""``validate_manifest``: the admission of every row (:func:`~medmulti.manifest.admission.admit`) as one report."""

from __future__ import annotations

import logging
import time
from os import PathLike
from pathlib import Path
from typing import Any

from ..spec import StudySpec
from .admission import admit
from .load import load_manifest
from .report import ValidationReport

__all__ = ["validate_manifest"]

log = logging.getLogger("medmulti.manifest")


def validate_manifest(
    manifest_path: str | PathLike[str],
    spec: StudySpec | str | PathLike[str],
    *,
    workers: int | None = None,
    deep: bool = False,
    data_root: str | PathLike[str] | None = None,
    progress: bool = True,
    thumbnails: bool = False,
    executor: Any = "local",
    scheduler: str | None = None,
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
    executor : {"local", "dask"} or dask.distributed.Client
        Where the rows are checked (:func:`medmulti.executor.map_patients`): local
        worker processes, or a Dask cluster (the cross-row checks run here, on the
        digests the workers return).
    scheduler : str, optional
        A Dask scheduler address or scheduler file (with ``executor="dask"``).
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
    admission = admit(manifest, spec, depth="decode" if deep else "header", workers=workers, progress=progress,
                      thumbnails=thumbnails, desc="validate", executor=executor, scheduler=scheduler)
    results = admission.results
    report = ValidationReport(
        problems=admission.problems,
        patients=list(dict.fromkeys(r.key for r in manifest.rows)),
        n_files=admission.n_files,
        manifest_path=str(Path(manifest_path)),
        thumbnails={r.row.key: r.thumbnail for r in results if r.thumbnail} if thumbnails else None,
        thumbnail_modalities={r.row.key: r.thumbnail_modality for r in results if r.thumbnail_modality},
        seconds=time.perf_counter() - t0,
    )
    log.info("validated %d rows (%d files) in %.2f s: %d errors, %d warnings", len(manifest.rows), report.n_files,
             report.seconds, len(report.errors), len(report.warnings))
    return report
