"""Feeding models: the preprocessing cache, the patient-keyed sequence, augmentation, tf.data.

Heavy imports (TensorFlow, Keras, SciPy) happen only when the names that need them
are used, so importing :mod:`medmulti.data` is cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PreprocessCache": "medmulti.data.cache",
    "entry_key": "medmulti.data.cache_key",
    "CacheReport": "medmulti.data.cache",
    "PatientSequence": "medmulti.data.sequence",
    "MultiModalSequence": "medmulti.data.sequence",
    "Augmenter": "medmulti.data.augment",
    "as_tf_dataset": "medmulti.data.tfdata",
    "typed_errors": "medmulti.data.tfdata",
    "typed_error_of": "medmulti.data.tfdata",
    "preprocess_manifest": "medmulti.data.cache_fill",
    "PreprocessSummary": "medmulti.data.cache_fill",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmulti.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
