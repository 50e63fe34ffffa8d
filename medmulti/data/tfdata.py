"""``tf.data`` view of a :class:`~medmulti.data.PatientSequence`.

The dataset yields exactly the sequence's batches (same order, same arrays),
with an explicit ``element_spec``, reading batches in parallel
(``num_parallel_calls``, order kept) and prefetching. Each new iteration over
the dataset (each epoch of ``model.fit``) serves the next epoch of the sequence:
the first iteration serves the sequence's current epoch.

With ``epochs=E`` one pass serves E epochs back to back, for ``model.fit(ds,
epochs=E, steps_per_epoch=len(seq))``: Keras then keeps one iterator for the whole
run, so reading and prefetching go on across epoch boundaries. A new iterator per
epoch (the default, and every ``PyDataset``) drains the pipeline at each epoch's end
and fills it again at the next one's start; with a few dozen batches per epoch that
restart cost a quarter to a third of the epoch in ``benchmarks/feed.py``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
import threading
from typing import Any, Literal

from ..errors import MedmultiError

__all__ = ["as_tf_dataset", "element_spec", "typed_errors", "typed_error_of"]

# Typed errors raised while tf.data reads a batch. TensorFlow turns a Python
# exception inside ``tf.numpy_function`` into ``tf.errors.UnknownError`` carrying
# only its text; the error object is kept here under a token written into that
# text, so :func:`typed_errors` can raise the original again. Bounded: only the
# most recent errors are kept (they hold no header values, only paths and keys).
_KEPT = 256
_ERRORS: collections.OrderedDict[int, MedmultiError] = collections.OrderedDict()
_ERRORS_LOCK = threading.Lock()
_TOKENS = itertools.count(1)
_TOKEN_RE = re.compile(r"\[medmulti-error:(\d+)\]")


def _carry(exc: MedmultiError) -> RuntimeError:
    """Keep ``exc`` and return the exception whose text carries its token."""
    with _ERRORS_LOCK:
        token = next(_TOKENS)
        _ERRORS[token] = exc
        while len(_ERRORS) > _KEPT:
            _ERRORS.popitem(last=False)
    return RuntimeError(f"{type(exc).__name__}: {exc} [medmulti-error:{token}]")


def typed_error_of(exc: BaseException) -> MedmultiError | None:
    """Return the medmulti error a TensorFlow error stands for, if any.

    Parameters
    ----------
    exc : BaseException
        An exception raised while iterating a dataset from :func:`as_tf_dataset`
        (usually ``tf.errors.UnknownError``), or anything else.

    Returns
    -------
    MedmultiError or None
        The typed error raised while reading the batch (same class, message,
        patient, modality and path), or None when ``exc`` does not carry one.
    """
    if isinstance(exc, MedmultiError):
        return exc
    for token in reversed(_TOKEN_RE.findall(str(exc))):
        with _ERRORS_LOCK:
            found = _ERRORS.get(int(token))
        if found is not None:
            return found
    return None


class _TypedErrors:
    """The context manager :func:`typed_errors` returns."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, MedmultiError) or not isinstance(exc, Exception):
            return False
        typed = typed_error_of(exc)
        if typed is None:
            return False
        with _ERRORS_LOCK:  # raised now: the registry need not keep it (nor what its traceback holds)
            for token in [t for t, e in _ERRORS.items() if e is typed]:
                del _ERRORS[token]
        # TensorFlow's error stays the typed error's (suppressed) context, without its traceback:
        # that holds the frames of the failed iteration (``model.fit``'s, with its dataset
        # iterator and batches), which are freed now instead of living as long as the typed error.
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        del exc, tb
        raise typed from None


def typed_errors() -> contextlib.AbstractContextManager[None]:
    """Re-raise typed medmulti errors that TensorFlow re-wrapped.

    Inside the block, an error from iterating an :func:`as_tf_dataset` dataset
    (directly or through ``model.fit``) that was raised as a medmulti error while
    reading a batch is raised again as that error (``CorruptFileError`` naming
    patient, modality and file...) instead of ``tf.errors.UnknownError``. Other
    exceptions pass unchanged.

    Returns
    -------
    contextlib.AbstractContextManager
        The context manager (``with typed_errors(): ...``).

    Raises
    ------
    MedmultiError
        The original error of a failed batch.

    Examples
    --------
    >>> with medmulti.typed_errors():  # doctest: +SKIP
    ...     model.fit(seq.as_tf_dataset(), epochs=10)
    """
    return _TypedErrors()


def element_spec(seq: Any) -> tuple:
    """Return the ``tf.TensorSpec`` structure of the sequence's batches.

    Parameters
    ----------
    seq : PatientSequence
        The sequence.

    Returns
    -------
    tuple
        ``(inputs, labels)`` or ``(inputs, labels, weights)`` of ``tf.TensorSpec``;
        the batch axis is ``None`` (the last batch may be smaller).
    """
    import tensorflow as tf

    inputs = {name: tf.TensorSpec((None, *shape), tf.float32, name=name)
              for name, shape in seq.element_shapes().items()}
    label_dtype = tf.as_dtype(seq._labels[0].dtype)
    labels = tf.TensorSpec((None, *seq.label_shape()), label_dtype, name="labels")
    if getattr(seq, "yields_weights", seq.sample_weights):
        return inputs, labels, tf.TensorSpec((None,), tf.float32, name="sample_weights")
    return inputs, labels


