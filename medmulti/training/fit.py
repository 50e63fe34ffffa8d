"""Train a fusion model on a manifest and write a run folder (see :mod:`medmulti.training`)."""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.cache_fill import preprocess_manifest
from ..errors import ManifestError, MedmultiError, RunFolderError, SpecError
from ..models import ModelOptions, build_fusion_model
from ..models.metrics import classification_metrics
from ..models.plots import plot_confusion_roc, plot_history
from ..models.saving import load_fusion_model, save_model_atomic
from ..spec import StudySpec
from .batches import (
    keys_for,
    load_spec,
    make_sequence,
    open_manifest,
    predict_sequence,
    select_inputs,
    write_predictions,
)
from .options import MONITORS, DataOptions, FitOptions, resolve_train_options
from .run_folder import (
    MODEL_FILE,
    RUN_CARD,
    folder_error,
    mark_failed,
    relative_to_run,
    sha256_file,
    versions,
    write_json,
)

__all__ = ["TrainResult", "train", "MONITORS"]

log = logging.getLogger("medmulti.training")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    metrics : dict
        Test-split metrics (see :func:`medmulti.models.metrics.classification_metrics`);
        empty when the manifest has no test split.
    val_metrics : dict
        The same on the validation split (empty without one).
    history : dict
        Metric name -> per-epoch values.
    best_epoch : int
        1-based epoch of the kept checkpoint.
    seconds : float
        Wall time of the whole call.
    model_path : Path
        The saved best model.
    counts : dict
        Per split: patients, skipped patients, inputs fed as zeros, patients per class.
    excluded : dict
        Per split: ``{"skipped": [...], "zeroed": [...]}``, one record
        (``patient_id``, ``modality``, ``reason``) per patient left out or input fed
        as zeros by the ``on_missing`` / ``on_corrupt`` policies (also in the run card).
    """

    run_dir: Path
    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    model_path: Path
    counts: dict[str, Any] = field(default_factory=dict)
    excluded: dict[str, Any] = field(default_factory=dict)

    @property
    def test_auc(self) -> float | None:
        """Test ROC AUC (mean over classes), or ``None``."""
        return self.metrics.get("auc")

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy, or ``None``."""
        return self.metrics.get("accuracy")


