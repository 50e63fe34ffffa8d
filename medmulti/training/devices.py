"""Where :func:`~medmulti.training.train` runs: distribution strategy, mixed precision, XLA.

:func:`plan_devices` turns the three :class:`~medmulti.training.FitOptions` fields
(``strategy``, ``mixed_precision``, ``jit_compile``) into a :class:`DevicePlan`: the
``tf.distribute`` strategy whose scope the model is built and compiled in, the replicas
it runs, the Keras dtype policy of the branches and the ``jit_compile`` value for
``model.compile``. The run card records :meth:`DevicePlan.card`.

``"mirrored"`` is ``tf.distribute.MirroredStrategy`` on this host: one replica per GPU,
or, on a host without GPUs, one per logical CPU device (what
``tf.config.set_logical_device_configuration`` creates; the tests use two). Every batch
of the sequence is the global batch; TensorFlow splits it evenly across the replicas
and sums their gradients, so a step equals the step of one device on the same batch
(batch normalisation is synchronised across the replicas for that). Several hosts
(``MultiWorkerMirroredStrategy``) do not work with Keras 3's ``model.fit`` today: see
``docs/scaling.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DeviceError
from .options import STRATEGIES, FitOptions

__all__ = ["DevicePlan", "plan_devices", "replica_devices", "mixed_precision_policy", "check_replica_batches",
           "synchronize_batch_norm", "STRATEGIES"]

log = logging.getLogger("medmulti.training")

#: one MirroredStrategy per set of devices and process: two strategies over the same devices
#: number their collective operations alike, and a second model's synchronised batch
#: normalisation then meets the first one's (TensorFlow aborts: "Shape mismatch in the
#: collective instance")
_MIRRORED: dict[tuple[str, ...], Any] = {}


def replica_devices(strategy: str) -> tuple[str, ...]:
    """The devices a strategy runs its replicas on, on this host.

    Parameters
    ----------
    strategy : {"default", "mirrored"}
        The strategy name (:data:`~medmulti.training.options.STRATEGIES`).

    Returns
    -------
    tuple of str
        ``"default"``: the one device TensorFlow places work on (the first GPU, else
        the first CPU). ``"mirrored"``: every logical GPU, or without GPUs every
        logical CPU device (one, unless ``tf.config.set_logical_device_configuration``
        split the CPU).

    Raises
    ------
    ValueError
        An unknown strategy name.

    Notes
    -----
    Listing logical devices initialises TensorFlow's runtime: after this call the
    logical device configuration can no longer change.
    """
    import tensorflow as tf

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if strategy == "default":
        return tuple((gpus or cpus)[:1])
    return tuple(gpus or cpus)


def mixed_precision_policy(enabled: bool, *, gpu: bool | None = None) -> str:
    """The Keras dtype policy of the branches.

    Parameters
    ----------
    enabled : bool
        ``FitOptions.mixed_precision``.
    gpu : bool, optional
        Whether training runs on GPUs; ``None`` asks TensorFlow (any logical GPU).

    Returns
    -------
    str
        ``"float32"`` when not enabled; ``"mixed_float16"`` on GPU (fast on tensor cores;
        the loss is scaled so small gradients survive); ``"mixed_bfloat16"`` on CPU
        (float16 is slow on CPUs, bfloat16 needs no loss scaling).

    Examples
    --------
    >>> mixed_precision_policy(False), mixed_precision_policy(True, gpu=True), mixed_precision_policy(True, gpu=False)
    ('float32', 'mixed_float16', 'mixed_bfloat16')
    """
    if not enabled:
        return "float32"
    if gpu is None:
        import tensorflow as tf

        gpu = bool(tf.config.list_logical_devices("GPU"))
    return "mixed_float16" if gpu else "mixed_bfloat16"


@dataclass(frozen=True)
class DevicePlan:
    """Where and how a model trains (see :func:`plan_devices`).

    Attributes
    ----------
    name : str
        The strategy name (``"default"`` or ``"mirrored"``).
    strategy : tf.distribute.Strategy
        Build and compile the model inside ``strategy.scope()``.
    devices : tuple of str
        One device per replica.
    dtype_policy : str
        The branches' Keras dtype policy (``"float32"``, ``"mixed_float16"``,
        ``"mixed_bfloat16"``); the fusion and the head are float32 whatever it is.
    jit_compile : bool or str
        ``model.compile(jit_compile=...)``: ``True``, ``False`` or ``"auto"``.
    """

    name: str
    strategy: Any
    devices: tuple[str, ...]
    dtype_policy: str
    jit_compile: bool | str

    def scope(self) -> Any:
        """The context to build and compile the model in: ``strategy.scope()``, or
        nothing for ``"default"`` (Keras then sees no distribution strategy at all)."""
        import contextlib

        return contextlib.nullcontext() if self.name == "default" else self.strategy.scope()

    @property
    def replicas(self) -> int:
        """The number of replicas a step runs (``strategy.num_replicas_in_sync``)."""
        return int(self.strategy.num_replicas_in_sync)

    def card(self, model: Any = None) -> dict[str, Any]:
        """What the run card records under ``"devices"``.

        Parameters
        ----------
        model : keras.Model, optional
            The compiled model: ``jit_compile`` is then what Keras resolved (``"auto"``
            becomes ``True`` or ``False``; Keras turns XLA off where it cannot use it).

        Returns
        -------
        dict
            ``strategy``, ``replicas``, ``devices``, ``dtype_policy``, ``jit_compile``.
        """
        jit = self.jit_compile if model is None else bool(getattr(model, "jit_compile", False))
        return {"strategy": self.name, "replicas": self.replicas, "devices": list(self.devices),
                "dtype_policy": self.dtype_policy, "jit_compile": jit}


def plan_devices(fit: FitOptions) -> DevicePlan:
    """The distribution strategy, dtype policy and XLA setting of a training run.

    Parameters
    ----------
    fit : FitOptions
        Its ``strategy``, ``mixed_precision``, ``jit_compile`` and ``batch_size`` are used.

    Returns
    -------
    DevicePlan
        For ``"default"``, TensorFlow's default strategy (no ``tf.distribute``);
        for ``"mirrored"``, a ``tf.distribute.MirroredStrategy`` over
        :func:`replica_devices` (one per process, shared by every run of the process:
        the folds of a cross-validation, successive ``train`` calls).

    Raises
    ------
    DeviceError
        ``batch_size`` is not a multiple of the number of replicas.
    """
    import tensorflow as tf

    devices = replica_devices(fit.strategy)
    if fit.strategy == "mirrored":
        if len(devices) == 1:
            log.warning("strategy 'mirrored' found one device (%s): training runs one replica", devices[0])
        strategy = _MIRRORED.get(devices)
        if strategy is None:
            strategy = _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
    else:
        strategy = tf.distribute.get_strategy()
    on_gpu = any("GPU" in d.upper() for d in devices)
    plan = DevicePlan(name=fit.strategy, strategy=strategy, devices=devices,
                      dtype_policy=mixed_precision_policy(fit.mixed_precision, gpu=on_gpu),
                      jit_compile="auto" if fit.jit_compile is None else bool(fit.jit_compile))
    check_replica_batches({}, batch_size=fit.batch_size, replicas=plan.replicas)
    return plan


def check_replica_batches(patients: Mapping[str, int], *, batch_size: int, replicas: int) -> None:
    """Refuse batches that the replicas cannot share evenly.

    Every full batch has ``batch_size`` patients; a split with fewer patients than
    ``batch_size`` is one batch of that many. Each must be a multiple of ``replicas``
    (a last, shorter batch need not be: TensorFlow gives one replica fewer patients).

    Parameters
    ----------
    patients : Mapping
        Split name -> patients the sequence serves (the splits ``model.fit`` iterates:
        ``train`` and ``val``).
    batch_size : int
        Patients per batch.
    replicas : int
        Replicas of the distribution strategy.

    Raises
    ------
    DeviceError
        A batch size or a small split that is not a multiple of ``replicas``.

    Examples
    --------
    >>> check_replica_batches({"train": 30, "val": 6}, batch_size=8, replicas=2)
    >>> check_replica_batches({"train": 30}, batch_size=6, replicas=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    medmulti.errors.DeviceError: batch size 6 is not a multiple of the 4 replicas of the distribution strategy ...
    """
    if replicas <= 1:
        return
    if batch_size % replicas:
        good = batch_size + replicas - batch_size % replicas
        raise DeviceError(f"batch size {batch_size} is not a multiple of the {replicas} replicas of the distribution "
                          "strategy (each replica gets an equal share of every batch)",
                          hint=f"use batch_size={good}, or fewer devices", cli_hint=f"use --batch-size {good}, "
                          "or fewer GPUs (CUDA_VISIBLE_DEVICES)")
    for split, n in patients.items():
        if 0 < n < batch_size and n % replicas:
            raise DeviceError(f"the {split!r} split is one batch of {n} patients, not a multiple of the {replicas} "
                              "replicas of the distribution strategy",
                              hint=f"give the {split!r} split a multiple of {replicas} patients, or use "
                                   "strategy='default'",
                              cli_hint=f"give the {split!r} split a multiple of {replicas} patients, or drop "
                                       "--strategy mirrored")


def synchronize_batch_norm(model: Any) -> int:
    """Make every batch normalisation of ``model`` use the statistics of the global batch.

    Under a distribution strategy each replica otherwise normalises with the mean and
    variance of its own share of the batch, and the step differs from one device's
    (``keras.layers.BatchNormalization(synchronized=True)``, TensorFlow backend).

    Parameters
    ----------
    model : keras.Model
        A model built, not yet traced (call before ``compile``/``fit``).

    Returns
    -------
    int
        The number of layers changed. Their config then says ``synchronized: true``,
        which changes nothing outside a strategy of several replicas.
    """
    import keras

    def walk(layer: Any) -> Any:  # nested models (a keras.applications backbone) hold layers of their own
        for sub in getattr(layer, "layers", ()):
            yield sub
            yield from walk(sub)

    count = 0
    for layer in walk(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            count += 1
    return count