def as_tf_dataset(seq: Any, *, num_parallel_calls: int | None = None, prefetch: int | None = None,
                  deterministic: bool = True, epochs: int | None = None, first_epoch: int | None = None):
    """Wrap a sequence as a ``tf.data.Dataset`` with the same elements.

    Parameters
    ----------
    seq : PatientSequence
        The sequence (its shuffle, augmentation and policies apply unchanged).
    num_parallel_calls : int, optional
        Batches read concurrently (default: the CPU count, at most 4;
        ``tf.data.AUTOTUNE`` lets TensorFlow choose).
    prefetch : int, optional
        Batches prefetched (default 2; ``tf.data.AUTOTUNE`` lets TensorFlow
        choose). The defaults are bounded because a batch of 3D volumes is
        large: with ``AUTOTUNE`` TensorFlow kept 8-9 batches of 100 MB in flight
        in ``benchmarks/feed.py``, for no faster feeding.
    deterministic : bool
        Keep the sequence's batch order (default). ``False`` lets a slow batch be
        overtaken.
    epochs : int, optional
        Serve this many epochs in one pass, back to back (``len(seq) * epochs``
        batches: epoch ``seq.epoch``, then the next...), for ``model.fit(ds,
        epochs=epochs, steps_per_epoch=len(seq))``, which then reads ahead across
        epoch boundaries. A later pass serves the epochs after those. Default: one
        epoch per pass.
    first_epoch : int, optional
        Serve from this epoch of the sequence on every pass (epochs ``first_epoch``
        to ``first_epoch + epochs - 1``), whatever number of passes came before.
        ``model.fit`` may open more than one iterator over its dataset (under a
        ``tf.distribute`` strategy it takes a first batch to build the model, then
        starts again), so :func:`medmulti.train` fixes the epochs this way. Default:
        the first pass serves from ``seq.epoch``, each later pass the epochs after.

    Returns
    -------
    tf.data.Dataset
        Elements as ``seq[i]``; ``element_spec`` as :func:`element_spec`.

    Raises
    ------
    ValueError
        ``epochs`` below 1, ``first_epoch`` below 0.

    Notes
    -----
    Batches are read by ``tf.numpy_function`` in TensorFlow's thread pool; the
    reading releases the GIL during file I/O. The arrays are handed over without a
    copy (the sequence's batch buffers are 64-byte aligned, so TensorFlow adopts
    them as tensors). A typed medmulti error raised while
    reading surfaces as ``tf.errors.UnknownError`` whose message holds the
    medmulti message (TensorFlow re-wraps Python exceptions); inside a
    :func:`typed_errors` block it is raised again as the original typed error.
    """
    import numpy as np
    import tensorflow as tf

    if epochs is not None and (not isinstance(epochs, (int, np.integer)) or epochs < 1):
        raise ValueError(f"epochs must be a positive integer or None, got {epochs!r}")
    if first_epoch is not None and (not isinstance(first_epoch, (int, np.integer)) or first_epoch < 0):
        raise ValueError(f"first_epoch must be a non-negative integer or None, got {first_epoch!r}")
    per_pass = 1 if epochs is None else int(epochs)
    spec = element_spec(seq)
    flat_spec = tf.nest.flatten(spec)
    n_batches = len(seq)
    first_epochs = (itertools.count(seq.epoch, per_pass) if first_epoch is None
                    else itertools.repeat(int(first_epoch)))
    lock = threading.Lock()

    def indices():
        with lock:
            first = next(first_epochs)
        for epoch in range(first, first + per_pass):
            for i in range(n_batches):
                yield epoch, i

    def read(epoch, index):
        try:
            batch = seq.batch(int(epoch), int(index))
        except MedmultiError as exc:
            raise _carry(exc) from None
        return [np.asarray(a, s.dtype.as_numpy_dtype) for a, s in zip(tf.nest.flatten(batch), flat_spec)]

    def to_tensors(epoch, index):
        flat = tf.numpy_function(read, [epoch, index], [s.dtype for s in flat_spec], stateful=False)
        for t, s in zip(flat, flat_spec):
            t.set_shape(s.shape)
        return tf.nest.pack_sequence_as(spec, flat)

    ds = tf.data.Dataset.from_generator(
        indices, output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)))
    if num_parallel_calls is None:
        num_parallel_calls = max(1, min(4, os.cpu_count() or 1))
    ds = ds.map(to_tensors, num_parallel_calls=num_parallel_calls,
                deterministic=deterministic)
    ds = ds.prefetch(2 if prefetch is None else prefetch)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(opts)
    return ds.apply(tf.data.experimental.assert_cardinality(n_batches * per_pass))
