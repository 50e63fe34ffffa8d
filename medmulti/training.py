"""Train, evaluate and apply a fusion model on a manifest: ``train``, ``evaluate``, ``predict``.

:func:`train` builds the train/val/test :class:`~medmulti.data.sequence.PatientSequence`\\ s,
the model (:func:`~medmulti.models.build_fusion_model`), fits it with a progress bar,
keeps the best checkpoint, stops early, evaluates on the test split and writes a run
folder::

    RUN_DIR/
      model.keras        best checkpoint (load with keras.saving.load_model(..., safe_mode=True))
      history.csv        per-epoch metrics (keras.callbacks.CSVLogger)
      metrics.json       test accuracy, ROC AUC per class, confusion matrix (+ validation)
      predictions_test.csv
      curves.png         training curves
      confusion_roc.png  confusion matrix and ROC on the test split
      run_card.json      spec, manifest sha256, versions, seed, options, data counts per split

:func:`evaluate` re-scores a run on a split; :func:`predict` writes a CSV of
``patient_id`` and one probability per class. Nothing here reads or writes a header
value: patients are named by their manifest key only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ManifestError, MissingFileError, SpecError
from .spec import StudySpec

__all__ = ["TrainResult", "train", "evaluate", "predict", "MONITORS"]

log = logging.getLogger("medmulti.training")

#: quantities ``train(monitor=...)`` may watch for checkpointing and early stopping
MONITORS = ("val_loss", "val_auc", "loss")

MODEL_FILE = "model.keras"
RUN_CARD = "run_card.json"


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
    """

    run_dir: Path
    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    model_path: Path
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def test_auc(self) -> float | None:
        """Test ROC AUC (mean over classes), or ``None``."""
        return self.metrics.get("auc")

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy, or ``None``."""
        return self.metrics.get("accuracy")


# -- helpers -------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_spec(spec: StudySpec | str | PathLike[str]) -> StudySpec:
    return spec if isinstance(spec, StudySpec) else StudySpec.from_yaml(spec)


def _load_manifest(manifest: Any, spec: StudySpec, data_root: Any = None) -> Any:
    from .manifest import Manifest, load_manifest

    if isinstance(manifest, Manifest):
        return manifest
    return load_manifest(manifest, spec, data_root=data_root)


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from . import __version__

    return {
        "medmulti": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


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


def _make_sequence(manifest: Any, spec: StudySpec, split: str, *, options: Mapping[str, Any], train: bool = False,
                   batch_size: int, seed: int, cache_dir: Any, progress: bool) -> Any:
    from .data.sequence import PatientSequence

    return PatientSequence(
        manifest, spec, split, batch_size=batch_size, shuffle=train, seed=seed,
        augment=bool(options.get("augment", False)) and train,
        on_missing=options.get("on_missing", "error"), on_corrupt=options.get("on_corrupt", "error"),
        cache_dir=cache_dir, class_balance=bool(options.get("class_balance", False)) and train,
        progress=progress,
    )


#: Patients to preprocess before parallel processes pay for their start-up (1-2 s each).
PARALLEL_FILL_MIN = 16


def _fill_cache(man: Any, spec: StudySpec, seqs: Mapping[str, Any], progress: bool) -> None:
    """Preprocess every served patient into the cache before the first epoch, with all
    cores (a cold epoch would preprocess inside the batches, in threads)."""
    import dataclasses

    from .data.preprocess_all import preprocess_manifest

    served = {pid for seq in seqs.values() for pid in seq.patient_ids}
    rows = [r for r in man.rows if r.key in served]
    workers = None if len(rows) >= PARALLEL_FILL_MIN else 1
    summary = preprocess_manifest(dataclasses.replace(man, rows=rows), spec, seqs["train"].cache,
                                  workers=workers, progress=progress)
    if summary.computed:
        log.info("filled the cache before training: %s", summary.summary().splitlines()[0])


def _keys_for(names: Sequence[str], optional: Sequence[str]) -> list[str]:
    return list(names) + [f"{n}_present" for n in optional if n in names]


def _select(batch: tuple, keys: Sequence[str]) -> tuple:
    inputs, *rest = batch
    return ({k: inputs[k] for k in keys}, *rest)


def _fit_dataset(seq: Any, keys: Sequence[str]) -> Any:
    """Wrap a PatientSequence so it yields only the model's inputs (a subset of modalities)."""
    import keras

    class _Inputs(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()

        def __len__(self) -> int:
            return len(seq)

        def __getitem__(self, index: int) -> tuple:
            return _select(seq[index], keys)

        def on_epoch_end(self) -> None:
            seq.on_epoch_end()

    return _Inputs()


def _predict_sequence(model: Any, seq: Any, keys: Sequence[str], progress: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Run ``model`` over every batch of a non-shuffled sequence: (patient ids, labels, probabilities)."""
    from tqdm.auto import tqdm

    ids = list(seq.patient_ids)
    probs, labels = [], []
    for i in tqdm(range(len(seq)), desc=f"predicting {seq.split}", unit="batch", disable=not progress, leave=False):
        inputs, y = _select(seq[i], keys)[:2]
        probs.append(np.asarray(model(inputs, training=False), np.float64))
        labels.append(np.asarray(y))
    return ids, np.concatenate(labels), np.concatenate(probs)


def _write_predictions(path: Path, ids: Sequence[str], probs: np.ndarray, classes: Sequence[str],
                       labels: np.ndarray | None = None, spec: StudySpec | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            header = ["patient_id", *[f"p_{c}" for c in classes]]
            if labels is not None and spec is not None and not spec.labels.multi_label:
                header += ["true", "predicted"]
            w.writerow(header)
            for j, pid in enumerate(ids):
                row = [pid, *[f"{v:.6f}" for v in probs[j]]]
                if len(header) > len(classes) + 1:
                    true = int(labels[j]) if labels.ndim == 1 else int(np.argmax(labels[j]))
                    row += [classes[true], classes[int(np.argmax(probs[j]))]]
                w.writerow(row)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _counts(seq: Any, spec: StudySpec) -> dict[str, Any]:
    labels = np.stack([np.asarray(v) for v in seq._labels]) if hasattr(seq, "_labels") else None
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
                from .models.metrics import classification_metrics

                _, y, p = _predict_sequence(self.model, seq, keys)
                m = classification_metrics(y, p, spec.labels.classes, multi_label=spec.labels.multi_label)
                if logs is not None:
                    logs["val_auc"] = float("nan") if m["auc"] is None else m["auc"]

        return ValAUC()


# -- train ---------------------------------------------------------------------------------
def train(
    manifest: Any,
    spec: StudySpec | str | PathLike[str],
    out: str | PathLike[str],
    *,
    epochs: int = 20,
    batch_size: int = 8,
    seed: int = 0,
    fusion: str = "concat",
    modalities: Sequence[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    learning_rate: float = 1e-3,
    patience: int = 5,
    monitor: str = "val_loss",
    width: int = 8,
    depth: int = 3,
    embed_dim: int = 32,
    dropout: float = 0.2,
    modality_dropout: float = 0.0,
    backbone: str | None = None,
    norm: str = "batch",
    stem_stride: int | dict[str, int] = 1,
    pooling: str = "max",
    augment: bool = False,
    class_balance: bool = False,
    on_missing: str = "error",
    on_corrupt: str = "error",
    data_root: str | PathLike[str] | None = None,
    deterministic: bool = True,
    progress: bool = True,
    overwrite: bool = False,
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
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Patients per batch.
    seed : int
        Seeds weights, shuffling, augmentation and modality dropout.
    fusion : {"concat", "attention", "gated"}
        Fusion of branch embeddings (see :func:`~medmulti.models.build_fusion_model`).
    modalities : sequence of str, optional
        Train on these modalities only (e.g. ``["ct"]`` for a CT-only model); the
        data are read and preprocessed exactly as for the full spec.
    cache_dir : str or PathLike, optional
        The preprocessing cache folder (strongly recommended: without it every
        epoch preprocesses every patient again).
    learning_rate : float
        Adam learning rate.
    patience : int
        Epochs without improvement of ``monitor`` before stopping (0 disables early stopping).
    monitor : {"val_loss", "val_auc", "loss"}
        What picks the best checkpoint; without a ``val`` split, ``"loss"`` is used.
    width, depth, embed_dim, dropout, modality_dropout, backbone, norm, stem_stride, pooling
        Model options, see :func:`~medmulti.models.build_fusion_model`.
    augment, class_balance, on_missing, on_corrupt
        Sequence options, see :class:`~medmulti.data.sequence.PatientSequence`.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    deterministic : bool
        Enable TensorFlow op determinism (same seed, same machine -> same run).
    progress : bool
        Show Keras's progress bar and medmulti's tqdm bars.
    overwrite : bool
        Allow a non-empty ``out``.

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
    """
    import keras

    from .models import build_fusion_model
    from .models.metrics import classification_metrics
    from .models.plots import plot_confusion_roc, plot_history

    t0 = time.perf_counter()
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    run_dir = Path(out)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise ValueError(f"run folder {str(run_dir)!r} is not empty; choose another --out or pass overwrite=True")
    run_dir.mkdir(parents=True, exist_ok=True)

    spec = _load_spec(spec)
    names = _select_names(spec, modalities)
    man = _load_manifest(manifest, spec, data_root)
    _set_determinism(seed, deterministic)

    options = {"augment": augment, "class_balance": class_balance, "on_missing": on_missing, "on_corrupt": on_corrupt}
    split_rows = {s: len(man.split(s)) for s in ("train", "val", "test")}
    if not split_rows["train"]:
        raise ManifestError("the manifest has no 'train' rows", path=getattr(man, "path", None),
                            hint="give some rows split=train")
    common = dict(options=options, batch_size=batch_size, seed=seed, cache_dir=cache_dir, progress=progress)
    seqs = {"train": _make_sequence(man, spec, "train", train=True, **common)}
    for split in ("val", "test"):
        if split_rows[split]:
            seqs[split] = _make_sequence(man, spec, split, **common)
    if cache_dir is not None:
        _fill_cache(man, spec, seqs, progress)
    optional = [n for n in seqs["train"].optional_modalities if n in names]
    keys = _keys_for(names, optional)
    shapes = seqs["train"].element_shapes()

    model = build_fusion_model(
        spec, modalities=names, optional_modalities=optional, fusion=fusion, width=width, depth=depth,
        embed_dim=embed_dim, dropout=dropout, modality_dropout=modality_dropout, backbone=backbone, norm=norm,
        stem_stride=stem_stride, pooling=pooling, seed=seed, input_shapes={n: shapes[n] for n in names},
        name="medmulti_" + ("fusion" if len(names) > 1 else names[0]),
    )
    loss, metrics = _loss_and_metrics(spec)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)

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
        keras.callbacks.ModelCheckpoint(model_path, monitor=watch, mode=mode, save_best_only=True, verbose=0),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
    ]
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=watch, mode=mode, patience=patience, verbose=0))

    log.info("training %s on %s (%d train patients)", model.name, names, seqs["train"].num_patients)
    fit = model.fit(
        _fit_dataset(seqs["train"], keys),
        validation_data=_fit_dataset(seqs["val"], keys) if has_val else None,
        epochs=epochs,
        callbacks=callbacks,
        verbose=1 if progress else 0,
    )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    watched = history.get(watch, [])
    best_epoch = int(np.nanargmax(watched) if mode == "max" else np.nanargmin(watched)) + 1 if watched else len(
        next(iter(history.values()), [])
    )
    best = keras.saving.load_model(model_path, safe_mode=True) if model_path.is_file() else model
    if not model_path.is_file():
        model.save(model_path)

    results: dict[str, dict[str, Any]] = {}
    for split in ("val", "test"):
        if split in seqs:
            ids, y, p = _predict_sequence(best, seqs[split], keys, progress)
            results[split] = classification_metrics(y, p, spec.labels.classes, multi_label=spec.labels.multi_label)
            _write_predictions(run_dir / f"predictions_{split}.csv", ids, p, spec.labels.classes, y, spec)
            if split == "test":
                plot_confusion_roc(y, p, spec.labels.classes, run_dir / "confusion_roc.png",
                                   multi_label=spec.labels.multi_label,
                                   title=f"{model.name}: test split (n={len(ids)})")
    plot_history(history, run_dir / "curves.png", title=model.name)

    counts = {s: _counts(q, spec) for s, q in seqs.items()}
    seconds = time.perf_counter() - t0
    metrics_doc = {"test": results.get("test", {}), "val": results.get("val", {}), "best_epoch": best_epoch,
                   "epochs_run": len(next(iter(history.values()), [])), "monitor": watch}
    _write_json(run_dir / "metrics.json", metrics_doc)
    man_path = Path(man.path)
    card = {
        "format": 1,
        "model": model.name,
        "modalities": names,
        "optional_modalities": optional,
        "input_keys": keys,
        "spec": spec.to_dict(),
        "manifest": {"path": str(man_path.resolve()), "sha256": _sha256(man_path) if man_path.is_file() else None},
        "cache_dir": None if cache_dir is None else str(Path(cache_dir).resolve()),
        "versions": _versions(),
        "seed": int(seed),
        "deterministic": bool(deterministic),
        "options": {
            "epochs": epochs, "batch_size": batch_size, "fusion": fusion, "learning_rate": learning_rate,
            "patience": patience, "monitor": watch, "width": width, "depth": depth, "embed_dim": embed_dim,
            "dropout": dropout, "modality_dropout": modality_dropout, "backbone": backbone, "norm": norm,
            "stem_stride": stem_stride, "pooling": pooling, **options,
        },
        "counts": counts,
        "best_epoch": best_epoch,
        "seconds": round(seconds, 2),
    }
    _write_json(run_dir / RUN_CARD, card)
    return TrainResult(run_dir=run_dir, metrics=results.get("test", {}), val_metrics=results.get("val", {}),
                       history=history, best_epoch=best_epoch, seconds=seconds, model_path=model_path, counts=counts)


