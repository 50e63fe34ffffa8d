"""medmulti: multi-modal medical imaging (CT, MR, X-ray) for TensorFlow/Keras.

Strict readers produce :class:`Image` objects in a known LPS geometry; studies are
co-registered and intensity-windowed per a :class:`StudySpec`; manifests are
validated before training; :class:`PatientSequence` feeds ``model.fit`` with one
input per modality; :func:`build_fusion_model` builds the branch CNNs.

Heavy dependencies (TensorFlow, SimpleITK) are imported only when the names that
need them are first used, so ``import medmulti`` is quick and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import (
    CacheError,
    CorruptFileError,
    ExecutorError,
    GeometryError,
    ManifestError,
    MedmultiError,
    MissingFileError,
    OutputError,
    RegistrationError,
    ResourceLimitError,
    RunFolderError,
    SeriesGeometryError,
    SpecError,
    UnsafePathError,
    UnsupportedDataError,
)
from .image import Image
from .spec import LabelSpec, ModalitySpec, StudySpec

# name -> module that defines it (imported on first access)
_LAZY = {
    "read_image": "medmulti.io",
    "preprocess_study": "medmulti.study",
    "resample_to": "medmulti.geometry",
    "register_rigid": "medmulti.geometry",
    "check_coregistered": "medmulti.geometry",
    "apply_window": "medmulti.intensity",
    "CT_WINDOWS": "medmulti.intensity",
    "inspect_study": "medmulti.study",
    "render_study": "medmulti.study",
    "load_manifest": "medmulti.manifest",
    "Manifest": "medmulti.manifest",
    "validate_manifest": "medmulti.manifest",
    "split_manifest": "medmulti.manifest",
    "scan": "medmulti.scanning",
    "ScanResult": "medmulti.scanning",
    "ManifestRow": "medmulti.manifest",
    "Problem": "medmulti.manifest",
    "ValidationReport": "medmulti.manifest",
    "check_row": "medmulti.manifest",
    "inspect_source": "medmulti.io",
    "list_series": "medmulti.io",
    "SourceInfo": "medmulti.io",
    "SourceRef": "medmulti.io",
    "Preprocessed": "medmulti.study",
    "make_sample_cohort": "medmulti.examples",
    "PatientSequence": "medmulti.data.sequence",
    "MultiModalSequence": "medmulti.data.sequence",
    "PreprocessCache": "medmulti.data.cache",
    "typed_errors": "medmulti.data.tfdata",
    "build_fusion_model": "medmulti.models",
    "train": "medmulti.training",
    "evaluate": "medmulti.training",
    "predict": "medmulti.training",
    "predict_patient": "medmulti.training",
    "evaluate_subsets": "medmulti.training.subsets",
    "explain": "medmulti.training.explain",
}

__all__ = [
    "__version__",
    "Image",
    "ModalitySpec",
    "LabelSpec",
    "StudySpec",
    "MedmultiError",
    "MissingFileError",
    "CorruptFileError",
    "UnsupportedDataError",
    "SeriesGeometryError",
    "ResourceLimitError",
    "ManifestError",
    "UnsafePathError",
    "SpecError",
    "RegistrationError",
    "GeometryError",
    "CacheError",
    "RunFolderError",
    "OutputError",
    "ExecutorError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmulti' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
