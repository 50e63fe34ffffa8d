"""Train a fusion model on a manifest and write a run folder (see :mod:`medmulti.training`)."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.cache_fill import preprocess_manifest
from ..data.tfdata import as_tf_dataset, typed_errors
from ..errors import ManifestError, MedmultiError, RunFolderError, SpecError
from ..manifest.schema import parse_fold_cell
from ..manifest.split import assign_splits
from ..models import ModelOptions, build_fusion_model
from ..models.metrics import classification_metrics, mean_and_sd
from ..models.plots import plot_confusion_roc, plot_history
from ..models.saving import load_fusion_model, save_model_atomic
from ..spec import StudySpec, present_input_name
from .batches import (
    admit_splits,
    keys_for,
    load_spec,
    make_sequence,
    open_manifest,
    predict_sequence,
    write_predictions,
)
from .devices import check_replica_batches, plan_devices, replica_devices, synchronize_batch_norm
from .options import LR_SCHEDULES, MONITORS, DataOptions, FitOptions, resolve_train_options
from .run_folder import (
    CV_SUMMARY,
    MODEL_FILE,
    RUN_CARD,
    folder_error,
    mark_failed,
    relative_to_run,
    sha256_file,
    versions,
    write_json,
)

__all__ = ["TrainResult", "CVResult", "train", "MONITORS", "LR_SCHEDULES", "BACKUP_DIR", "TENSORBOARD_DIR",
           "CV_SUMMARY"]

#: the run folder's subfolder holding the last completed epoch while training runs
BACKUP_DIR = "backup"
#: the run folder's subfolder for TensorBoard logs (``tensorboard=True``)
TENSORBOARD_DIR = "tensorboard"

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


@dataclass
class CVResult:
    """What :func:`train` returns with ``cv=K``.

    Attributes
    ----------
    run_dir : Path
        The cross-validation run folder (``fold-0/`` ... ``fold-{K-1}/``, ``cv_summary.json``).
    folds : list of TrainResult
        Per fold: its ``val_metrics`` are the held-out fold's, its ``metrics`` the
        ``test`` split's (empty without one).
    summary : dict
        What ``cv_summary.json`` holds: ``folds`` (per fold: ``fold``, ``run_dir``,
        ``val``, ``test``, ``best_epoch``, ``patients``), ``mean`` and ``std`` (per split,
        metric name -> value; ``std`` with ``ddof=1``), ``fold_source`` (``"manifest"`` or
        ``"assigned"``), ``assignment`` (patient key -> fold).
    seconds : float
        Wall time of the whole call.
    """

    run_dir: Path
    folds: list[TrainResult]
    summary: dict[str, Any]
    seconds: float


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


def _fill_cache(man: Any, spec: StudySpec, seqs: Mapping[str, Any], progress: bool, executor: Any = "local",
                scheduler: str | None = None) -> None:
    """Preprocess every served patient into the cache before the first epoch, with all
    cores (a cold epoch would preprocess inside the batches, in threads)."""
    import dataclasses

    served = {pid for seq in seqs.values() for pid in seq.patient_ids}
    rows = [r for r in man.rows if r.key in served]
    workers = None if len(rows) >= PARALLEL_FILL_MIN else 1
    summary = preprocess_manifest(dataclasses.replace(man, rows=rows), spec, seqs["train"].cache,
                                  workers=workers, progress=progress, executor=executor, scheduler=scheduler)
    faults = summary.problems()
    for seq in seqs.values():  # the policies hold here too: skip, zero, or raise the typed error
        seq.apply_faults(faults)
    if summary.computed:
        log.info("filled the cache before training: %s", summary.summary().splitlines()[0])


def _fit_dataset(seq: Any, keys: Sequence[str], *, epochs: int | None = None,
                 first_epoch: int | None = None) -> Any:
    """The sequence as a ``tf.data`` dataset of the model's inputs only (as
    :func:`~medmulti.training.batches.select_inputs`).

    Parameters
    ----------
    seq : PatientSequence
        The split's sequence.
    keys : sequence of str
        The model's input names; a ``<name>_present`` input the sequence does not
        serve is all ones.
    epochs, first_epoch : int, optional
        As :func:`~medmulti.data.as_tf_dataset`. For training, every epoch of the run in
        one pass, from a fixed epoch: ``model.fit(..., steps_per_epoch=len(seq))`` then
        keeps one iterator for the whole run, so reading goes on across epoch
        boundaries instead of draining and restarting at each (``benchmarks/RESULTS.md``,
        "Feeding"). Default: one epoch per pass (validation).

    Returns
    -------
    tf.data.Dataset
        ``(inputs, labels)`` or ``(inputs, labels, weights)``, as the sequence's
        batches; with ``epochs``, of unknown cardinality.
    """
    import tensorflow as tf

    ds = as_tf_dataset(seq, epochs=epochs, first_epoch=first_epoch)
    served = set(ds.element_spec[0])
    ones = [k for k in keys if k not in served and k.endswith(present_input_name(""))]
    if set(keys) != served:
        def pick(inputs: dict[str, Any], *rest: Any) -> tuple[Any, ...]:
            n = tf.shape(next(iter(inputs.values())))[0]
            return ({k: tf.ones((n, 1), tf.float32) if k in ones else inputs[k] for k in keys}, *rest)

        ds = ds.map(pick)
    if epochs is not None:
        # Unknown cardinality: with a known one, Keras opens a new iterator once the run has
        # read every element, which would read batches of an epoch no one trains on.
        ds = ds.filter(lambda *_: True)
    return ds


class _SequenceEpochs:
    """Keras callback advancing the training sequence at each epoch's end (``seq.on_epoch_end()``),
    as Keras does for a ``PyDataset``: after training, ``seq.epoch`` is where the ``PyDataset``
    feed left it (one more than the epochs run, see ``_train_into``)."""

    def __new__(cls, seq: Any):
        import keras

        class SequenceEpochs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                seq.on_epoch_end()

        return SequenceEpochs()


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
    ``prior``: the watched values of the epochs a resumed run already has.
    """

    def __new__(cls, path: Path, *, monitor: str, mode: str, prior: Sequence[float] = ()):
        import keras

        better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
        finite = [float(v) for v in prior if np.isfinite(v)]

        class BestCheckpoint(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.best = (max if mode == "max" else min)(finite, default=-np.inf if mode == "max" else np.inf)

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                value = (logs or {}).get(monitor)
                if value is None or not np.isfinite(float(value)):
                    return
                value = float(value)
                if better(value, self.best):
                    self.best = value
                    save_model_atomic(self.model, path)

        return BestCheckpoint()


class _EarlyStopping:
    """``keras.callbacks.EarlyStopping`` that, in a resumed run, starts from the state the
    interrupted run had reached (replaying the watched values of its epochs)."""

    def __new__(cls, *, monitor: str, mode: str, patience: int, prior: Sequence[float] = ()):
        import keras

        class EarlyStopping(keras.callbacks.EarlyStopping):
            def on_train_begin(self, logs: dict | None = None) -> None:
                super().on_train_begin(logs)
                for value in prior:  # what on_epoch_end did for each of those epochs
                    self.wait += 1
                    if self._is_improvement(value, self.best):
                        self.best, self.wait = value, 0

        return EarlyStopping(monitor=monitor, mode=mode, patience=patience, verbose=0)


def _lr_callback(fit_opts: FitOptions, *, monitor: str, mode: str) -> Any:
    """The callback of ``fit_opts.lr_schedule`` (``None`` for ``"constant"``)."""
    import keras

    if fit_opts.lr_schedule == "cosine":
        base, epochs = float(fit_opts.learning_rate), fit_opts.epochs
        return keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
    if fit_opts.lr_schedule == "plateau":
        return keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5,
                                                 patience=max(1, fit_opts.patience // 2) if fit_opts.patience else 2,
                                                 verbose=0)
    return None


# -- backup and resume ---------------------------------------------------------------------
def backup_epoch(run_dir: Path) -> int | None:
    """The number of epochs the backup in ``run_dir`` holds, or ``None`` when it holds none.

    A backup is ``RUN/backup/epoch-N/`` (weights with the optimizer state, and
    ``training_metadata.json``), renamed into place whole, so any one found is complete.
    """
    best: int | None = None
    folder = run_dir / BACKUP_DIR
    if not folder.is_dir():
        return None
    for child in folder.iterdir():
        name = child.name
        if name.startswith("epoch-") and name[6:].isdigit() and (child / "training_metadata.json").is_file():
            best = max(best or 0, int(name[6:]))
    return best


class _Backup:
    """``keras.callbacks.BackupAndRestore`` into ``RUN/backup``, one folder per backup.

    Keras writes the weights and then the epoch number in place, so a kill between the
    two would resume from the wrong epoch. Here each backup is written into a temporary
    folder, flushed to disk and renamed to ``epoch-N`` (atomic), then the older one is
    removed; a restore reads the newest ``epoch-N``. Keras deletes the backup when
    training completes. The random-number states of the model's layers (dropout,
    modality dropout: ``model.variables`` that are not weights) are backed up too
    (``seeds.npz``), so a resumed run draws what the uninterrupted run would have.
    """

    def __new__(cls, run_dir: Path):
        import keras

        folder = run_dir / BACKUP_DIR

        class Backup(keras.callbacks.BackupAndRestore):
            def __init__(self) -> None:
                super().__init__(str(folder), save_freq="epoch", delete_checkpoint=True)
                epoch = backup_epoch(run_dir)
                self._use(folder / (f"epoch-{epoch}" if epoch is not None else "none"))

            def _seed_states(self) -> list[Any]:
                weights = {id(v) for v in self.model.weights}
                return [v for v in self.model.variables if id(v) not in weights]

            def on_train_begin(self, logs: dict | None = None) -> None:
                super().on_train_begin(logs)
                seeds = Path(self._weights_path).parent / "seeds.npz"
                if seeds.is_file():
                    with np.load(seeds, allow_pickle=False) as saved:
                        for i, v in enumerate(self._seed_states()):
                            v.assign(saved[f"s{i}"])

            def _use(self, where: Path) -> None:
                self._weights_path = str(where / "latest.weights.h5")
                self._training_metadata_path = str(where / "training_metadata.json")
                self._prev_weights_path = str(where / "none.weights.h5")  # never a fallback to a stale file

            def _save_model(self) -> None:
                epoch = int(self._current_epoch)
                final, tmp = folder / f"epoch-{epoch}", folder / f".epoch-{epoch}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                self.model.save_weights(str(tmp / "latest.weights.h5"), overwrite=True)
                np.savez(tmp / "seeds.npz", **{f"s{i}": np.asarray(v) for i, v in enumerate(self._seed_states())})
                write_json(tmp / "training_metadata.json", {"epoch": epoch, "batch": self._last_batch_seen})
                for name in ("latest.weights.h5", "seeds.npz", "training_metadata.json"):
                    with open(tmp / name, "rb") as fh:
                        os.fsync(fh.fileno())
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
                for child in folder.iterdir():
                    if child.name.startswith("epoch-") and child != final:
                        shutil.rmtree(child, ignore_errors=True)
                self._use(final)

        return Backup()


def _options_record(model_opts: ModelOptions, fit_opts: FitOptions, data_opts: DataOptions, names: Sequence[str],
                    fold: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (JSON-normalised)."""
    record = {"model": asdict(model_opts), "fit": asdict(fit_opts), "data": data_opts.sequence_options(),
              "modalities": list(names), "fold": dict(fold) if fold else None}
    return json.loads(json.dumps(record, default=str))


def _check_resume_options(run_dir: Path, record: dict[str, Any]) -> None:
    path = run_dir / BACKUP_DIR / "options.json"
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"the backup in {str(run_dir)!r} does not record its options; train again with "
                         "overwrite=True") from None
    changed = sorted(f"{part}.{key}" for part in record if isinstance(record[part], dict)
                     for key in set(record[part]) | set((before.get(part) or {}))
                     if record[part].get(key) != (before.get(part) or {}).get(key))
    changed += [part for part in record if not isinstance(record[part], dict) and record[part] != before.get(part)]
    if changed:
        raise ValueError(f"resume with the options of the interrupted run; these differ: {', '.join(changed)}")


def _card_status(run_dir: Path) -> str | None:
    try:
        card = json.loads((run_dir / RUN_CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card.get("status") if isinstance(card, dict) else None


def _keep_epochs(path: Path, epochs: int) -> None:
    """Cut ``history.csv`` back to the epochs the backup holds (a kill may fall between the
    CSV row and the backup)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        lines = fh.read().splitlines(keepends=True)
    if len(lines) > epochs + 1:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.writelines(lines[:epochs + 1])
        os.replace(tmp, path)


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
    resume: bool = False,
    **keywords: Any,
) -> TrainResult | CVResult:
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
        Epochs, batch size, learning rate and its schedule, early stopping (``patience``,
        ``monitor``), seed, determinism, cross-validation folds (``cv``), TensorBoard
        logs; default ``FitOptions()``.
    data : DataOptions, optional
        Cache folder, modalities, augmentation, class balance, ``on_missing`` /
        ``on_corrupt`` policies, data root; default ``DataOptions()``.
    progress : bool
        Show Keras's progress bar and medmulti's tqdm bars.
    overwrite : bool
        Allow a non-empty ``out``: train again from scratch (an earlier run's backup is
        discarded).
    resume : bool
        Continue the interrupted run in ``out`` from the last epoch its backup holds
        (``RUN/backup``), with the same options; with ``cv``, completed folds are kept and
        the others resumed or trained. Not with ``overwrite``.
    **keywords
        Any field of the three records as a keyword (``epochs=3``, ``width=4``,
        ``cache_dir="cache"``, ``modalities=["ct"]``, ...); it replaces that field.

    Returns
    -------
    TrainResult or CVResult
        Test (and validation) metrics, history, best epoch, timings; with ``cv`` a
        :class:`CVResult` (one ``TrainResult`` per fold and their summary).

    Raises
    ------
    MedmultiError
        Data problems (typed, naming patient / modality / file), a missing ``train`` split.
    SpecError
        Unknown ``modalities``.
    ValueError
        Bad option values, a non-empty ``out`` without ``overwrite``, ``resume`` with
        ``overwrite``, or nothing to resume (no backup, or a complete run).
    TypeError
        A keyword that is not an option, or an option record of the wrong type.

    Notes
    -----
    The run folder while and after training (the rules ``docs/models.md`` states):

    - Every completed epoch is backed up in ``RUN/backup`` (weights, optimizer state,
      epoch), which is removed when training completes.
    - A run that fails or is interrupted before its first epoch completes leaves nothing:
      what it wrote into a new or empty folder is removed; over an earlier run
      (``overwrite``) the card says ``"status": "failed"``.
    - A run that fails or is interrupted later keeps its folder and backup; the card says
      ``"status": "failed"`` and ``"resumable": true`` (a killed process writes no card).
      ``resume=True`` continues it; ``overwrite=True`` starts again from scratch.

    Cross-validation (``cv=K``): fold ``k`` trains into ``RUN/fold-k/`` (a complete run
    folder) on the other folds, with fold ``k`` as its ``val`` split (reported as the
    fold's result) and the manifest's ``test`` rows as its ``test`` split. Folds come
    from the manifest's ``fold`` column, else they are assigned over the non-test rows
    as :func:`~medmulti.manifest.split.assign_splits` does (by patient, stratified by
    label, ``seed``). ``RUN/cv_summary.json`` holds each fold's metrics and, per
    metric, their mean and standard deviation (``ddof=1``).

    Examples
    --------
    These two calls train the same model the same way::

        train(manifest, spec, "runs/a", model=ModelOptions(width=4), fit=FitOptions(epochs=2),
              data=DataOptions(cache_dir="cache"))
        train(manifest, spec, "runs/b", width=4, epochs=2, cache_dir="cache")
    """
    t0 = time.perf_counter()
    model, fit, data = resolve_train_options(model, fit, data, **keywords)
    if resume and overwrite:
        raise ValueError("resume continues the run in out; overwrite starts it again: choose one")
    if fit.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("tensorboard=True needs the tensorboard package (pip install tensorboard), which "
                         "TensorFlow's summaries use")
    if fit.strategy != "default":  # a batch the replicas cannot share is refused before any data is read
        check_replica_batches({}, batch_size=fit.batch_size, replicas=len(replica_devices(fit.strategy)))
    spec = load_spec(spec)
    if fit.cv:
        return _train_folds(Path(out), manifest, spec, t0=t0, model_opts=model, fit_opts=fit, data_opts=data,
                            progress=progress, overwrite=overwrite, resume=resume)
    return _train_run(Path(out), manifest, spec, t0=t0, model_opts=model, fit_opts=fit, data_opts=data,
                      progress=progress, overwrite=overwrite, resume=resume)


def _open_run_folder(run_dir: Path, *, overwrite: bool, resume: bool, what: str = "run folder") -> tuple[bool, bool]:
    """Check and create the run folder; return ``(created, held_files)``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError("the run folder path is a file", path=run_dir, hint="choose another out folder",
                             cli_hint="choose another --out")
    held_files = run_dir.is_dir() and any(run_dir.iterdir())
    if resume and not held_files:
        raise ValueError(f"nothing to resume: {what} {str(run_dir)!r} is empty or missing")
    if held_files and not (overwrite or resume):
        again = " or resume=True (its last run was interrupted)" if backup_epoch(run_dir) is not None else ""
        raise ValueError(f"{what} {str(run_dir)!r} is not empty; choose another out folder or pass "
                         f"overwrite=True{again}")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=run_dir)
        probe.close()
    except OSError as exc:
        raise folder_error(exc, run_dir, "the run folder") from None
    return created, held_files


def _train_run(run_dir: Path, manifest: Any, spec: StudySpec, *, t0: float, model_opts: ModelOptions,
               fit_opts: FitOptions, data_opts: DataOptions, progress: bool, overwrite: bool, resume: bool,
               fold: Mapping[str, Any] | None = None) -> TrainResult:
    """One run into one folder, with the failure rules of :func:`train`'s Notes."""
    created, held_files = _open_run_folder(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        if _card_status(run_dir) == "complete":
            raise ValueError(f"the run in {str(run_dir)!r} is complete: nothing to resume")
        if backup_epoch(run_dir) is None:
            raise ValueError(f"nothing to resume: {str(run_dir)!r} holds no backup (the run stopped before its "
                             "first epoch ended); train again with overwrite=True")
    elif overwrite:
        shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)  # never resume from an earlier run by accident
    try:
        return _train_into(run_dir, manifest, spec, t0=t0, model_opts=model_opts, fit_opts=fit_opts,
                           data_opts=data_opts, progress=progress, resume=resume, fold=fold)
    except BaseException as exc:
        if backup_epoch(run_dir) is not None:  # an epoch is backed up: keep it for resume=True
            mark_failed(run_dir, exc, remove=False, remove_folder=False)
            _note_resumable(run_dir)
        else:
            mark_failed(run_dir, exc, remove=created or not held_files, remove_folder=created)
        if isinstance(exc, OSError) and not isinstance(exc, MedmultiError):
            raise folder_error(exc, run_dir, "the run folder") from None
        raise


def _note_resumable(run_dir: Path) -> None:
    try:
        card = json.loads((run_dir / RUN_CARD).read_text(encoding="utf-8"))
        write_json(run_dir / RUN_CARD, {**card, "resumable": True, "backup_epochs": backup_epoch(run_dir)})
    except (OSError, ValueError):
        log.debug("could not mark the failed run resumable", exc_info=True)


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
                fit_opts: FitOptions, data_opts: DataOptions, progress: bool, resume: bool = False,
                fold: Mapping[str, Any] | None = None) -> TrainResult:
    import keras

    names = _select_names(spec, data_opts.modalities)
    options = data_opts.sequence_options()
    man = open_manifest(manifest, spec, data_opts.data_root, options)
    _set_determinism(fit_opts.seed, fit_opts.deterministic)
    cache_dir, monitor = data_opts.cache_dir, fit_opts.monitor
    record = _options_record(model_opts, fit_opts, data_opts, names, fold)
    if resume:
        _check_resume_options(run_dir, record)

    split_rows = {s: len(man.split(s)) for s in ("train", "val", "test")}
    if not split_rows["train"]:
        raise ManifestError("the manifest has no 'train' rows", path=getattr(man, "path", None),
                            hint="give some rows split=train")
    where = {"executor": data_opts.executor, "scheduler": data_opts.scheduler}
    admission = admit_splits(man, spec, [s for s, n in split_rows.items() if n], options=options, progress=progress,
                             **where)
    common = dict(options=options, batch_size=fit_opts.batch_size, seed=fit_opts.seed, cache_dir=cache_dir,
                  progress=progress, admission=admission)
    seqs = {"train": make_sequence(man, spec, "train", train=True, **common)}
    for split in ("val", "test"):
        if split_rows[split]:
            seqs[split] = make_sequence(man, spec, split, **common)
    if cache_dir is not None:
        _fill_cache(man, spec, seqs, progress, **where)
    if monitor == "val_auc" and "val" in seqs and not _auc_defined(seqs["val"], spec):
        raise ManifestError("the 'val' split holds one class only, so its ROC AUC (monitor 'val_auc') is undefined",
                            path=getattr(man, "path", None),
                            hint="put patients of every class in split=val, or use monitor='val_loss'",
                            cli_hint="put patients of every class in split=val, or use --monitor val_loss")
    optional = [n for n in seqs["train"].optional_modalities if n in names]
    keys = keys_for(names, optional)
    shapes = seqs["train"].element_shapes()

    plan = plan_devices(fit_opts)  # strategy, replicas, dtype policy, XLA (see medmulti.training.devices)
    check_replica_batches({s: seqs[s].num_patients for s in ("train", "val") if s in seqs},
                          batch_size=fit_opts.batch_size, replicas=plan.replicas)
    with plan.scope():  # variables and optimizer state placed by the strategy
        model = build_fusion_model(
            spec, modalities=names, optional_modalities=optional, options=model_opts, seed=fit_opts.seed,
            input_shapes={n: shapes[n] for n in names}, name="medmulti_" + ("fusion" if len(names) > 1 else names[0]),
            dtype_policy=plan.dtype_policy,
        )
        if plan.replicas > 1:  # normalise with the global batch's statistics, as one device does
            synchronize_batch_norm(model)
        loss, metrics = _loss_and_metrics(spec)
        model.compile(optimizer=keras.optimizers.Adam(fit_opts.learning_rate), loss=loss, metrics=metrics,
                      jit_compile=plan.jit_compile)
    if plan.jit_compile is True and not model.jit_compile:
        log.warning("Keras compiles the model without XLA (jit_compile): op determinism was turned on earlier "
                    "in this process, or a layer does not support XLA")

    has_val = "val" in seqs
    watch = monitor if has_val or monitor == "loss" else "loss"
    if watch != monitor:
        log.warning("no 'val' split: checkpointing on the training loss instead of %s", monitor)
    mode = "max" if watch.endswith("auc") else "min"
    model_path, history_path = run_dir / MODEL_FILE, run_dir / "history.csv"
    done = backup_epoch(run_dir) if resume else None
    if done is not None:  # the epochs the backup holds: history, best value, patience and shuffles resume there
        _keep_epochs(history_path, done)
        for _ in range(done):
            seqs["train"].on_epoch_end()
        log.info("resuming %s after epoch %d", run_dir, done)
    else:
        (run_dir / BACKUP_DIR).mkdir(exist_ok=True)
        write_json(run_dir / BACKUP_DIR / "options.json", record)
    prior = _history_from_csv(history_path).get(watch, []) if done else []
    # Training epoch k reads the sequence's epoch k + 1 (its shuffle and augmentation draws), as when
    # medmulti fed Keras a PyDataset, which Keras advances once before the first epoch: a seed trains as
    # it did. The dataset fixes its epochs: a second iterator (under a strategy Keras opens one to build
    # the model) serves the same ones.
    train_seq = seqs["train"]
    train_seq.on_epoch_end()
    train_data = _fit_dataset(train_seq, keys, epochs=max(1, fit_opts.epochs - (done or 0)),
                              first_epoch=train_seq.epoch)
    callbacks: list[Any] = [_SequenceEpochs(train_seq)]
    if has_val and watch == "val_auc":
        callbacks.append(_ValAUC(seqs["val"], keys, spec))
    schedule = _lr_callback(fit_opts, monitor=watch, mode=mode)
    callbacks += [schedule] if schedule is not None else []
    callbacks += [
        _BestCheckpoint(model_path, monitor=watch, mode=mode, prior=prior),
        keras.callbacks.CSVLogger(str(history_path), append=done is not None),
    ]
    if fit_opts.patience > 0:
        callbacks.append(_EarlyStopping(monitor=watch, mode=mode, patience=fit_opts.patience, prior=prior))
    if fit_opts.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / TENSORBOARD_DIR)))
    callbacks.append(_Backup(run_dir))  # last: a backed-up epoch has its history row and checkpoint

    log.info("training %s on %s (%d train patients)", model.name, names, seqs["train"].num_patients)
    with typed_errors():  # a batch's typed error, not the UnknownError TensorFlow wraps it in
        fit = model.fit(
            train_data,
            steps_per_epoch=len(train_seq),
            validation_data=_fit_dataset(seqs["val"], keys) if has_val else None,
            epochs=fit_opts.epochs,
            callbacks=callbacks,
            verbose=1 if progress else 0,
            # the sequence shuffles patients per epoch from (seed, epoch); Keras's own batch-order shuffle
            # draws from Python's global `random`, which a backup cannot restore at the right moment
            shuffle=False,
        )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    if done is not None:  # the interrupted run's epochs and these: history.csv holds them all
        history = _history_from_csv(history_path)
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)  # options.json; Keras removed the epochs
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
        "devices": plan.card(model),
        "options": _card_options(model_opts, fit_opts, data_opts, monitor=watch),
        "counts": counts,
        "excluded": {s: _exclusions(q) for s, q in seqs.items()},
        "best_epoch": best_epoch,
        "seconds": round(seconds, 2),
    }
    if done is not None:
        card["resumed_after_epoch"] = done
    if fold is not None:
        card["cv"] = dict(fold)
    write_json(run_dir / RUN_CARD, card)
    return TrainResult(run_dir=run_dir, metrics=results.get("test", {}), val_metrics=results.get("val", {}),
                       history=history, best_epoch=best_epoch, seconds=seconds, model_path=model_path, counts=counts,
                       excluded=card["excluded"])




