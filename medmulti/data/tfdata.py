"""``tf.data`` view of a :class:`~medmulti.data.PatientSequence`.

The dataset yields exactly the sequence's batches (same order, same arrays),
with an explicit ``element_spec``, reading batches in parallel
(``num_parallel_calls``, order kept) and prefetching. Each new iteration over
the dataset (each epoch of ``model.fit``) serves the next epoch of the sequence:
the first iteration serves the sequence's current epoch.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

__all__ = ["as_tf_dataset", "element_spec"]


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
    if seq.sample_weights:
        return inputs, labels, tf.TensorSpec((None,), tf.float32, name="sample_weights")
    return inputs, labels


def as_tf_dataset(seq: Any, *, num_parallel_calls: int | None = None, prefetch: int | None = None,
                  deterministic: bool = True):
    """Wrap a sequence as a ``tf.data.Dataset`` with the same elements.

    Parameters
    ----------
    seq : PatientSequence
        The sequence (its shuffle, augmentation and policies apply unchanged).
    num_parallel_calls : int, optional
        Batches read concurrently (default ``tf.data.AUTOTUNE``).
    prefetch : int, optional
        Batches prefetched (default ``tf.data.AUTOTUNE``).
    deterministic : bool
        Keep the sequence's batch order (default). ``False`` lets a slow batch be
        overtaken.

    Returns
    -------
    tf.data.Dataset
        Elements as ``seq[i]``; ``element_spec`` as :func:`element_spec`.

    Notes
    -----
    Batches are read by ``tf.numpy_function`` in TensorFlow's thread pool; the
    reading releases the GIL during file I/O. A typed medmulti error raised while
    reading surfaces as ``tf.errors.UnknownError`` whose message holds the
    medmulti message (TensorFlow re-wraps Python exceptions); iterate the
    sequence itself to get the typed error.
    """
    import numpy as np
    import tensorflow as tf

    spec = element_spec(seq)
    flat_spec = tf.nest.flatten(spec)
    n_batches = len(seq)
    epochs = itertools.count(seq.epoch)
    lock = threading.Lock()

    def indices():
        with lock:
            epoch = next(epochs)
        for i in range(n_batches):
            yield epoch, i

    def read(epoch, index):
        batch = seq.batch(int(epoch), int(index))
        return [np.asarray(a, s.dtype.as_numpy_dtype) for a, s in zip(tf.nest.flatten(batch), flat_spec)]

    def to_tensors(epoch, index):
        flat = tf.numpy_function(read, [epoch, index], [s.dtype for s in flat_spec], stateful=False)
        for t, s in zip(flat, flat_spec):
            t.set_shape(s.shape)
        return tf.nest.pack_sequence_as(spec, flat)

    auto = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_generator(
        indices, output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)))
    ds = ds.map(to_tensors, num_parallel_calls=auto if num_parallel_calls is None else num_parallel_calls,
                deterministic=deterministic)
    ds = ds.prefetch(auto if prefetch is None else prefetch)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(opts)
    return ds.apply(tf.data.experimental.assert_cardinality(n_batches))
