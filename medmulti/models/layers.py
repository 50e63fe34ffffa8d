"""Custom Keras layers for fusing modality embeddings.

Every layer here is registered with
``keras.saving.register_keras_serializable(package="medmulti")`` so a model using
it saves as ``.keras`` and loads with ``safe_mode=True`` (no ``Lambda`` layers).

The fusion layers share one calling convention: ``layer([stack, mask])`` with

- ``stack``: float tensor ``(batch, n_modalities, embed_dim)``, one embedding per
  modality in spec order (see :class:`StackEmbeddings`);
- ``mask``: float tensor ``(batch, n_modalities)``, 1 where the modality is present
  and 0 where it is missing (see :class:`PresenceMask`).

A missing modality contributes nothing: its embedding is multiplied by 0 before
anything else, so the output does not depend on that modality's input at all, and the
fusion renormalises over the modalities that are present.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

__all__ = [
    "StackEmbeddings",
    "PresenceMask",
    "ModalityDropout",
    "ConcatFusion",
    "AttentionFusion",
    "GatedFusion",
    "FUSION_LAYERS",
]

_PACKAGE = "medmulti"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StackEmbeddings(keras.layers.Layer):
    """Stack a list of ``(batch, dim)`` embeddings into ``(batch, n, dim)``.

    Examples
    --------
    >>> import numpy as np
    >>> StackEmbeddings()([np.ones((2, 3)), np.zeros((2, 3))]).shape
    TensorShape([2, 2, 3])
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        return ops.stack(list(inputs), axis=1)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        first = tuple(input_shape[0])
        return (first[0], len(input_shape), *first[1:])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PresenceMask(keras.layers.Layer):
    """Build the ``(batch, n_modalities)`` presence mask from the ``*_present`` inputs.

    Required modalities are always present (1); optional ones take their value from
    the matching ``"<name>_present"`` input, clipped to ``[0, 1]``.

    Parameters
    ----------
    num_modalities : int
        Number of modalities (columns of the mask).
    optional_indices : sequence of int
        Column of each optional modality, in the order the ``*_present`` tensors
        are passed to :meth:`call`.

    Notes
    -----
    Called as ``layer([stack, present_0, present_1, ...])``: ``stack`` (the output of
    :class:`StackEmbeddings`) only gives the batch size; each ``present_i`` has
    shape ``(batch, 1)``.
    """

    def __init__(self, num_modalities: int, optional_indices: Sequence[int] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_modalities = int(num_modalities)
        self.optional_indices = [int(i) for i in optional_indices]
        if self.num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
        bad = [i for i in self.optional_indices if not 0 <= i < self.num_modalities]
        if bad or len(set(self.optional_indices)) != len(self.optional_indices):
            raise ValueError(
                f"optional_indices must be distinct columns in [0, {self.num_modalities}), got {self.optional_indices}"
            )

    def call(self, inputs: Sequence[Any]) -> Any:
        stack, presents = inputs[0], list(inputs[1:])
        if len(presents) != len(self.optional_indices):
            raise ValueError(
                f"PresenceMask expects {len(self.optional_indices)} '*_present' tensors, got {len(presents)}"
            )
        ones = ops.ones_like(stack[:, :, 0])  # (batch, n)
        columns = [ones[:, i : i + 1] for i in range(self.num_modalities)]
        for index, present in zip(self.optional_indices, presents):
            present = ops.reshape(ops.cast(present, ones.dtype), (-1, 1))
            columns[index] = ops.clip(present, 0.0, 1.0)
        return ops.concatenate(columns, axis=1)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        return (tuple(input_shape[0])[0], self.num_modalities)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_modalities=self.num_modalities, optional_indices=list(self.optional_indices))
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ModalityDropout(keras.layers.Layer):
    """Randomly mark modalities as missing during training.

    Each present modality of each sample is dropped (its mask entry set to 0) with
    probability ``rate``; a sample whose every modality would be dropped keeps one
    present modality chosen at random, so at least one modality always remains. Outside training the
    mask passes through unchanged.

    Parameters
    ----------
    rate : float
        Drop probability per modality and sample, in ``[0, 1)``.
    droppable : sequence of int, optional
        Mask columns that may be dropped (default: all).
    seed : int, optional
        Seed of the layer's random generator (for reproducible training).

    Notes
    -----
    Called on the ``(batch, n_modalities)`` mask; returns a mask of the same shape.
    """

    def __init__(
        self, rate: float = 0.0, droppable: Sequence[int] | None = None, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.droppable = None if droppable is None else [int(i) for i in droppable]
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        mask = inputs
        if not training or self.rate == 0.0:
            return mask
        n = mask.shape[-1]
        draw = keras.random.uniform(ops.shape(mask), seed=self.seed_generator)
        keep = ops.cast(draw >= self.rate, mask.dtype)
        if self.droppable is not None:
            eligible = ops.convert_to_tensor([1.0 if i in self.droppable else 0.0 for i in range(n)], mask.dtype)
            keep = ops.maximum(keep, 1.0 - eligible)
        dropped = mask * keep
        any_left = ops.sum(dropped, axis=-1, keepdims=True) > 0
        # all dropped: keep one present modality, chosen at random among the present ones
        present = ops.cast(mask > 0, mask.dtype)
        chosen = ops.one_hot(ops.argmax(present * (1.0 + draw), axis=-1), n, dtype=mask.dtype)
        return ops.where(any_left, dropped, mask * chosen)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(rate=self.rate, droppable=self.droppable, seed=self.seed)
        return config


def _masked(stack: Any, mask: Any) -> Any:
    """Zero the embeddings of missing modalities (``where``, so even NaN inputs vanish)."""
    present = ops.expand_dims(mask, -1) > 0
    return ops.where(present, stack, ops.zeros_like(stack))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConcatFusion(keras.layers.Layer):
    """Late fusion by concatenation, renormalised over present modalities.

    Missing embeddings are zeroed, the rest scaled by ``n_modalities / n_present``
    (as inverted dropout does), flattened to ``(batch, n_modalities * dim)``, and
    the mask is appended so the head knows which modalities it saw.

    Returns
    -------
    Tensor ``(batch, n_modalities * dim + n_modalities)``.
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        stack, mask = inputs
        n = stack.shape[1]
        n_present = ops.maximum(ops.sum(mask, axis=-1, keepdims=True), 1.0)
        scaled = _masked(stack, mask) * ops.expand_dims(float(n) / n_present, -1)
        flat = ops.reshape(scaled, (-1, n * stack.shape[2]))
        return ops.concatenate([flat, ops.cast(mask, flat.dtype)], axis=-1)

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        batch, n, dim = tuple(input_shape[0])
        return (batch, n * dim + n)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AttentionFusion(keras.layers.Layer):
    """Attention over modality embeddings, softmax taken over present modalities only.

    ``score_m = v . tanh(W e_m + b)``; weights are the softmax of the scores of the
    present modalities (missing ones get weight exactly 0); the output is the
    weighted sum of embeddings.

    Parameters
    ----------
    units : int
        Size of the hidden scoring layer.

    Returns
    -------
    Tensor ``(batch, dim)``; with ``return_weights=True`` in :meth:`call`, also the
    ``(batch, n_modalities)`` attention weights.
    """

    def __init__(self, units: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape: Sequence[tuple]) -> None:
        dim = int(tuple(input_shape[0])[-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.context = self.add_weight(name="context", shape=(self.units, 1), initializer="glorot_uniform")

    def attention_weights(self, stack: Any, mask: Any) -> Any:
        """Return the ``(batch, n_modalities)`` weights (0 for missing modalities).

        Parameters
        ----------
        stack : tensor
            Float ``(batch, n_modalities, embed_dim)`` embeddings; missing
            modalities' rows are zeroed before scoring.
        mask : tensor
            Float ``(batch, n_modalities)``; an entry > 0 marks the modality
            present (only the sign is used, not the value).

        Returns
        -------
        tensor
            Float ``(batch, n_modalities)``: the softmax of the scores
            ``v . tanh(W e_m + b)`` over the present modalities of each sample,
            exactly 0 for missing ones; each row sums to 1, or is all zeros when
            no modality of that sample is present.

        Notes
        -----
        Uses the layer's weights, so the layer must be built first (by calling
        it, or :meth:`build`).

        Examples
        --------
        >>> import numpy as np
        >>> layer = AttentionFusion(units=4)
        >>> layer.build([(1, 3, 2), (1, 3)])
        >>> w = layer.attention_weights(np.ones((1, 3, 2), "float32"), np.array([[1.0, 0.0, 1.0]], "float32"))
        >>> ops.convert_to_numpy(w).round(3).tolist()
        [[0.5, 0.0, 0.5]]
        """
        stack = _masked(stack, mask)
        hidden = ops.tanh(ops.matmul(stack, self.kernel) + self.bias)
        scores = ops.squeeze(ops.matmul(hidden, self.context), -1)
        present = mask > 0
        scores = ops.where(present, scores, ops.full_like(scores, -1e9))
        weights = ops.softmax(scores, axis=-1) * ops.cast(present, scores.dtype)
        return weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-12)

    def call(self, inputs: Sequence[Any], return_weights: bool = False) -> Any:
        stack, mask = inputs
        weights = self.attention_weights(stack, mask)
        fused = ops.sum(_masked(stack, mask) * ops.expand_dims(weights, -1), axis=1)
        return (fused, weights) if return_weights else fused

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        batch, _, dim = tuple(input_shape[0])
        return (batch, dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GatedFusion(keras.layers.Layer):
    """Gated fusion: a learned per-feature sigmoid gate for each modality embedding.

    ``g_m = sigmoid(W e_m + b)`` (shared ``W``); the output is
    ``sum_m g_m * e_m / sum_m g_m`` over present modalities, element-wise, so the
    result is a gate-weighted mean that renormalises when a modality is missing.

    Returns
    -------
    Tensor ``(batch, dim)``.
    """

    def build(self, input_shape: Sequence[tuple]) -> None:
        dim = int(tuple(input_shape[0])[-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, dim), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(dim,), initializer="zeros")

    def call(self, inputs: Sequence[Any]) -> Any:
        stack, mask = inputs
        stack = _masked(stack, mask)
        gates = ops.sigmoid(ops.matmul(stack, self.kernel) + self.bias) * ops.expand_dims(mask, -1)
        total = ops.maximum(ops.sum(gates, axis=1), 1e-6)
        return ops.sum(gates * stack, axis=1) / total

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        batch, _, dim = tuple(input_shape[0])
        return (batch, dim)


FUSION_LAYERS: dict[str, type[keras.layers.Layer]] = {
    "concat": ConcatFusion,
    "attention": AttentionFusion,
    "gated": GatedFusion,
}
