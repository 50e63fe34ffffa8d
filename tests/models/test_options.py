"""ModelOptions: build_fusion_model's architecture as one record, its keywords still working."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from models_helpers import make_spec

from medmulti import models
from medmulti.models import FUSIONS, ModelOptions, build_fusion_model

SMALL = {"width": 2, "depth": 2, "embed_dim": 4}
FIELDS = {f.name for f in dataclasses.fields(ModelOptions)}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_keywords_and_options_build_the_same_model(fusion):
    spec = make_spec("mixed")
    keywords = dict(SMALL, fusion=fusion, modality_dropout=0.3, norm="group", pooling="avgmax",
                    stem_stride={"ct": 2}, attention_units=8)
    by_keywords = build_fusion_model(spec, seed=1, **keywords)
    by_options = build_fusion_model(spec, seed=1, options=ModelOptions(**keywords))
    assert by_options.get_config() == by_keywords.get_config()
    assert by_options.count_params() == by_keywords.count_params()
    assert by_options.get_layer("modality_dropout").get_config()["rate"] == 0.3


def test_keywords_replace_fields_of_the_options():
    spec = make_spec("2d")
    mixed = build_fusion_model(spec, options=ModelOptions(width=16, depth=2, fusion="gated"), width=2, embed_dim=4)
    plain = build_fusion_model(spec, options=ModelOptions(width=2, depth=2, embed_dim=4, fusion="gated"))
    assert mixed.get_config() == plain.get_config()


def test_no_options_means_the_dataclass_defaults():
    spec = make_spec("2d")
    assert build_fusion_model(spec).get_config() == build_fusion_model(spec, options=ModelOptions()).get_config()


def test_the_defaults_live_in_the_dataclass_only():
    # build_fusion_model takes the architecture through **overrides: no parameter of its own
    # repeats a field (so no literal default can differ from the dataclass's)
    params = inspect.signature(build_fusion_model).parameters
    assert not FIELDS & set(params)
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert params["options"].default is None
    defaults = ModelOptions()
    assert (defaults.fusion, defaults.width, defaults.depth, defaults.embed_dim) == ("concat", 8, 3, 32)


def test_options_are_frozen_and_exported():
    options = ModelOptions(width=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.width = 2  # type: ignore[misc]
    assert "ModelOptions" in models.__all__
    assert dataclasses.replace(options, depth=2) == ModelOptions(width=4, depth=2)


@pytest.mark.parametrize("stride,expected", [(1, {"ct": 1, "xray": 1}), (2, {"ct": 2, "xray": 2}),
                                              ({"ct": 2}, {"ct": 2, "xray": 1})])
def test_stem_stride_per_modality(stride, expected):
    options = ModelOptions(stem_stride=stride)
    assert {m: options.stride_for(m) for m in expected} == expected


def test_unknown_keyword_and_wrong_options_are_type_errors():
    spec = make_spec("2d")
    with pytest.raises(TypeError, match=r"build_fusion_model\(\) got an unexpected keyword argument 'widht'"):
        build_fusion_model(spec, widht=2)
    with pytest.raises(TypeError, match="'options' must be ModelOptions or None, got dict"):
        build_fusion_model(spec, options={"width": 2})  # type: ignore[arg-type]


def test_bad_values_are_still_refused_when_built():
    spec = make_spec("2d")
    with pytest.raises(ValueError, match="fusion must be one of"):
        build_fusion_model(spec, options=ModelOptions(fusion="sum"))
    with pytest.raises(ValueError, match="dropout must be in"):
        build_fusion_model(spec, dropout=1.5)