def _set_determinism(seed: int, deterministic: bool) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _loss_and_metrics(spec: StudySpec) -> tuple[str, list[Any]]:
    import keras

    if spec.labels.multi_label:
        return "binary_crossentropy", [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc", multi_label=True, num_labels=spec.labels.num_classes),
        ]
    if spec.labels.encoding == "int":
        return "sparse_categorical_crossentropy", [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return "categorical_crossentropy", [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.AUC(name="auc"),
    ]


def _select_names(spec: StudySpec, modalities: Sequence[str] | None) -> list[str]:
    if modalities is None:
        return list(spec.names)
    names = list(dict.fromkeys(modalities))
    unknown = [n for n in names if n not in spec.names]
    if unknown or not names:
        raise SpecError(f"modalities {unknown or names} are not in the spec; it has {spec.names}",
                        keyword="modalities")
    return [n for n in spec.names if n in names]  # spec order


#: Patients to preprocess before parallel processes pay for their start-up (1-2 s each).
PARALLEL_FILL_MIN = 16


def _fill_cache(man: Any, spec: StudySpec, seqs: Mapping[str, Any], progress: bool) -> None:
    """Preprocess every served patient into the cache before the first epoch, with all
    cores (a cold epoch would preprocess inside the batches, in threads)."""
    import dataclasses

    served = {pid for seq in seqs.values() for pid in seq.patient_ids}
    rows = [r for r in man.rows if r.key in served]
    workers = None if len(rows) >= PARALLEL_FILL_MIN else 1
    summary = preprocess_manifest(dataclasses.replace(man, rows=rows), spec, seqs["train"].cache,
                                  workers=workers, progress=progress)
    if summary.computed:
        log.info("filled the cache before training: %s", summary.summary().splitlines()[0])


def _fit_dataset(seq: Any, keys: Sequence[str]) -> Any:
    """Wrap a PatientSequence so it yields only the model's inputs (a subset of modalities)."""
    import keras

    class _Inputs(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()

        def __len__(self) -> int:
            return len(seq)

        def __getitem__(self, index: int) -> tuple:
            return select_inputs(seq[index], keys)

        def on_epoch_end(self) -> None:
            seq.on_epoch_end()

    return _Inputs()


def _counts(seq: Any, spec: StudySpec) -> dict[str, Any]:
    labels = np.stack([np.asarray(v) for v in seq.labels]) if seq.num_patients else None
    per_class: dict[str, int] = {}
    if labels is not None:
        if spec.labels.multi_label:
            per_class = {c: int(labels[:, i].sum()) for i, c in enumerate(spec.labels.classes)}
        else:
            index = labels.astype(np.int64) if labels.ndim == 1 else np.argmax(labels, 1)
            per_class = {c: int((index == i).sum()) for i, c in enumerate(spec.labels.classes)}
    return {"patients": int(seq.num_patients), "skipped": len({s[0] for s in seq.skipped}),
            "zeroed_inputs": len(getattr(seq, "zeroed", [])), "classes": per_class}


def _history_from_csv(path: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    if not path.is_file():
        return out
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            for k, v in rec.items():
                if k == "epoch":
                    continue
                try:
                    out.setdefault(k, []).append(float(v))
                except (TypeError, ValueError):
                    pass
    return out


class _ValAUC:
    """Keras callback adding the exact validation ROC AUC as ``val_auc`` to the epoch logs."""

    def __new__(cls, seq: Any, keys: Sequence[str], spec: StudySpec):
        import keras

        class ValAUC(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                _, y, p = predict_sequence(self.model, seq, keys)
                m = classification_metrics(y, p, spec.labels.classes, multi_label=spec.labels.multi_label)
                if logs is not None:
                    logs["val_auc"] = float("nan") if m["auc"] is None else m["auc"]

        return ValAUC()


class _BestCheckpoint:
    """Keras callback saving the model atomically whenever ``monitor`` improves.

    Unlike ``keras.callbacks.ModelCheckpoint`` it never leaves a truncated file (a
    full disk mid-save keeps the previous best) and skips undefined (NaN) values.
    """

    def __new__(cls, path: Path, *, monitor: str, mode: str):
        import keras

        class BestCheckpoint(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.best = -np.inf if mode == "max" else np.inf

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                value = (logs or {}).get(monitor)
                if value is None or not np.isfinite(float(value)):
                    return
                value = float(value)
                if (value > self.best) if mode == "max" else (value < self.best):
                    self.best = value
                    save_model_atomic(self.model, path)

        return BestCheckpoint()


# -- train ---------------------------------------------------------------------------------
def train(
    manifest: Any,
    spec: StudySpec | str | PathLike[str],
    out: str | PathLike[str],
    *,
    model: ModelOptions | None = None,
    fit: FitOptions | None = None,
    data: DataOptions | None = None,
    progress: bool = True,
    overwrite: bool = False,
    **keywords: Any,
) -> TrainResult:
    """Train a fusion model on a manifest and write a run folder (see the module doc).

    Parameters
    ----------
    manifest : Manifest or str or PathLike
        The manifest (or its CSV path) with ``train`` and, ideally, ``val``/``test`` rows.
    spec : StudySpec or str or PathLike
        The study spec or its YAML file.
    out : str or PathLike
        The run folder (created; must be empty unless ``overwrite``).
    model : ModelOptions, optional
        The architecture (see :func:`~medmulti.models.build_fusion_model`); default
        ``ModelOptions()``.
    fit : FitOptions, optional
        Epochs, batch size, learning rate, early stopping (``patience``, ``monitor``),
        seed, determinism; default ``FitOptions()``.
    data : DataOptions, optional
        Cache folder, modalities, augmentation, class balance, ``on_missing`` /
        ``on_corrupt`` policies, data root; default ``DataOptions()``.
    progress : bool
        Show Keras's progress bar and medmulti's tqdm bars.
    overwrite : bool
        Allow a non-empty ``out``.
    **keywords
        Any field of the three records as a keyword (``epochs=3``, ``width=4``,
        ``cache_dir="cache"``, ``modalities=["ct"]``, ...); it replaces that field.

    Returns
    -------
    TrainResult
        Test (and validation) metrics, history, best epoch, timings.

    Raises
    ------
    MedmultiError
        Data problems (typed, naming patient / modality / file), a missing ``train`` split.
    SpecError
        Unknown ``modalities``.
    ValueError
        Bad option values, or a non-empty ``out`` without ``overwrite``.
    TypeError
        A keyword that is not an option, or an option record of the wrong type.

    Examples
    --------
    These two calls train the same model the same way::

        train(manifest, spec, "runs/a", model=ModelOptions(width=4), fit=FitOptions(epochs=2),
              data=DataOptions(cache_dir="cache"))
        train(manifest, spec, "runs/b", width=4, epochs=2, cache_dir="cache")
    """
    t0 = time.perf_counter()
    model, fit, data = resolve_train_options(model, fit, data, **keywords)
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError("the run folder path is a file", path=run_dir, hint="choose another out folder",
                             cli_hint="choose another --out")
    held_files = run_dir.is_dir() and any(run_dir.iterdir())
    if held_files and not overwrite:
        raise ValueError(f"run folder {str(run_dir)!r} is not empty; choose another out folder or pass "
                         "overwrite=True")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=run_dir)
        probe.close()
    except OSError as exc:
        raise folder_error(exc, run_dir, "the run folder") from None

    spec = load_spec(spec)
    try:
        return _train_into(run_dir, manifest, spec, t0=t0, model_opts=model, fit_opts=fit, data_opts=data,
                           progress=progress)
    except BaseException as exc:
        mark_failed(run_dir, exc, remove=created or not held_files, remove_folder=created)
        if isinstance(exc, OSError) and not isinstance(exc, MedmultiError):
            raise folder_error(exc, run_dir, "the run folder") from None
        raise


def _auc_defined(seq: Any, spec: StudySpec) -> bool:
    """Whether a split's labels define a ROC AUC (both classes present for some class)."""
    labels = np.stack([np.asarray(v) for v in seq.labels])
    k = len(spec.labels.classes)
    if spec.labels.multi_label:
        scores = labels.astype(np.float64)
    else:
        index = labels.astype(np.int64) if labels.ndim == 1 else np.argmax(labels, 1)
        scores = np.eye(k)[index]
    return classification_metrics(labels, scores, spec.labels.classes,
                                   multi_label=spec.labels.multi_label).get("auc") is not None


def _exclusions(seq: Any) -> dict[str, list[dict[str, Any]]]:
    """The patients a sequence left out and the inputs it feeds as zeros, for the run card."""
    return {
        "skipped": [{"patient_id": k, "modality": m, "reason": r} for k, m, r in seq.skipped],
        "zeroed": [{"patient_id": k, "modality": m, "reason": r} for k, m, r in seq.zeroed],
    }


def _card_options(model_opts: ModelOptions, fit_opts: FitOptions, data_opts: DataOptions, *,
                  monitor: str) -> dict[str, Any]:
    """The run card's ``"options"``: the fit options (the seed and determinism have their own
    card keys), the quantity actually watched, the model options, the sequence policies."""
    fitted = {k: v for k, v in asdict(fit_opts).items() if k not in ("seed", "deterministic")}
    return {**fitted, "monitor": monitor, **asdict(model_opts), **data_opts.sequence_options()}


def _train_into(run_dir: Path, manifest: Any, spec: StudySpec, *, t0: float, model_opts: ModelOptions,
                fit_opts: FitOptions, data_opts: DataOptions, progress: bool) -> TrainResult:
    import keras

    names = _select_names(spec, data_opts.modalities)
    options = data_opts.sequence_options()
    man = open_manifest(manifest, spec, data_opts.data_root, options)
    _set_determinism(fit_opts.seed, fit_opts.deterministic)
    cache_dir, monitor = data_opts.cache_dir, fit_opts.monitor

    split_rows = {s: len(man.split(s)) for s in ("train", "val", "test")}
    if not split_rows["train"]:
        raise ManifestError("the manifest has no 'train' rows", path=getattr(man, "path", None),
                            hint="give some rows split=train")
    common = dict(options=options, batch_size=fit_opts.batch_size, seed=fit_opts.seed, cache_dir=cache_dir,
                  progress=progress)
    seqs = {"train": make_sequence(man, spec, "train", train=True, **common)}
    for split in ("val", "test"):
        if split_rows[split]:
            seqs[split] = make_sequence(man, spec, split, **common)
    if cache_dir is not None:
        _fill_cache(man, spec, seqs, progress)
    if monitor == "val_auc" and "val" in seqs and not _auc_defined(seqs["val"], spec):
        raise ManifestError("the 'val' split holds one class only, so its ROC AUC (monitor 'val_auc') is undefined",
                            path=getattr(man, "path", None),
                            hint="put patients of every class in split=val, or use monitor='val_loss'",
                            cli_hint="put patients of every class in split=val, or use --monitor val_loss")
    optional = [n for n in seqs["train"].optional_modalities if n in names]
    keys = keys_for(names, optional)
    shapes = seqs["train"].element_shapes()

    model = build_fusion_model(
        spec, modalities=names, optional_modalities=optional, options=model_opts, seed=fit_opts.seed,
        input_shapes={n: shapes[n] for n in names}, name="medmulti_" + ("fusion" if len(names) > 1 else names[0]),
    )
    loss, metrics = _loss_and_metrics(spec)
    model.compile(optimizer=keras.optimizers.Adam(fit_opts.learning_rate), loss=loss, metrics=metrics)

    has_val = "val" in seqs
    watch = monitor if has_val or monitor == "loss" else "loss"
    if watch != monitor:
        log.warning("no 'val' split: checkpointing on the training loss instead of %s", monitor)
    mode = "max" if watch.endswith("auc") else "min"
    model_path = run_dir / MODEL_FILE
    callbacks: list[Any] = []
    if has_val and watch == "val_auc":
        callbacks.append(_ValAUC(seqs["val"], keys, spec))
    callbacks += [
        _BestCheckpoint(model_path, monitor=watch, mode=mode),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
    ]
    if fit_opts.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=watch, mode=mode, patience=fit_opts.patience,
                                                       verbose=0))

    log.info("training %s on %s (%d train patients)", model.name, names, seqs["train"].num_patients)
    fit = model.fit(
        _fit_dataset(seqs["train"], keys),
        validation_data=_fit_dataset(seqs["val"], keys) if has_val else None,
        epochs=fit_opts.epochs,
        callbacks=callbacks,
        verbose=1 if progress else 0,
    )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    watched = history.get(watch, [])
    finite = [v for v in watched if np.isfinite(v)]
    if finite:
        best_epoch = int(np.nanargmax(watched) if mode == "max" else np.nanargmin(watched)) + 1
    else:  # nothing to pick by (every value undefined): the last epoch is kept
        best_epoch = len(next(iter(history.values()), []))
    if model_path.is_file():
        best = load_fusion_model(model_path, run_dir=run_dir)
    else:
        best = model
        save_model_atomic(model, model_path)

    results: dict[str, dict[str, Any]] = {}
    for split in ("val", "test"):
        if split in seqs:
            ids, y, p = predict_sequence(best, seqs[split], keys, progress)
            results[split] = classification_metrics(y, p, spec.labels.classes, multi_label=spec.labels.multi_label)
            write_predictions(run_dir / f"predictions_{split}.csv", ids, p, spec.labels.classes, y, spec)
            if split == "test":
                plot_confusion_roc(y, p, spec.labels.classes, run_dir / "confusion_roc.png",
                                   multi_label=spec.labels.multi_label,
                                   title=f"{model.name}: test split (n={len(ids)})")
    plot_history(history, run_dir / "curves.png", title=model.name)

    counts = {s: _counts(q, spec) for s, q in seqs.items()}
    seconds = time.perf_counter() - t0
    metrics_doc = {"test": results.get("test", {}), "val": results.get("val", {}), "best_epoch": best_epoch,
                   "epochs_run": len(next(iter(history.values()), [])), "monitor": watch}
    write_json(run_dir / "metrics.json", metrics_doc)
    man_path = Path(man.path)
    card = {
        "format": 1,
        "status": "complete",
        "model": model.name,
        "modalities": names,
        "optional_modalities": optional,
        "input_keys": keys,
        "spec": spec.to_dict(),
        "manifest": {"path": relative_to_run(run_dir, man_path),
                     "sha256": sha256_file(man_path) if man_path.is_file() else None},
        "cache_dir": None if cache_dir is None else relative_to_run(run_dir, Path(cache_dir)),
        "versions": versions(),
        "seed": int(fit_opts.seed),
        "deterministic": bool(fit_opts.deterministic),
        "options": _card_options(model_opts, fit_opts, data_opts, monitor=watch),
        "counts": counts,
        "excluded": {s: _exclusions(q) for s, q in seqs.items()},
        "best_epoch": best_epoch,
        "seconds": round(seconds, 2),
    }
    write_json(run_dir / RUN_CARD, card)
    return TrainResult(run_dir=run_dir, metrics=results.get("test", {}), val_metrics=results.get("val", {}),
                       history=history, best_epoch=best_epoch, seconds=seconds, model_path=model_path, counts=counts,
                       excluded=card["excluded"])