# -- cross-validation ----------------------------------------------------------------------
def _stratum(row: Any, spec: StudySpec) -> str:
    return "|".join(row.labels.get(c, "") for c in spec.labels.manifest_columns)


def _fold_of_rows(man: Any, spec: StudySpec, folds: int, seed: int) -> tuple[list[int | None], str]:
    """Each row's fold (``None`` for ``test`` rows) and where the folds came from.

    The manifest's ``fold`` column when any row fills it (every non-test row must then
    hold one of ``0 .. folds-1``, every fold must occur, and a patient's rows share one),
    else :func:`~medmulti.manifest.split.assign_splits` over the non-test rows.
    """
    path = getattr(man, "path", None)
    rows = [r for r in man.rows if r.split != "test"]
    if not rows:
        raise ManifestError("the manifest has no rows outside the 'test' split to fold", path=path)
    if any(r.fold is not None for r in man.rows):
        of_row: dict[int, int] = {}
        patient_fold: dict[str, int] = {}
        for r in rows:
            value = parse_fold_cell(r.fold) if r.fold is not None else None
            if value is None or value >= folds:
                raise ManifestError(f"fold must be a number from 0 to {folds - 1} on every row outside the 'test' "
                                    "split", row=r.line, column="fold", patient_id=r.key, path=path,
                                    hint=f"write the folds with `medmulti split MANIFEST --folds {folds}`, or match "
                                         "cv to the manifest's folds")
            if patient_fold.setdefault(r.patient_id, value) != value:
                raise ManifestError("the patient's rows are in two folds", row=r.line, column="fold",
                                    patient_id=r.patient_id, path=path, hint="put every row of a patient in one fold")
            of_row[id(r)] = value
        missing = sorted(set(range(folds)) - set(of_row.values()))
        if missing:
            raise ManifestError(f"fold {missing[0]} has no rows (cv={folds})", column="fold", path=path,
                                hint="match cv to the number of folds in the manifest")
        return [of_row.get(id(r)) for r in man.rows], "manifest"
    assigned = iter(assign_splits([r.patient_id for r in rows], [_stratum(r, spec) for r in rows], folds=folds,
                                  seed=seed))
    return [None if r.split == "test" else next(assigned) for r in man.rows], "assigned"


