"""Contract tests for the custom fusion layers: config round trip, oracles in numpy, masks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from medmulti.models.layers import (
    AttentionFusion,
    ConcatFusion,
    GatedFusion,
    ModalityDropout,
    PresenceMask,
    StackEmbeddings,
)

RNG = np.random.default_rng(0)
STACK = RNG.normal(size=(4, 3, 5)).astype(np.float32)
MASK = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0]], np.float32)

LAYERS = [
    (StackEmbeddings, {}),
    (PresenceMask, {"num_modalities": 3, "optional_indices": [2, 0]}),
    (ModalityDropout, {"rate": 0.25, "droppable": [1, 2], "seed": 3}),
    (ConcatFusion, {}),
    (AttentionFusion, {"units": 7}),
    (GatedFusion, {}),
]


def _call(layer, **kwargs):
    if isinstance(layer, StackEmbeddings):
        return layer([STACK[:, i] for i in range(3)])
    if isinstance(layer, PresenceMask):
        return layer([STACK, MASK[:, 2:3], MASK[:, 0:1]])
    if isinstance(layer, ModalityDropout):
        return layer(MASK, **kwargs)
    return layer([STACK, MASK])


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_config_round_trip_gives_same_layer_and_output(cls, kwargs):
    layer = cls(name="under_test", **kwargs)
    out = np.asarray(_call(layer))
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    _call(clone)  # build
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(_call(clone)), out)
    # registered under the medmulti package: serialize/deserialize by name works
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is cls
    assert keras.saving.get_registered_name(cls) == f"medmulti>{cls.__name__}"


def test_stack_embeddings_matches_numpy_stack():
    np.testing.assert_array_equal(np.asarray(_call(StackEmbeddings())), STACK)


def test_presence_mask_puts_present_inputs_in_their_columns_and_ones_elsewhere():
    out = np.asarray(PresenceMask(3, [2, 0])([STACK, MASK[:, 2:3], MASK[:, 0:1]]))
    expected = np.stack([MASK[:, 0], np.ones(4), MASK[:, 2]], axis=1)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="optional_indices"):
        PresenceMask(2, [2])


def test_concat_fusion_matches_numpy_oracle():
    out = np.asarray(ConcatFusion()([STACK, MASK]))
    n_present = MASK.sum(1, keepdims=True)
    expected = (STACK * MASK[..., None] * (3 / n_present)[..., None]).reshape(4, 15)
    np.testing.assert_allclose(out[:, :15], expected, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 15:], MASK)


def test_attention_weights_are_a_softmax_over_present_modalities_only():
    layer = AttentionFusion(units=7)
    fused, weights = layer([STACK, MASK], return_weights=True)
    fused, weights = np.asarray(fused), np.asarray(weights)
    kernel, bias, context = (np.asarray(w) for w in layer.get_weights())
    scores = (np.tanh(STACK @ kernel + bias) @ context)[..., 0]
    for b in range(4):
        present = MASK[b] > 0
        e = np.exp(scores[b, present] - scores[b, present].max())
        expected = np.zeros(3)
        expected[present] = e / e.sum()
        np.testing.assert_allclose(weights[b], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(fused[b], (expected[:, None] * STACK[b]).sum(0), rtol=1e-5, atol=1e-6)
    assert np.all(weights[MASK == 0] == 0)


def test_gated_fusion_with_one_present_modality_returns_its_embedding():
    out = np.asarray(GatedFusion()([STACK, MASK]))
    np.testing.assert_allclose(out[2], STACK[2, 2], rtol=1e-5)  # only modality 2 present


@pytest.mark.parametrize("cls", [ConcatFusion, AttentionFusion, GatedFusion])
def test_fusion_ignores_missing_modality_even_if_nan(cls):
    layer = cls()
    out = np.asarray(layer([STACK, MASK]))
    poisoned = STACK.copy()
    poisoned[MASK == 0] = np.nan
    np.testing.assert_array_equal(np.asarray(layer([poisoned, MASK])), out)
    changed = STACK.copy()
    changed[MASK == 1] += 1.0
    assert not np.allclose(np.asarray(layer([changed, MASK])), out)


def test_modality_dropout_is_identity_at_inference_and_keeps_one_modality_in_training():
    layer = ModalityDropout(0.9, seed=1)
    np.testing.assert_array_equal(np.asarray(layer(MASK, training=False)), MASK)
    big = np.ones((2000, 3), np.float32)
    out = np.asarray(layer(big, training=True))
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert out.sum(1).min() >= 1  # never all dropped
    assert out.mean() < 0.5  # but a lot is dropped at rate 0.9
    only = ModalityDropout(0.5, droppable=[1], seed=2)(big, training=True)
    only = np.asarray(only)
    assert np.all(only[:, [0, 2]] == 1)
    assert 0.4 < only[:, 1].mean() < 0.6
    # missing stays missing
    assert np.all(np.asarray(layer(MASK, training=True))[MASK == 0] == 0)
    with pytest.raises(ValueError, match="rate"):
        ModalityDropout(1.0)
