"""What :func:`~medmulti.training.train` takes besides the data: three option records.

- :class:`~medmulti.models.ModelOptions` -- the architecture (``build_fusion_model``'s own);
- :class:`FitOptions` -- the optimisation: epochs, batch size, learning rate and its
  schedule, early stopping, seed, determinism, cross-validation folds, TensorBoard logs,
  and where it runs (distribution strategy, mixed precision, XLA);
- :class:`DataOptions` -- what is fed: the cache, the modalities, augmentation, class
  balance, the missing/corrupt policies, the data root.

Every field is also a keyword of ``train`` (``train(..., width=4, epochs=2)``);
:func:`resolve_train_options` maps such keywords onto the three records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from os import PathLike
from typing import Any

from ..models.options import ModelOptions, with_overrides

__all__ = ["MONITORS", "LR_SCHEDULES", "STRATEGIES", "DataOptions", "FitOptions", "resolve_train_options"]

#: quantities ``train(monitor=...)`` may watch for checkpointing and early stopping
MONITORS = ("val_loss", "val_auc", "loss")

#: learning-rate schedules ``train(lr_schedule=...)`` offers
LR_SCHEDULES = ("constant", "cosine", "plateau")

#: distribution strategies ``train(strategy=...)`` offers (see :mod:`medmulti.training.devices`)
STRATEGIES = ("default", "mirrored")


@dataclass(frozen=True)
class FitOptions:
    """How :func:`~medmulti.training.train` fits the model.

    Parameters
    ----------
    epochs : int
        Maximum number of epochs (>= 1).
    batch_size : int
        Patients per batch.
    learning_rate : float
        Adam learning rate.
    patience : int
        Epochs without improvement of ``monitor`` before stopping (0 disables early stopping).
    monitor : {"val_loss", "val_auc", "loss"}
        What picks the best checkpoint; without a ``val`` split, ``"loss"`` is used.
    seed : int
        Seeds weights, shuffling, augmentation and modality dropout.
    deterministic : bool
        Enable TensorFlow op determinism (same seed, same machine -> same run).
    lr_schedule : {"constant", "cosine", "plateau"}
        ``"cosine"``: epoch ``e`` (0-based) of ``epochs`` runs at
        ``learning_rate * (1 + cos(pi * e / epochs)) / 2``; ``"plateau"``: the rate halves
        after ``max(1, patience // 2)`` epochs (2 when ``patience`` is 0) without
        improvement of ``monitor`` (``keras.callbacks.ReduceLROnPlateau``). Both log the
        rate of each epoch as ``learning_rate`` in ``history.csv``.
    cv : int
        ``0``: one run. ``K >= 2``: K-fold cross-validation, one run folder per fold
        (see :func:`~medmulti.training.train`).
    tensorboard : bool
        Also write TensorBoard logs into ``RUN/tensorboard`` (``keras.callbacks.TensorBoard``).
    strategy : {"default", "mirrored"}
        ``"default"``: one device. ``"mirrored"``: ``tf.distribute.MirroredStrategy``, one
        replica per GPU of this host (per logical CPU device on a host without GPUs); each
        batch of ``batch_size`` patients is split evenly across the replicas, so
        ``batch_size`` must be a multiple of their number (see ``docs/scaling.md``).
    mixed_precision : bool
        Compute the branches in ``mixed_float16`` on a GPU, ``mixed_bfloat16`` on CPU
        (variables stay float32); the fusion and the diagnosis head stay float32.
    jit_compile : bool, optional
        Compile the training step with XLA (``True``), or not (``False``); ``None`` lets
        Keras decide (``"auto"``: XLA on a GPU, without a distribution strategy and with
        ``deterministic=False``; never on CPU). Keras never compiles with XLA while
        TensorFlow's op determinism is on, so ``True`` needs ``deterministic=False``; not
        with ``strategy="mirrored"``. The run card's ``devices.jit_compile`` says what
        Keras did.

    Raises
    ------
    ValueError
        An unknown ``monitor``, ``lr_schedule`` or ``strategy``, ``epochs < 1``, ``cv`` of
        1 or below 0, or ``jit_compile=True`` with ``deterministic=True`` or
        ``strategy="mirrored"``.

    Examples
    --------
    >>> FitOptions(epochs=3, seed=1).batch_size
    8
    >>> FitOptions(monitor="auc")
    Traceback (most recent call last):
    ValueError: monitor must be one of ('val_loss', 'val_auc', 'loss'), got 'auc'
    """

    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 1e-3
    patience: int = 5
    monitor: str = "val_loss"
    seed: int = 0
    deterministic: bool = True
    lr_schedule: str = "constant"
    cv: int = 0
    tensorboard: bool = False
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool | None = None

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv == 1 or self.cv < 0:
            raise ValueError(f"cv must be 0 (no cross-validation) or a number of folds >= 2, got {self.cv!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.jit_compile and self.strategy != "default":
            raise ValueError(f"jit_compile=True is not supported with strategy={self.strategy!r} (the XLA-compiled "
                             "step cannot read the other replicas' variables; Keras itself turns XLA off under "
                             "tf.distribute): leave jit_compile unset")
        if self.jit_compile and self.deterministic:
            raise ValueError("jit_compile=True needs deterministic=False: Keras does not compile with XLA while "
                             "TensorFlow's op determinism is on")


@dataclass(frozen=True)
class DataOptions:
    """What :func:`~medmulti.training.train` feeds the model, and how.

    Parameters
    ----------
    cache_dir : str or PathLike, optional
        The preprocessing cache folder (strongly recommended: without it every epoch
        preprocesses every patient again).
    augment : bool
        Random augmentation of the training batches.
    class_balance : bool
        Sample training patients so every class is seen equally often.
    on_missing : {"error", "skip", "zero"}
        What a missing modality does (see :class:`~medmulti.data.sequence.PatientSequence`).
    on_corrupt : {"error", "skip", "zero"}
        What an unreadable file does (same).
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    modalities : sequence of str, optional
        Train on these modalities only (e.g. ``["ct"]`` for a CT-only model); the data
        are read and preprocessed exactly as for the full spec. Kept as a tuple.
    executor : {"local", "dask"} or dask.distributed.Client
        Where admission's header checks and the cache fill run
        (:func:`medmulti.executor.map_patients`); training itself runs here.
    scheduler : str, optional
        A Dask scheduler address or scheduler file (with ``executor="dask"``).

    Examples
    --------
    >>> DataOptions(modalities=["ct"], on_missing="skip").sequence_options()
    {'augment': False, 'class_balance': False, 'on_missing': 'skip', 'on_corrupt': 'error'}
    """

    cache_dir: str | PathLike[str] | None = None
    augment: bool = False
    class_balance: bool = False
    on_missing: str = "error"
    on_corrupt: str = "error"
    data_root: str | PathLike[str] | None = None
    modalities: Sequence[str] | None = None
    executor: Any = "local"
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.modalities is not None and not isinstance(self.modalities, str):
            object.__setattr__(self, "modalities", tuple(self.modalities))

    def sequence_options(self) -> dict[str, Any]:
        """The options every split's :class:`~medmulti.data.sequence.PatientSequence` shares.

        Returns
        -------
        dict
            ``augment``, ``class_balance``, ``on_missing``, ``on_corrupt`` (as the run card
            records them).
        """
        return {"augment": self.augment, "class_balance": self.class_balance, "on_missing": self.on_missing,
                "on_corrupt": self.on_corrupt}


def resolve_train_options(model: ModelOptions | None = None, fit: FitOptions | None = None,
                          data: DataOptions | None = None, *, caller: str = "train",
                          **keywords: Any) -> tuple[ModelOptions, FitOptions, DataOptions]:
    """The three option records of a training run, keywords mapped onto their fields.

    Parameters
    ----------
    model, fit, data : ModelOptions, FitOptions, DataOptions, optional
        The records to start from (``None``: the defaults).
    caller : str
        The function whose keywords these are, named in errors.
    **keywords
        Any field of the three records (their names do not overlap); it replaces that
        field of its record.

    Returns
    -------
    tuple
        ``(model, fit, data)``.

    Raises
    ------
    TypeError
        A keyword that is no field of any record, or a record of the wrong type.
    ValueError
        A bad value that a record checks (``FitOptions``).

    Examples
    --------
    >>> model, fit, data = resolve_train_options(fit=FitOptions(epochs=2), width=4, cache_dir="cache")
    >>> model.width, fit.epochs, data.cache_dir
    (4, 2, 'cache')
    """
    rest = dict(keywords)

    def take(cls: type) -> dict[str, Any]:
        return {f.name: rest.pop(f.name) for f in fields(cls) if f.name in rest}

    model = with_overrides(model, ModelOptions, take(ModelOptions), caller=caller, argument="model")
    fit = with_overrides(fit, FitOptions, take(FitOptions), caller=caller, argument="fit")
    data = with_overrides(data, DataOptions, take(DataOptions), caller=caller, argument="data")
    if rest:
        raise TypeError(f"{caller}() got an unexpected keyword argument {next(iter(rest))!r}")
    return model, fit, data
