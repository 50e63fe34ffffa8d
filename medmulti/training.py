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
import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ManifestError, MedmultiError, MissingFileError, RunFolderError, SpecError
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


def _load_manifest(manifest: Any, spec: StudySpec, data_root: Any = None,
                   options: Mapping[str, Any] | None = None) -> Any:
    """Load a manifest: strictly under the "error" policies; leniently when a policy may skip
    or zero a patient, so that a row's problems (an unsafe path among them: never opened)
    reach the sequence's policies instead of stopping the load."""
    from .manifest import Manifest, load_manifest

    if isinstance(manifest, Manifest):
        return manifest
    options = options or {}
    strict = options.get("on_missing", "error") == "error" and options.get("on_corrupt", "error") == "error"
    return load_manifest(manifest, spec, data_root=data_root, strict=strict)


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
    """Write the predictions CSV atomically.

    Patient keys and class names come from the manifest and spec: each goes
    through :func:`~medmulti.text.csv_safe`, so a spreadsheet shows ``=1+2`` as text
    (``'=1+2``). Probabilities are numbers we format and stay numeric.
    """
    from .text import csv_safe

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            header = ["patient_id", *[f"p_{c}" for c in classes]]  # "p_" first: never a formula
            if labels is not None and spec is not None and not spec.labels.multi_label:
                header += ["true", "predicted"]
            w.writerow(header)
            for j, pid in enumerate(ids):
                row = [csv_safe(pid), *[f"{v:.6f}" for v in probs[j]]]
                if len(header) > len(classes) + 1:
                    true = int(labels[j]) if labels.ndim == 1 else int(np.argmax(labels[j]))
                    row += [csv_safe(classes[true]), csv_safe(classes[int(np.argmax(probs[j]))])]
                w.writerow(row)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
                from .models.metrics import classification_metrics

                _, y, p = _predict_sequence(self.model, seq, keys)
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

        from .models.saving import save_model_atomic

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
        raise _folder_error(exc, run_dir, "the run folder") from None

    spec = _load_spec(spec)
    try:
        return _train_into(
            run_dir, manifest, spec, t0=t0, epochs=epochs, batch_size=batch_size, seed=seed, fusion=fusion,
            modalities=modalities, cache_dir=cache_dir, learning_rate=learning_rate, patience=patience,
            monitor=monitor, width=width, depth=depth, embed_dim=embed_dim, dropout=dropout,
            modality_dropout=modality_dropout, backbone=backbone, norm=norm, stem_stride=stem_stride,
            pooling=pooling, augment=augment, class_balance=class_balance, on_missing=on_missing,
            on_corrupt=on_corrupt, data_root=data_root, deterministic=deterministic, progress=progress,
        )
    except BaseException as exc:
        _mark_failed(run_dir, exc, remove=created or not held_files, remove_folder=created)
        if isinstance(exc, OSError) and not isinstance(exc, MedmultiError):
            raise _folder_error(exc, run_dir, "the run folder") from None
        raise


def _folder_error(exc: OSError, path: Path, what: str) -> RunFolderError:
    reason = "no space left on the device" if exc.errno == errno.ENOSPC else (
        os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    err = RunFolderError(f"cannot write {what}: {reason}", path=path,
                         hint="choose a writable out folder with free space", cli_hint="choose a writable --out "
                         "folder with free space")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


def _mark_failed(run_dir: Path, exc: BaseException, *, remove: bool, remove_folder: bool) -> None:
    """Leave no half-written run: remove what this run wrote into a folder that held nothing
    before; over an earlier run (``overwrite``), mark the run card failed so that evaluate and
    predict refuse the folder instead of mixing two runs."""
    try:
        if remove:
            if remove_folder:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for child in run_dir.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            return
        error = {"type": type(exc).__name__,
                 "message": exc.message if isinstance(exc, MedmultiError) else
                 ("interrupted" if isinstance(exc, KeyboardInterrupt) else "unexpected error")}
        _write_json(run_dir / RUN_CARD, {"format": 1, "status": "failed", "error": error})
    except OSError:  # a read-only or full disk: the original error is the one to report
        log.debug("could not clean up the failed run folder", exc_info=True)


def _auc_defined(seq: Any, spec: StudySpec) -> bool:
    """Whether a split's labels define a ROC AUC (both classes present for some class)."""
    from .models.metrics import classification_metrics

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


def _train_into(run_dir: Path, manifest: Any, spec: StudySpec, *, t0: float, epochs: int, batch_size: int,
                seed: int, fusion: str, modalities: Sequence[str] | None, cache_dir: Any, learning_rate: float,
                patience: int, monitor: str, width: int, depth: int, embed_dim: int, dropout: float,
                modality_dropout: float, backbone: str | None, norm: str, stem_stride: Any, pooling: str,
                augment: bool, class_balance: bool, on_missing: str, on_corrupt: str, data_root: Any,
                deterministic: bool, progress: bool) -> TrainResult:
    import keras

    from .models import build_fusion_model
    from .models.metrics import classification_metrics
    from .models.plots import plot_confusion_roc, plot_history
    from .models.saving import load_fusion_model, save_model_atomic

    names = _select_names(spec, modalities)
    options = {"augment": augment, "class_balance": class_balance, "on_missing": on_missing, "on_corrupt": on_corrupt}
    man = _load_manifest(manifest, spec, data_root, options)
    _set_determinism(seed, deterministic)

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
    if monitor == "val_auc" and "val" in seqs and not _auc_defined(seqs["val"], spec):
        raise ManifestError("the 'val' split holds one class only, so its ROC AUC (monitor 'val_auc') is undefined",
                            path=getattr(man, "path", None),
                            hint="put patients of every class in split=val, or use monitor='val_loss'",
                            cli_hint="put patients of every class in split=val, or use --monitor val_loss")
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
        _BestCheckpoint(model_path, monitor=watch, mode=mode),
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
        "status": "complete",
        "model": model.name,
        "modalities": names,
        "optional_modalities": optional,
        "input_keys": keys,
        "spec": spec.to_dict(),
        "manifest": {"path": _relative_to_run(run_dir, man_path),
                     "sha256": _sha256(man_path) if man_path.is_file() else None},
        "cache_dir": None if cache_dir is None else _relative_to_run(run_dir, Path(cache_dir)),
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
        "excluded": {s: _exclusions(q) for s, q in seqs.items()},
        "best_epoch": best_epoch,
        "seconds": round(seconds, 2),
    }
    _write_json(run_dir / RUN_CARD, card)
    return TrainResult(run_dir=run_dir, metrics=results.get("test", {}), val_metrics=results.get("val", {}),
                       history=history, best_epoch=best_epoch, seconds=seconds, model_path=model_path, counts=counts,
                       excluded=card["excluded"])


