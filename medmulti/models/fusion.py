"""``build_fusion_model``: one CNN branch per modality, fused, then the diagnosis head."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import keras

from ..errors import SpecError
from ..spec import StudySpec, present_input_name
from .branches import BACKBONES, NORMALIZATIONS, backbone_branch, conv_branch
from .layers import FUSION_LAYERS, ModalityDropout, PresenceMask, StackEmbeddings
from .options import ModelOptions, with_overrides

__all__ = ["FUSIONS", "DTYPE_POLICIES", "build_fusion_model", "model_input_shapes", "present_input_name"]

#: accepted ``fusion=`` values
FUSIONS = tuple(FUSION_LAYERS)

#: accepted ``dtype_policy=`` values (Keras dtype policy names)
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def _global_dtype_policy(name: str | None) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` while the block runs (``None``: unchanged).

    The global policy, not a ``dtype=`` per layer, so that ``keras.applications``
    backbones follow it and the model itself carries it (``compile`` then scales the
    loss of a ``mixed_float16`` model).
    """
    if name is None:
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def model_input_shapes(spec: StudySpec, modalities: Sequence[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Input shape (channels-last, without batch) of each modality's Keras input.

    A 3D modality without its own ``shape`` is resampled onto the reference grid, so
    it takes the reference modality's spatial shape.

    Parameters
    ----------
    spec : StudySpec
        The study spec.
    modalities : sequence of str, optional
        Subset of modality names (default: all, in spec order).

    Returns
    -------
    dict
        Modality name -> ``(*spatial, channels)``.

    Raises
    ------
    SpecError
        An unknown modality name, or a 3D modality whose shape cannot be known.
    """
    names = list(spec.names if modalities is None else modalities)
    reference = spec.reference
    out: dict[str, tuple[int, ...]] = {}
    for name in names:
        m = spec.modality(name)
        shape = m.input_shape
        if shape is None and m.dims == 3 and reference is not None and reference.shape is not None:
            shape = (*reference.shape, m.channels)
        if shape is None:
            raise SpecError(
                f"modality {name!r}: the model needs a fixed input shape",
                keyword="shape",
                hint=f"set 'shape' for {name!r} or for the reference modality in the spec",
            )
        out[name] = tuple(int(s) for s in shape)
    return out


def build_fusion_model(
    spec: StudySpec,
    *,
    modalities: Sequence[str] | None = None,
    optional_modalities: Sequence[str] | None = None,
    options: ModelOptions | None = None,
    seed: int | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str = "medmulti_fusion",
    dtype_policy: str | None = None,
    **overrides: Any,
) -> keras.Model:
    """Build the multi-input diagnosis model for ``spec``.

    Parameters
    ----------
    spec : StudySpec
        Gives the modalities (inputs, in spec order), their shapes and the labels.
    modalities : sequence of str, optional
        Build the model on this subset only (e.g. ``["ct"]`` for a CT-only model).
    optional_modalities : sequence of str, optional
        Modalities that get a ``"<name>_present"`` input of shape ``(1,)`` (1 present,
        0 missing). ``None`` means the spec's ``required: false`` modalities, as
        :class:`~medmulti.data.sequence.PatientSequence` yields them
        (pass its ``.optional_modalities``).
    options : ModelOptions, optional
        The architecture (fusion, branch width and depth, embedding size, dropout,
        backbone, normalisation, stem stride, pooling); ``None`` means the defaults of
        :class:`~medmulti.models.ModelOptions`.
    seed : int, optional
        Seed for modality dropout.
    input_shapes : Mapping, optional
        Modality name -> ``(*spatial, channels)`` overriding the shapes derived from the
        spec (e.g. ``PatientSequence.element_shapes()`` when the spec leaves a shape open).
    name : str
        Model name.
    dtype_policy : {"float32", "mixed_float16", "mixed_bfloat16"}, optional
        The Keras dtype policy of the branches and of the model (``None``: Keras's global
        policy, float32 unless changed). The mixed policies compute the branches in
        16 bits with float32 variables; the fusion and the diagnosis head are float32
        whatever the policy, so the output is float32 probabilities. Keras's global
        policy is set while the model is built and restored after (not thread-safe).
    **overrides
        Any field of :class:`~medmulti.models.ModelOptions` as a keyword (e.g.
        ``fusion="attention"``, ``depth=2``); it replaces that field of ``options``.

    Returns
    -------
    keras.Model
        Uncompiled functional model. Inputs: a dict keyed by modality name (and
        ``"<name>_present"``); output ``(batch, num_classes)`` softmax
        (single-label) or sigmoid (multi-label) probabilities, named ``"diagnosis"``.

    Raises
    ------
    SpecError
        An unknown modality name or a modality whose input shape is unknown.
    ValueError
        A bad option value (fusion, norm, backbone, rates, dtype_policy).
    TypeError
        A keyword that is not an option, or ``options`` that is not a ``ModelOptions``.

    Examples
    --------
    >>> from medmulti.spec import StudySpec
    >>> spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]},
    ...     "modalities": [{"name": "xray", "kind": "xray", "shape": [32, 32], "required": False}]})
    >>> model = build_fusion_model(spec, depth=2)
    >>> sorted(model.input)
    ['xray', 'xray_present']
    >>> same = build_fusion_model(spec, options=ModelOptions(depth=2))
    >>> same.get_config() == model.get_config()
    True
    """
    opts = with_overrides(options, ModelOptions, overrides, caller="build_fusion_model")
    fusion, norm, backbone, dropout = opts.fusion, opts.norm, opts.backbone, opts.dropout
    if fusion not in FUSION_LAYERS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if norm not in NORMALIZATIONS:
        raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)} or None, got {backbone!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if dtype_policy is not None and dtype_policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype_policy must be one of {DTYPE_POLICIES} or None, got {dtype_policy!r}")
    names = list(spec.names if modalities is None else modalities)
    if not names:
        raise SpecError("build_fusion_model needs at least one modality", keyword="modalities")
    given = {k: tuple(int(v) for v in s) for k, s in (input_shapes or {}).items()}
    shapes = {**model_input_shapes(spec, [n for n in names if n not in given]), **given}
    if optional_modalities is None:
        optional = [n for n in names if not spec.modality(n).required]
    else:
        unknown = sorted(set(optional_modalities) - set(spec.names))
        if unknown:
            raise SpecError(f"optional_modalities {unknown} are not in the spec; it has {spec.names}",
                            keyword="optional_modalities")
        optional = [n for n in names if n in set(optional_modalities)]

    with _global_dtype_policy(dtype_policy):
        return _build(spec, names, optional, shapes, opts, seed, name)


def _build(spec: StudySpec, names: list[str], optional: list[str], shapes: Mapping[str, tuple[int, ...]],
           opts: ModelOptions, seed: int | None, name: str) -> keras.Model:
    fusion, backbone, dropout = opts.fusion, opts.backbone, opts.dropout
    inputs: dict[str, Any] = {}
    embeddings = []
    for modality in names:
        m = spec.modality(modality)
        x = keras.Input(shape=shapes[modality], name=modality, dtype="float32")
        inputs[modality] = x
        if m.dims == 2 and backbone is not None:
            emb = backbone_branch(x, backbone=backbone, name=modality, embed_dim=opts.embed_dim, dropout=dropout)
        else:
            emb = conv_branch(
                x,
                dims=m.dims,
                name=modality,
                width=opts.width,
                depth=opts.depth,
                embed_dim=opts.embed_dim,
                norm=opts.norm,
                dropout=dropout,
                stem_stride=opts.stride_for(modality),
                pooling=opts.pooling,
            )
        embeddings.append(emb)
    presents = []
    for modality in optional:
        p = keras.Input(shape=(1,), name=present_input_name(modality), dtype="float32")
        inputs[present_input_name(modality)] = p
        presents.append(p)

    # fusion and head in float32 whatever the policy: small, and the probabilities stay float32
    stack = StackEmbeddings(name="stack_embeddings", dtype="float32")(embeddings)
    mask = PresenceMask(len(names), [names.index(n) for n in optional], name="presence_mask",
                        dtype="float32")([stack, *presents])
    if opts.modality_dropout > 0:
        mask = ModalityDropout(opts.modality_dropout, seed=seed, name="modality_dropout", dtype="float32")(mask)
    if fusion == "attention":
        fused = FUSION_LAYERS[fusion](units=opts.attention_units, name="fusion", dtype="float32")([stack, mask])
    else:
        fused = FUSION_LAYERS[fusion](name="fusion", dtype="float32")([stack, mask])
    if dropout > 0:
        fused = keras.layers.Dropout(dropout, name="head_dropout", dtype="float32")(fused)
    activation = "sigmoid" if spec.labels.multi_label else "softmax"
    outputs = keras.layers.Dense(spec.labels.num_classes, activation=activation, name="diagnosis",
                                 dtype="float32")(fused)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