# -- evaluate / predict --------------------------------------------------------------------
def _open_run(run_dir: str | PathLike[str]) -> tuple[Path, dict[str, Any], StudySpec, Any]:
    import keras

    run = Path(run_dir)
    card_path = run / RUN_CARD
    model_path = run / MODEL_FILE
    for p in (card_path, model_path):
        if not p.is_file():
            raise MissingFileError("not a medmulti run folder (no run card or model)", path=p,
                                   hint="pass the --out folder of `medmulti train`")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManifestError("the run card is not valid JSON", path=card_path) from None
    spec = StudySpec.from_dict(card["spec"])
    model = keras.saving.load_model(model_path, safe_mode=True)
    return run, card, spec, model


def _run_manifest(card: Mapping[str, Any], manifest: Any, spec: StudySpec, data_root: Any) -> Any:
    if manifest is None:
        manifest = card["manifest"]["path"]
    man = _load_manifest(manifest, spec, data_root)
    want = card["manifest"].get("sha256")
    path = Path(man.path)
    if want and path.is_file() and path.resolve() == Path(card["manifest"]["path"]) and _sha256(path) != want:
        log.warning("the manifest changed since training (sha256 differs from the run card)")
    return man


def evaluate(
    run_dir: str | PathLike[str],
    manifest: Any = None,
    *,
    split: str = "test",
    cache_dir: str | PathLike[str] | None = None,
    batch_size: int = 8,
    data_root: str | PathLike[str] | None = None,
    write: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained run on a split of a manifest.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`train`.
    manifest : Manifest or str or PathLike, optional
        Default: the manifest the run was trained on (from the run card).
    split : {"train", "val", "test"}
        Which rows to score.
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the run's).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    write : bool
        Also write ``evaluation_<split>.json``, ``predictions_<split>.csv`` and
        ``confusion_roc_<split>.png`` into the run folder.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        As :func:`~medmulti.models.metrics.classification_metrics`.

    Raises
    ------
    MissingFileError
        ``run_dir`` is not a run folder.
    MedmultiError
        Data problems, typed.
    """
    from .models.metrics import classification_metrics
    from .models.plots import plot_confusion_roc

    run, card, spec, model = _open_run(run_dir)
    man = _run_manifest(card, manifest, spec, data_root)
    if not man.split(split):
        raise ManifestError(f"the manifest has no {split!r} rows", path=getattr(man, "path", None))
    options = card.get("options", {})
    seq = _make_sequence(man, spec, split, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                         cache_dir=cache_dir if cache_dir is not None else card.get("cache_dir"), progress=progress)
    ids, y, p = _predict_sequence(model, seq, card["input_keys"], progress)
    result = classification_metrics(y, p, spec.labels.classes, multi_label=spec.labels.multi_label)
    if write:
        _write_json(run / f"evaluation_{split}.json", result)
        _write_predictions(run / f"predictions_{split}.csv", ids, p, spec.labels.classes, y, spec)
        plot_confusion_roc(y, p, spec.labels.classes, run / f"confusion_roc_{split}.png",
                           multi_label=spec.labels.multi_label, title=f"{card.get('model', 'model')}: {split}")
    return result


def predict(
    run_dir: str | PathLike[str],
    manifest: Any,
    *,
    out: str | PathLike[str] | None = None,
    splits: Sequence[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    batch_size: int = 8,
    data_root: str | PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write a CSV of ``patient_id`` and one probability column ``p_<class>`` per class.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`train`.
    manifest : Manifest or str or PathLike
        The patients to score (a manifest with the run's spec columns).
    out : str or PathLike, optional
        The CSV to write (default ``RUN_DIR/predictions.csv``).
    splits : sequence of str, optional
        Only rows of these splits (default: every split present).
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the run's).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The CSV written.

    Raises
    ------
    MissingFileError
        ``run_dir`` is not a run folder.
    MedmultiError
        Data problems, typed.
    """
    run, card, spec, model = _open_run(run_dir)
    man = _run_manifest(card, manifest, spec, data_root)
    wanted = list(splits) if splits is not None else [s for s in ("train", "val", "test") if man.split(s)]
    options = card.get("options", {})
    all_ids: list[str] = []
    all_p = []
    for split in wanted:
        if not man.split(split):
            continue
        seq = _make_sequence(man, spec, split, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                             cache_dir=cache_dir if cache_dir is not None else card.get("cache_dir"),
                             progress=progress)
        ids, _, p = _predict_sequence(model, seq, card["input_keys"], progress)
        all_ids += ids
        all_p.append(p)
    if not all_ids:
        raise ManifestError(f"no rows to predict in splits {wanted}", path=getattr(man, "path", None))
    path = Path(out) if out is not None else run / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_predictions(path, all_ids, np.concatenate(all_p), spec.labels.classes)
    return path