# -- evaluate / predict --------------------------------------------------------------------
def _open_run(run_dir: str | PathLike[str]) -> tuple[Path, dict[str, Any], StudySpec, Any]:
    """Read a run folder: its card (checked), its spec and its model (custom layers registered).

    Nothing in the card is trusted: a card from another machine or a colleague is read
    as data, its paths are resolved against the run folder, and any defect is one
    :class:`~medmulti.errors.RunFolderError` naming the folder.
    """
    from .models.saving import load_fusion_model

    run = Path(run_dir)
    card_path = run / RUN_CARD
    if not run.is_dir():
        raise RunFolderError("the run folder does not exist", path=run,
                             hint="pass the folder `medmulti train` wrote (its out folder)",
                             cli_hint="pass the --out folder of `medmulti train`")
    if not card_path.is_file():
        raise RunFolderError("not a medmulti run folder (no run_card.json)", path=card_path,
                             hint="pass the folder `medmulti train` wrote (its out folder)",
                             cli_hint="pass the --out folder of `medmulti train`")
    try:
        if card_path.stat().st_size > MAX_CARD_BYTES:
            raise RunFolderError(f"the run card is larger than {MAX_CARD_BYTES} bytes", path=card_path)
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise RunFolderError("the run card is not valid JSON", path=card_path) from None
    except OSError as exc:
        raise RunFolderError(f"the run card cannot be read ({os.strerror(exc.errno or 0)})", path=card_path) from None
    if not isinstance(card, dict):
        raise RunFolderError("the run card is not a JSON object", path=card_path)
    if card.get("status") == "failed":
        raise RunFolderError("this run's training failed; it holds no usable model", path=card_path,
                             hint="train again into this folder with overwrite=True",
                             cli_hint="train again into this folder with --overwrite")
    keys = card.get("input_keys")
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)
            and isinstance(card.get("spec"), dict)):
        raise RunFolderError("the run card lacks its spec or input names", path=card_path,
                             hint="the folder was not written by `medmulti train`, or was edited")
    spec = StudySpec.from_dict(card["spec"])
    model = load_fusion_model(run / MODEL_FILE, run_dir=run)
    return run, card, spec, model


#: A run card larger than this is refused (a real one is a few kB).
MAX_CARD_BYTES = 16 * 1024 * 1024


