"""Per-modality CNN branches: each maps one modality input to a fixed-size embedding.

- :func:`conv_branch` — a plain CNN for 3D volumes (Conv3D) or 2D images (Conv2D):
  ``depth`` blocks of convolution, normalisation, ReLU and 2x max pooling, the
  number of filters doubling per block from ``width``, then global (max / average) pooling
  and a linear projection to ``embed_dim``.
- :func:`backbone_branch` — a ``keras.applications`` 2D network built with
  ``weights=None`` (nothing is downloaded), global-average pooled and projected.

Both are built with the Keras functional API and return the embedding tensor.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["NORMALIZATIONS", "POOLINGS", "BACKBONES", "conv_branch", "backbone_branch"]

#: normalisation layers accepted by :func:`conv_branch`
NORMALIZATIONS = ("batch", "group", "layer", "none")

#: global pooling at the end of :func:`conv_branch`: average, max (finds small focal
#: findings, which averaging dilutes), or both concatenated
POOLINGS = ("avg", "max", "avgmax")

#: ``backbone=`` names -> ``keras.applications`` constructors (2D only, ``weights=None``)
BACKBONES = {
    "mobilenet_v2": "MobileNetV2",
    "resnet50": "ResNet50",
    "efficientnet_b0": "EfficientNetB0",
    "densenet121": "DenseNet121",
}


def _normalization(kind: str, channels: int, name: str) -> keras.layers.Layer | None:
    if kind == "batch":
        return keras.layers.BatchNormalization(name=name)
    if kind == "group":
        return keras.layers.GroupNormalization(groups=min(4, channels), name=name)
    if kind == "layer":
        return keras.layers.LayerNormalization(name=name)
    return None


def conv_branch(
    inputs: Any,
    *,
    dims: int,
    name: str,
    width: int = 8,
    depth: int = 3,
    embed_dim: int = 32,
    norm: str = "batch",
    dropout: float = 0.0,
    stem_stride: int = 1,
    pooling: str = "max",
) -> Any:
    """A plain 2D or 3D CNN branch ending in a ``(batch, embed_dim)`` embedding.

    Parameters
    ----------
    inputs : KerasTensor
        The modality input, channels-last: ``(batch, z, y, x, c)`` or ``(batch, y, x, c)``.
    dims : {2, 3}
        Spatial dimensions.
    name : str
        Prefix of every layer name (the modality name).
    width : int
        Filters of the first block; doubled at each following block.
    depth : int
        Number of convolution blocks (each halves every spatial size).
    embed_dim : int
        Size of the output embedding.
    norm : {"batch", "group", "layer", "none"}
        Normalisation after each convolution.
    dropout : float
        Dropout rate before the projection (0 disables it).
    stem_stride : int
        Stride of the first convolution (2 quarters the 2D / eighths the 3D work of
        the following blocks on large inputs).
    pooling : {"max", "avg", "avgmax"}
        Global pooling of the last block: ``"max"`` suits small focal findings
        (a lesion of a few voxels), ``"avg"`` diffuse ones, ``"avgmax"`` concatenates both.

    Returns
    -------
    KerasTensor
        The embedding, ``(batch, embed_dim)`` float32.

    Raises
    ------
    ValueError
        Bad ``dims``, ``norm``, ``width``, ``depth``, or an input too small for ``depth``.
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    if norm not in NORMALIZATIONS:
        raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if width < 1 or depth < 1 or embed_dim < 1 or stem_stride < 1:
        raise ValueError("width, depth, embed_dim and stem_stride must be >= 1")
    spatial = [int(s) for s in inputs.shape[1:-1]]
    smallest = min(spatial) // stem_stride
    if smallest < 2 ** (depth - 1):
        raise ValueError(
            f"modality {name!r}: input of spatial shape {tuple(spatial)} is too small for depth={depth} "
            f"(and stem_stride={stem_stride}); use a smaller depth or a larger shape"
        )
    conv = keras.layers.Conv3D if dims == 3 else keras.layers.Conv2D
    pool = keras.layers.MaxPooling3D if dims == 3 else keras.layers.MaxPooling2D
    gap = keras.layers.GlobalAveragePooling3D if dims == 3 else keras.layers.GlobalAveragePooling2D
    gmp = keras.layers.GlobalMaxPooling3D if dims == 3 else keras.layers.GlobalMaxPooling2D
    x = inputs
    size = smallest
    for i in range(depth):
        filters = width * 2**i
        x = conv(
            filters,
            3,
            strides=stem_stride if i == 0 else 1,
            padding="same",
            use_bias=norm == "none",
            name=f"{name}_conv{i + 1}",
        )(x)
        layer = _normalization(norm, filters, f"{name}_norm{i + 1}")
        if layer is not None:
            x = layer(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{i + 1}")(x)
        if i < depth - 1 and size >= 2:
            x = pool(2, name=f"{name}_pool{i + 1}")(x)
            size //= 2
    if pooling == "avg":
        x = gap(name=f"{name}_gap")(x)
    elif pooling == "max":
        x = gmp(name=f"{name}_gmp")(x)
    else:
        x = keras.layers.Concatenate(name=f"{name}_gapgmp")([gap(name=f"{name}_gap")(x), gmp(name=f"{name}_gmp")(x)])
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.Dense(embed_dim, name=f"{name}_embed")(x)


def backbone_branch(inputs: Any, *, backbone: str, name: str, embed_dim: int = 32, dropout: float = 0.0) -> Any:
    """A ``keras.applications`` 2D backbone (randomly initialised) as a branch.

    Parameters
    ----------
    inputs : KerasTensor
        The 2D modality input ``(batch, y, x, c)``; any channel count.
    backbone : str
        One of :data:`BACKBONES`.
    name : str
        Prefix of the layer names (the modality name).
    embed_dim : int
        Size of the output embedding.
    dropout : float
        Dropout rate before the projection.

    Returns
    -------
    KerasTensor
        The embedding, ``(batch, embed_dim)``.

    Raises
    ------
    ValueError
        An unknown backbone name or a non-2D input.

    Notes
    -----
    ``weights=None`` always: medmulti never downloads weights. Load pretrained weights
    yourself with ``model.get_layer(f"{name}_backbone").load_weights(...)`` if you have them.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    if len(inputs.shape) != 4:
        raise ValueError(f"modality {name!r}: a keras.applications backbone needs a 2D input, got {inputs.shape}")
    constructor = getattr(keras.applications, BACKBONES[backbone])
    net = constructor(
        include_top=False,
        weights=None,
        input_shape=tuple(int(s) for s in inputs.shape[1:]),
        pooling="avg",
        name=f"{name}_backbone",
    )
    x = net(inputs)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.Dense(embed_dim, name=f"{name}_embed")(x)
