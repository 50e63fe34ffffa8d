"""``ModelOptions``: the architecture of a fusion model, one record with its defaults.

:func:`~medmulti.models.build_fusion_model` and :func:`~medmulti.training.train` both take
it (``options=`` / ``model=``), and both still accept its fields as keywords, which replace
the fields of the given record (or of the defaults). The defaults live here only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

__all__ = ["ModelOptions", "with_overrides"]

T = TypeVar("T")


@dataclass(frozen=True)
class ModelOptions:
    """How :func:`~medmulti.models.build_fusion_model` builds the branches, the fusion and the head.

    Parameters
    ----------
    fusion : {"concat", "attention", "gated"}
        How branch embeddings are combined (see :mod:`medmulti.models.layers`).
    width : int
        Filters of the first block of each plain CNN branch (doubling per block).
    depth : int
        Blocks per plain CNN branch (each halves the spatial size).
    embed_dim : int
        Size of every branch's embedding.
    dropout : float
        Dropout rate in [0, 1) before each branch's projection and before the head.
    modality_dropout : float
        Probability of hiding each modality per sample during training (0 disables).
    backbone : str, optional
        A ``keras.applications`` name from :data:`~medmulti.models.branches.BACKBONES`
        for the 2D branches, built with ``weights=None``; ``None`` uses the plain CNN.
    norm : {"batch", "group", "layer", "none"}
        Normalisation in the plain CNN branches.
    stem_stride : int or dict
        Stride of each branch's first convolution: one value, or modality name -> stride
        (modalities not named get 1).
    pooling : {"max", "avg", "avgmax"}
        Global pooling of the plain CNN branches (see :func:`~medmulti.models.branches.conv_branch`).
    attention_units : int
        Hidden size of the attention scorer (``fusion="attention"``).

    Notes
    -----
    Values are checked when the model is built (``ValueError`` naming the option), where
    the tables of fusions, normalisations and backbones live. The seed of modality
    dropout is not an architecture option: it is ``build_fusion_model(seed=...)`` and,
    in training, :class:`~medmulti.training.FitOptions` ``seed``.

    Examples
    --------
    >>> from dataclasses import replace
    >>> small = ModelOptions(width=4, depth=2, embed_dim=8)
    >>> replace(small, fusion="gated").fusion
    'gated'
    >>> ModelOptions().stride_for("ct"), ModelOptions(stem_stride={"ct": 2}).stride_for("xray")
    (1, 1)
    """

    fusion: str = "concat"
    width: int = 8
    depth: int = 3
    embed_dim: int = 32
    dropout: float = 0.2
    modality_dropout: float = 0.0
    backbone: str | None = None
    norm: str = "batch"
    stem_stride: int | dict[str, int] = 1
    pooling: str = "max"
    attention_units: int = 32

    def stride_for(self, modality: str) -> int:
        """The stem stride of one modality's branch.

        Parameters
        ----------
        modality : str
            Modality name.

        Returns
        -------
        int
            ``stem_stride[modality]`` (1 when not named) for a dict, else ``stem_stride``.
        """
        if isinstance(self.stem_stride, Mapping):
            return int(self.stem_stride.get(modality, 1))
        return int(self.stem_stride)


def with_overrides(options: T | None, cls: type[T], keywords: Mapping[str, Any], *, caller: str,
                   argument: str = "options") -> T:
    """An options record with some fields replaced by keywords.

    Parameters
    ----------
    options : dataclass instance, optional
        The record to start from; ``None`` means ``cls()`` (the defaults).
    cls : type
        The options dataclass (e.g. :class:`ModelOptions`).
    keywords : Mapping
        Field name -> value; they win over ``options``.
    caller : str
        The function taking the keywords, named in errors as Python names it.
    argument : str
        The parameter that took ``options``, named in errors.

    Returns
    -------
    dataclass instance
        ``options`` itself when ``keywords`` is empty, else a new record.

    Raises
    ------
    TypeError
        ``options`` of another type, or a keyword that is not a field of ``cls``.

    Examples
    --------
    >>> with_overrides(ModelOptions(width=4), ModelOptions, {"depth": 2}, caller="f")  # doctest: +ELLIPSIS
    ModelOptions(fusion='concat', width=4, depth=2, ...)
    >>> with_overrides(None, ModelOptions, {"widht": 4}, caller="f")
    Traceback (most recent call last):
    TypeError: f() got an unexpected keyword argument 'widht'
    """
    if options is None:
        options = cls()
    elif not isinstance(options, cls):
        raise TypeError(f"{caller}() argument {argument!r} must be {cls.__name__} or None, "
                        f"got {type(options).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in keywords:
        if key not in names:
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}")
    return replace(options, **keywords) if keywords else options  # type: ignore[type-var]
