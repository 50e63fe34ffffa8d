"""Fill the preprocessing cache for a whole manifest, in parallel processes.

Each patient is a pure task ``(row, spec, cache) -> records``: it computes the
cache keys of the patient's inputs, skips the entries already cached, and
preprocesses the rest in one :func:`medmulti.study.preprocess.preprocess_study` call
(the reference is read once for the grid). Failures are recorded per patient and
modality, never raised, so one bad file does not stop the run; a killed run
leaves only complete entries and a rerun resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from os import PathLike
from typing import Any, Iterable

from .._processes import workers_allowed
from ..errors import MedmultiError
from ..executor import iter_patients
from ..manifest import Manifest, Problem, load_manifest
from ..manifest.schema import SERIES_SUFFIX
from ..spec import StudySpec
from ..study import preprocess as study_preprocess
from ..text import printable
from .cache import PreprocessCache
from .cache_key import entry_key
from .context import name_error

__all__ = ["PreprocessSummary", "preprocess_manifest", "preprocess_row"]

log = logging.getLogger("medmulti.data.cache_fill")


@dataclasses.dataclass
class PreprocessSummary:
    """What :func:`preprocess_manifest` did.

    Attributes
    ----------
    patients : int
        Rows processed.
    computed : int
        Entries preprocessed and written.
    cached : int
        Entries already in the cache (and readable).
    absent : int
        Inputs absent from the manifest (empty cells).
    failures : list of dict
        ``{"patient_id", "modality", "path", "check", "error", "message"}`` per
        failed patient input (messages never hold header values); ``check`` is
        the validation check name (:meth:`problems` gives them as records).
    seconds : float
        Wall-clock time.
    workers : int
        Processes used.
    """

    patients: int = 0
    computed: int = 0
    cached: int = 0
    absent: int = 0
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def summary(self) -> str:
        """Return a short multi-line human summary."""
        lines = [f"{self.patients} patients in {self.seconds:.1f} s with {self.workers} worker(s): "
                 f"{self.computed} computed, {self.cached} already cached, {self.absent} absent, "
                 f"{len(self.failures)} failed"]
        for f in self.failures:
            lines.append("  " + printable(f"{f['patient_id']} {f['modality'] or '-'} {f['path'] or '-'}: "
                                          f"{f['error']}: {f['message']}"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def problems(self) -> list[Problem]:
        """The failures as :class:`~medmulti.manifest.Problem` records (severity ``"error"``).

        Returns
        -------
        list of Problem
            One per failure, in :attr:`failures` order; what a sequence's
            :meth:`~medmulti.data.PatientSequence.apply_faults` takes.
        """
        return [Problem(f["patient_id"], f["modality"], f["path"], f.get("check") or "read_error", "error",
                        f["message"], f.get("hint") or "") for f in self.failures]


def _failure(row: Any, name: str | None, exc: BaseException, spec: StudySpec | None = None,
             root: Any = None) -> dict[str, Any]:
    if isinstance(exc, MedmultiError):
        if spec is not None and root is not None:
            name_error(exc, row, spec, root)
        return {"patient_id": row.key, "modality": exc.modality or name,
                "path": exc.path or (row.paths.get(name) if name else None), "check": exc.check,
                "error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    # a library error's text may hold header values: report the type only
    return {"patient_id": row.key, "modality": name, "path": row.paths.get(name) if name else None,
            "check": "read_error", "error": type(exc).__name__, "message": "unexpected error while preprocessing",
            "hint": None}


def preprocess_row(row: Any, spec: StudySpec, cache: PreprocessCache, root: str | PathLike[str]) -> dict[str, Any]:
    """Cache every input of one manifest row that is not cached yet.

    Parameters
    ----------
    row : ManifestRow
        The patient.
    spec : StudySpec
        The study spec.
    cache : PreprocessCache
        Where entries go.
    root : str or PathLike
        The manifest root (keys use paths relative to it).

    Returns
    -------
    dict
        ``{"computed": int, "cached": int, "absent": int, "failures": [...]}``.
    """
    out: dict[str, Any] = {"computed": 0, "cached": 0, "absent": 0, "failures": []}
    sources = {n: row.sources.get(n) for n in spec.names}
    keys = {}
    todo = []
    for n in spec.names:
        refused = row.refused.get(n) or row.refused.get(n + SERIES_SUFFIX)
        if refused:  # an unsafe path is a failure, never an absent input
            out["failures"].append({"patient_id": row.key, "modality": n, "path": row.paths.get(n),
                                    "check": "unsafe_path", "error": "UnsafePathError", "message": refused,
                                    "hint": None})
            continue
        if sources[n] is None:
            out["absent"] += 1
            continue
        keys[n] = entry_key(spec, n, sources, root=root, sha256=row.sha256)
        if cache.load(keys[n]) is not None:
            out["cached"] += 1
        else:
            todo.append(n)
    if not todo:
        return out
    try:
        computed = study_preprocess.preprocess_study(sources, spec, patient_id=row.key, only=todo)
    except Exception as exc:  # noqa: BLE001 - recorded per patient, the run goes on
        out["failures"].append(_failure(row, None, exc, spec, root))
        return out
    for n in todo:
        pre = computed.get(n)
        if pre is None:
            out["failures"].append({"patient_id": row.key, "modality": n, "path": row.paths.get(n),
                                    "check": "missing_file", "error": "MissingFileError",
                                    "message": "the input was not preprocessed", "hint": None})
            continue
        try:
            cache.store(keys[n], pre.array, patient_id=row.key, modality=n, affine=pre.affine,
                        spacing=pre.spacing, meta=pre.meta,
                        provenance={"source": row.paths.get(n), "spec": spec.modality(n).to_dict()})
            out["computed"] += 1
        except MedmultiError as exc:
            out["failures"].append(_failure(row, n, exc))
    return out


def _init_worker() -> None:
    # one ITK thread per process: the parallelism is across patients
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except Exception:  # pragma: no cover - SimpleITK is a hard dependency
        pass


def _task(args: tuple) -> dict[str, Any]:
    row, spec, cache, root = args
    return preprocess_row(row, spec, cache, root)


def preprocess_manifest(
    manifest: Any,
    spec: StudySpec | str | PathLike[str],
    cache_dir: str | PathLike[str] | PreprocessCache,
    *,
    splits: Iterable[str] | None = None,
    workers: int | None = None,
    dtype: str = "float32",
    data_root: str | PathLike[str] | None = None,
    progress: bool = True,
    executor: Any = "local",
    scheduler: str | None = None,
) -> PreprocessSummary:
    """Preprocess every patient of a manifest into the cache.

    Parameters
    ----------
    manifest : Manifest or str or PathLike
        A loaded manifest or its CSV path (loaded leniently: rows with problems
        are attempted, their failures reported).
    spec : StudySpec or str or PathLike
        The study spec or its YAML file.
    cache_dir : str or PathLike or PreprocessCache
        The cache.
    splits : iterable of str, optional
        Only these splits (default: all rows).
    workers : int, optional
        Processes (default: all CPU cores; ``0`` or ``1`` runs in this process).
    dtype : {"float32", "float16"}
        Storage dtype when ``cache_dir`` is a path.
    data_root : str or PathLike, optional
        A folder allowed to hold inputs outside the manifest's folder (when
        ``manifest`` is a path; see :func:`~medmulti.manifest.load_manifest`).
    progress : bool
        Show a tqdm progress bar.
    executor : {"local", "dask"} or dask.distributed.Client
        Where the patients are preprocessed (:func:`medmulti.executor.map_patients`);
        with Dask the cache folder must be on storage every worker shares (entries
        are written atomically, content-addressed: concurrent writers are safe).
    scheduler : str, optional
        A Dask scheduler address or file (with ``executor="dask"``).

    Returns
    -------
    PreprocessSummary
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    spec = spec if isinstance(spec, StudySpec) else StudySpec.from_yaml(spec)
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, spec, strict=False, data_root=data_root)
    cache = cache_dir if isinstance(cache_dir, PreprocessCache) else PreprocessCache(cache_dir, dtype=dtype)
    cache.remove_orphan_temps()  # debris of a killed earlier run
    wanted = None if splits is None else set(splits)
    rows = [r for r in manifest.rows if wanted is None or r.split in wanted]
    n_workers = (os.cpu_count() or 1) if workers is None else max(0, int(workers))
    n_workers = min(n_workers, max(1, len(rows)))
    if executor == "local" and scheduler is None and n_workers > 1 and not workers_allowed("preprocessing"):
        n_workers = 1
    summary = PreprocessSummary(patients=len(rows), workers=max(1, n_workers))
    bar = tqdm(total=len(rows), desc="preprocess", unit="patient", disable=not progress)

    def add(res: dict[str, Any]) -> None:
        summary.computed += res["computed"]
        summary.cached += res["cached"]
        summary.absent += res["absent"]
        summary.failures.extend(res["failures"])
        bar.update(1)

    items = [(row, spec, cache, manifest.root) for row in rows]
    try:
        for outcome in iter_patients(_task, items, executor=executor, scheduler=scheduler, workers=n_workers,
                                     on_error="return", progress=False, initializer=_init_worker,
                                     what="preprocessing", start_method="spawn"):
            if outcome.ok:
                add(outcome.value)
            else:  # preprocess_row records data faults itself: a worker lost (or a bug), kept as a failure
                add({"computed": 0, "cached": 0, "absent": 0,
                     "failures": [_failure(rows[outcome.index], None, outcome.error)]})
    finally:
        bar.close()
    summary.failures.sort(key=lambda f: (str(f["patient_id"]), str(f["modality"])))
    summary.seconds = time.perf_counter() - t0
    log.info("preprocess: %s", summary.summary().splitlines()[0])
    return summary
