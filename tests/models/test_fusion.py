"""Contract tests for build_fusion_model: shapes, heads, masks, save/load with safe_mode."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from models_helpers import make_inputs, make_spec

from medmulti.errors import SpecError
from medmulti.models import build_fusion_model, model_input_shapes

SMALL = dict(width=2, depth=2, embed_dim=4)


@pytest.mark.parametrize(
    "kind,inputs",
    [
        ("3d", {"ct": (8, 16, 16, 2), "mr": (8, 16, 16, 1), "mr_present": (1,)}),
        ("2d", {"xray": (16, 16, 1)}),
        ("mixed", {"ct": (8, 16, 16, 2), "mr": (8, 16, 16, 1), "xray": (16, 16, 1),
                   "mr_present": (1,), "xray_present": (1,)}),
    ],
)
def test_inputs_follow_the_spec_and_output_is_a_softmax(kind, inputs):
    spec = make_spec(kind)
    model = build_fusion_model(spec, **SMALL)
    assert {t.name: tuple(t.shape[1:]) for t in model.inputs} == inputs
    assert sorted(model.input) == sorted(inputs)
    y = model.predict(make_inputs(model, batch=3), verbose=0)
    assert y.shape == (3, 2)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-5)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model._flatten_layers())


def test_multi_label_spec_gives_sigmoid_outputs():
    spec = make_spec("2d", multi_label=True)
    model = build_fusion_model(spec, **SMALL)
    assert model.get_layer("diagnosis").activation is keras.activations.sigmoid
    y = model.predict(make_inputs(model), verbose=0)
    assert y.shape == (3, 3) and np.all((y > 0) & (y < 1))


def test_mr_shape_comes_from_the_reference_and_unknown_shapes_are_refused():
    spec = make_spec("3d")
    assert model_input_shapes(spec) == {"ct": (8, 16, 16, 2), "mr": (8, 16, 16, 1)}
    spec.modality("ct").shape = None
    with pytest.raises(SpecError, match="fixed input shape"):
        build_fusion_model(spec)


def test_explicit_optional_modalities_and_subsets():
    spec = make_spec("mixed")
    model = build_fusion_model(spec, optional_modalities=["xray"], **SMALL)
    assert sorted(model.input) == ["ct", "mr", "xray", "xray_present"]
    model = build_fusion_model(spec, modalities=["mr"], optional_modalities=[], **SMALL)
    assert sorted(model.input) == ["mr"]
    with pytest.raises(SpecError, match="not in the spec"):
        build_fusion_model(spec, optional_modalities=["pet"])
    with pytest.raises(ValueError, match="fusion"):
        build_fusion_model(spec, fusion="sum")


@pytest.mark.parametrize("fusion", ["concat", "attention", "gated"])
def test_missing_modality_does_not_influence_the_output(fusion):
    spec = make_spec("mixed")
    model = build_fusion_model(spec, fusion=fusion, modality_dropout=0.5, seed=0, **SMALL)
    x = make_inputs(model, batch=4, present={"mr_present": 0.0})
    y = model.predict(x, verbose=0)
    other = dict(x, mr=np.random.default_rng(9).normal(size=x["mr"].shape).astype(np.float32) * 100)
    np.testing.assert_array_equal(model.predict(other, verbose=0), y)
    # while a present modality does influence it (so the check above can fail)
    present = dict(x, mr_present=np.ones_like(x["mr_present"]))
    assert not np.allclose(model.predict(present, verbose=0), model.predict(dict(other, mr_present=present["mr_present"]), verbose=0))


@pytest.mark.parametrize("fusion", ["concat", "attention", "gated"])
def test_save_and_load_with_safe_mode_gives_identical_predictions(fusion, tmp_path):
    spec = make_spec("mixed", encoding="int")
    model = build_fusion_model(spec, fusion=fusion, modality_dropout=0.2, seed=1, **SMALL)
    x = make_inputs(model, batch=2, present={"xray_present": 0.0})
    y = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), y)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)


def test_model_config_round_trip():
    model = build_fusion_model(make_spec("mixed"), fusion="attention", **SMALL)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = make_inputs(model)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))


def test_keras_applications_backbone_for_2d_branches_without_downloads():
    spec = make_spec("2d")
    spec.modality("xray").shape = (32, 32)
    model = build_fusion_model(spec, backbone="mobilenet_v2", embed_dim=4)
    backbone = model.get_layer("xray_backbone")
    assert isinstance(backbone, keras.Model) and backbone.count_params() > 100_000
    assert model.predict(make_inputs(model, batch=1), verbose=0).shape == (1, 2)
    with pytest.raises(ValueError, match="backbone"):
        build_fusion_model(spec, backbone="vgg_imagenet")


def test_too_deep_for_the_input_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        build_fusion_model(make_spec("3d"), depth=6)