def _card_path(run: Path, value: Any) -> Path | None:
    """A path stored in a run card: relative to the run folder (absolute in older cards)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    path = Path(value)
    return path if path.is_absolute() else run / path


def _relative_to_run(run: Path, path: Path) -> str:
    """How a run card stores ``path``: relative to the run folder when on the same drive."""
    try:
        return os.path.relpath(path.resolve(), run.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def _run_cache(run: Path, card: Mapping[str, Any], cache_dir: Any) -> Any:
    """The cache evaluate/predict use: the user's ``cache_dir``, else the run card's only when
    it lies inside the run folder (a card names no place outside the run for medmulti to write)."""
    if cache_dir is not None:
        return cache_dir
    path = _card_path(run, card.get("cache_dir"))
    if path is None:
        return None
    real, inside = os.path.realpath(path), os.path.realpath(run)
    if os.path.commonpath([real, inside]) == inside and os.path.isdir(real):
        return real
    log.info("not using the cache the run card names outside the run folder; pass cache_dir (--cache) to use it")
    return None


def _run_manifest(run: Path, card: Mapping[str, Any], manifest: Any, spec: StudySpec, data_root: Any,
                  options: Mapping[str, Any]) -> Any:
    recorded = card.get("manifest") if isinstance(card.get("manifest"), dict) else {}
    recorded_path = _card_path(run, recorded.get("path"))
    if manifest is None:
        if recorded_path is None:
            raise RunFolderError("the run card names no manifest", path=run / RUN_CARD,
                                 hint="pass the manifest explicitly")
        manifest = recorded_path
    man = _load_manifest(manifest, spec, data_root, options)
    want = recorded.get("sha256")
    path = Path(man.path)
    if (want and recorded_path is not None and path.is_file() and path.resolve() == recorded_path.resolve()
            and _sha256(path) != want):
        log.warning("the manifest changed since training (sha256 differs from the run card)")
    return man


def _policies(card: Mapping[str, Any], on_missing: str | None, on_corrupt: str | None) -> dict[str, Any]:
    options = dict(card.get("options", {})) if isinstance(card.get("options"), dict) else {}
    if on_missing is not None:
        options["on_missing"] = on_missing
    if on_corrupt is not None:
        options["on_corrupt"] = on_corrupt
    return options


def evaluate(
    run_dir: str | PathLike[str],
    manifest: Any = None,
    *,
    split: str = "test",
    cache_dir: str | PathLike[str] | None = None,
    batch_size: int = 8,
    data_root: str | PathLike[str] | None = None,
    on_missing: str | None = None,
    on_corrupt: str | None = None,
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
        Preprocessing cache (default: the one the run trained with, when it lies
        inside the run folder; a run card never makes medmulti write elsewhere).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        Policies for missing / unreadable inputs (default: the run's, from its card);
        see :class:`~medmulti.data.sequence.PatientSequence`.
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
    RunFolderError
        ``run_dir`` is not a run folder, its training failed, its model does not
        load, or (``write=True``) it cannot be written.
    MedmultiError
        Data problems, typed.
    """
    from .models.metrics import classification_metrics
    from .models.plots import plot_confusion_roc

    run, card, spec, model = _open_run(run_dir)
    options = _policies(card, on_missing, on_corrupt)
    man = _run_manifest(run, card, manifest, spec, data_root, options)
    if not man.split(split):
        raise ManifestError(f"the manifest has no {split!r} rows", path=getattr(man, "path", None))
    seq = _make_sequence(man, spec, split, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                         cache_dir=_run_cache(run, card, cache_dir), progress=progress)
    ids, y, p = _predict_sequence(model, seq, card["input_keys"], progress)
    result = classification_metrics(y, p, spec.labels.classes, multi_label=spec.labels.multi_label)
    if write:
        try:
            _write_json(run / f"evaluation_{split}.json", result)
            _write_predictions(run / f"predictions_{split}.csv", ids, p, spec.labels.classes, y, spec)
            plot_confusion_roc(y, p, spec.labels.classes, run / f"confusion_roc_{split}.png",
                               multi_label=spec.labels.multi_label, title=f"{card.get('model', 'model')}: {split}")
        except OSError as exc:
            err = _folder_error(exc, run, "the evaluation into the run folder")
            err.hint, err.cli_hint = "pass write=False to score without writing", "add --no-write to score without writing"
            raise err from None
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
    on_missing: str | None = None,
    on_corrupt: str | None = None,
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
        Preprocessing cache (default: the one the run trained with, when it lies
        inside the run folder; a run card never makes medmulti write elsewhere).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        Policies for missing / unreadable inputs (default: the run's, from its card);
        see :class:`~medmulti.data.sequence.PatientSequence`.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The CSV written.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a run folder, its training failed, its model does not
        load, or (``write=True``) it cannot be written.
    MedmultiError
        Data problems, typed.
    """
    run, card, spec, model = _open_run(run_dir)
    options = _policies(card, on_missing, on_corrupt)
    man = _run_manifest(run, card, manifest, spec, data_root, options)
    wanted = list(splits) if splits is not None else [s for s in ("train", "val", "test") if man.split(s)]
    all_ids: list[str] = []
    all_p = []
    for split in wanted:
        if not man.split(split):
            continue
        seq = _make_sequence(man, spec, split, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                             cache_dir=_run_cache(run, card, cache_dir),
                             progress=progress)
        ids, _, p = _predict_sequence(model, seq, card["input_keys"], progress)
        all_ids += ids
        all_p.append(p)
    if not all_ids:
        raise ManifestError(f"no rows to predict in splits {wanted}", path=getattr(man, "path", None))
    path = Path(out) if out is not None else run / "predictions.csv"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_predictions(path, all_ids, np.concatenate(all_p), spec.labels.classes)
    except OSError as exc:
        raise _folder_error(exc, path, "the predictions") from None
    return path
