"""Fusion models: one CNN branch per modality, fused, then a diagnosis head.

:func:`build_fusion_model` is the entry point and :class:`ModelOptions` its architecture
(fusion, branch width and depth, ...); :mod:`medmulti.models.layers` holds
the serialisable custom layers (presence mask, modality dropout, concat / attention /
gated fusion) and :mod:`medmulti.models.branches` the per-modality CNNs.
"""

from .branches import BACKBONES, NORMALIZATIONS, backbone_branch, conv_branch
from .fusion import FUSIONS, build_fusion_model, model_input_shapes, present_input_name
from .layers import (
    AttentionFusion,
    ConcatFusion,
    GatedFusion,
    ModalityDropout,
    PresenceMask,
    StackEmbeddings,
)
from .options import ModelOptions

__all__ = [
    "build_fusion_model",
    "ModelOptions",
    "model_input_shapes",
    "present_input_name",
    "FUSIONS",
    "BACKBONES",
    "NORMALIZATIONS",
    "conv_branch",
    "backbone_branch",
    "StackEmbeddings",
    "PresenceMask",
    "ModalityDropout",
    "ConcatFusion",
    "AttentionFusion",
    "GatedFusion",
]
