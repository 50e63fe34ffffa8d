"""Every model medmulti builds saves to .keras and loads with safe_mode=True, predicting identically.

The variants cover every value of every architectural option at least once
(fusion x normalisation x pooling x label encoding x optional inputs x stem
stride x modality dropout x subsets); the keras.applications backbones (each
tens of seconds and up to ~100 MB on disk) run in ``benchmarks/stress.py``.
No Lambda layer may appear anywhere in the model (safe_mode would refuse it).
"""

from __future__ import annotations

import numpy as np
import pytest

from medmulti.spec import StudySpec


def _spec(kind: str, labels: str = "onehot") -> StudySpec:
    lab = {"columns": ["effusion", "nodule"]} if labels == "multi" else \
        {"column": "diagnosis", "classes": ["healthy", "disease", "other"], "encoding": labels}
    ct = {"name": "ct", "kind": "ct", "shape": [8, 16, 16], "intensity": {"windows": [[40, 80], [400, 1500]]}}
    mr = {"name": "mr", "kind": "mr", "shape": [8, 16, 16], "required": False}
    xray = {"name": "xray", "kind": "xray", "shape": [32, 32], "required": False}
    mods = {"3d": [ct, mr], "2d": [dict(xray, required=True)], "mixed": [ct, mr, xray]}[kind]
    return StudySpec.from_dict({"name": f"safe-{kind}", "labels": lab, "modalities": mods})


VARIANTS = {
    "concat-batch-max-onehot": dict(kind="mixed", fusion="concat", norm="batch", pooling="max"),
    "attention-group-avg-int": dict(kind="mixed", labels="int", fusion="attention", norm="group", pooling="avg"),
    "gated-layer-avgmax-multi": dict(kind="mixed", labels="multi", fusion="gated", norm="layer", pooling="avgmax",
                                     modality_dropout=0.3),
    "concat-none-stride": dict(kind="3d", fusion="concat", norm="none", stem_stride={"ct": 2, "mr": 1}),
    "attention-no-optional": dict(kind="mixed", fusion="attention", optional_modalities=[]),
    "gated-subset": dict(kind="mixed", fusion="gated", modalities=["ct", "xray"]),
}


def _inputs(model, batch=2):
    rng = np.random.default_rng(0)
    out = {}
    for t in model.inputs:
        shape = (batch, *t.shape[1:])
        out[t.name] = np.array([[1.0], [0.0]], np.float32)[:batch] if t.name.endswith("_present") \
            else rng.normal(size=shape).astype(np.float32)
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_load_safe_mode_identical(variant, tmp_path):
    import keras

    from medmulti.models import build_fusion_model

    options = dict(VARIANTS[variant])
    spec = _spec(options.pop("kind"), options.pop("labels", "onehot"))
    small = {} if "backbone" in options else {"width": 4, "depth": 2}
    model = build_fusion_model(spec, embed_dim=8, seed=3, **small, **options)
    lambdas = [layer.name for layer in model._flatten_layers() if isinstance(layer, keras.layers.Lambda)]
    assert lambdas == []
    x = _inputs(model)
    y = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), y)
