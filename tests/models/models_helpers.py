"""Small specs and inputs shared by the model and training tests (tiny shapes keep Keras fast)."""

from __future__ import annotations

import numpy as np

from medmulti.spec import StudySpec


def make_spec(kind: str = "mixed", *, multi_label: bool = False, encoding: str = "onehot") -> StudySpec:
    """A tiny spec: ``"3d"`` (CT + optional MR), ``"2d"`` (one X-ray), or ``"mixed"``."""
    labels = (
        {"columns": ["effusion", "nodule", "mass"]}
        if multi_label
        else {"column": "diagnosis", "classes": ["healthy", "disease"], "encoding": encoding}
    )
    ct = {"name": "ct", "kind": "ct", "shape": [8, 16, 16], "intensity": {"windows": ["brain", "bone"]}}
    mr = {"name": "mr", "kind": "mr", "required": False}
    xray = {"name": "xray", "kind": "xray", "shape": [16, 16], "required": False}
    modalities = {"3d": [ct, mr], "2d": [dict(xray, required=True)], "mixed": [ct, mr, xray]}[kind]
    return StudySpec.from_dict({"name": f"tiny-{kind}", "labels": labels, "modalities": modalities})


def make_inputs(model, batch: int = 3, seed: int = 0, present: float | dict | None = None) -> dict:
    """Random float32 inputs for every model input; ``*_present`` inputs are 1 unless given."""
    rng = np.random.default_rng(seed)
    out = {}
    for tensor in model.inputs:
        name = tensor.name
        shape = (batch, *tensor.shape[1:])
        if name.endswith("_present"):
            value = 1.0
            if isinstance(present, dict):
                value = present.get(name, 1.0)
            elif present is not None:
                value = present
            out[name] = np.full(shape, value, np.float32)
        else:
            out[name] = rng.normal(size=shape).astype(np.float32)
    return out