def _finished_run(run_dir: Path) -> TrainResult:
    """The result of a fold that completed before a resumed cross-validation."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    card = json.loads((run_dir / RUN_CARD).read_text(encoding="utf-8"))
    return TrainResult(run_dir=run_dir, metrics=metrics.get("test", {}), val_metrics=metrics.get("val", {}),
                       history=_history_from_csv(run_dir / "history.csv"), best_epoch=int(metrics["best_epoch"]),
                       seconds=float(card.get("seconds", 0.0)), model_path=run_dir / MODEL_FILE,
                       counts=card.get("counts", {}), excluded=card.get("excluded", {}))


def _train_folds(run_dir: Path, manifest: Any, spec: StudySpec, *, t0: float, model_opts: ModelOptions,
                 fit_opts: FitOptions, data_opts: DataOptions, progress: bool, overwrite: bool,
                 resume: bool) -> CVResult:
    """K-fold cross-validation into ``RUN/fold-k/`` (see :func:`train`'s Notes)."""
    created, _ = _open_run_folder(run_dir, overwrite=overwrite, resume=resume,
                                  what="cross-validation run folder")
    if resume and (run_dir / CV_SUMMARY).is_file():
        raise ValueError(f"the cross-validation in {str(run_dir)!r} is complete: nothing to resume")
    (run_dir / CV_SUMMARY).unlink(missing_ok=True)
    try:
        man = open_manifest(manifest, spec, data_opts.data_root, data_opts.sequence_options())
        of_row, source = _fold_of_rows(man, spec, fit_opts.cv, fit_opts.seed)
        results: list[TrainResult] = []
        for k in range(fit_opts.cv):
            rows = [r if f is None else dataclasses.replace(r, split="val" if f == k else "train")
                    for r, f in zip(man.rows, of_row)]
            fold_dir = run_dir / f"fold-{k}"
            if resume and _card_status(fold_dir) == "complete":
                results.append(_finished_run(fold_dir))
                continue
            again = resume and backup_epoch(fold_dir) is not None
            log.info("cross-validation: fold %d of %d", k + 1, fit_opts.cv)
            results.append(_train_run(fold_dir, dataclasses.replace(man, rows=rows), spec, t0=time.perf_counter(),
                                      model_opts=model_opts, fit_opts=fit_opts, data_opts=data_opts,
                                      progress=progress, overwrite=not again, resume=again,
                                      fold={"fold": k, "folds": fit_opts.cv, "source": source}))
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    folds = [{"fold": k, "run_dir": f"fold-{k}", "val": r.val_metrics, "test": r.metrics, "best_epoch": r.best_epoch,
              "patients": {s: c.get("patients") for s, c in r.counts.items()}} for k, r in enumerate(results)]
    mean, std = {}, {}
    for split in ("val", "test"):
        if all(f[split] for f in folds):
            mean[split], std[split] = mean_and_sd([f[split] for f in folds])
    summary = {"format": 1, "cv": fit_opts.cv, "fold_source": source, "seed": int(fit_opts.seed),
               "monitor": fit_opts.monitor, "std_ddof": 1, "folds": folds, "mean": mean, "std": std,
               "assignment": {r.key: f for r, f in zip(man.rows, of_row) if f is not None}}
    write_json(run_dir / CV_SUMMARY, summary)
    return CVResult(run_dir=run_dir, folds=results, summary=summary, seconds=time.perf_counter() - t0)
