"""The study spec: which modalities a model takes, how each is prepared, and the labels.

A spec is a pair of dataclasses, :class:`ModalitySpec` (one per Keras input) and
:class:`StudySpec` (the modalities plus the :class:`LabelSpec`), loadable from and
savable to YAML. Unknown keys and bad values raise :class:`~medmulti.errors.SpecError`
naming the key.

Example YAML (``format: 1``)::

    format: 1
    name: sample
    labels:
      column: diagnosis          # single-label: one column holding a class name
      classes: [healthy, disease]
      encoding: onehot           # or "int"
    modalities:
      - name: ct                 # Keras input name and manifest column
        kind: ct                 # ct | mr | xray
        dims: 3
        reference: true
        spacing_mm: [2.0, 2.0, 2.0]
        shape: [64, 64, 64]
        intensity: {windows: [brain, subdural, bone]}
      - name: mr
        kind: mr
        register: auto           # none | rigid | auto
        intensity: {method: percentile, percentiles: [1.0, 99.0]}
      - name: xray
        kind: xray
        dims: 2
        shape: [128, 128]
        required: false

Intensity keys for every kind also include ``clip: [low, high]`` (clip the final
values) and, for MR, ``zscore_foreground: false`` (z-score over every voxel instead of
the Otsu foreground).

Multi-label specs give ``columns: [effusion, nodule]`` instead of ``column``: one
0/1 manifest column per class; the class names are the column names.

A modality may also carry a ``select:`` block: how ``medmulti scan`` chooses its series
in a hospital export (:class:`SeriesSelect`, defaults in :data:`SELECT_DEFAULTS`); it
does not change how an image is read or prepared.

Every number is checked when the spec is built, not when a patient is preprocessed:
numbers are YAML numbers (or plain decimal text such as ``1e9``, which YAML 1.1 reads
as text), never booleans, never NaN or infinite; ``spacing_mm`` lies in
:data:`SPACING_RANGE_MM`; ``shape`` holds positive integers whose product (times
the channels) fits :attr:`medmulti.io.Limits.max_voxels`; a window's width, a
``clip`` range and ``percentiles`` are ordered and within their domain. A spec file
is at most :data:`MAX_SPEC_BYTES` bytes, nests at most :data:`MAX_SPEC_DEPTH`
levels and holds no YAML anchors, aliases or merge keys (``&a``, ``*a``, ``<<``):
an alias bomb is refused before it expands.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
import reprlib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import MissingFileError, SpecError
from .limits import DEFAULT_LIMITS

__all__ = ["ModalitySpec", "LabelSpec", "StudySpec", "SPEC_FORMAT", "MAX_SPEC_BYTES", "MAX_SPEC_DEPTH",
           "SPACING_RANGE_MM", "present_input_name", "KINDS", "KIND_MODALITIES", "SeriesSelect", "SELECT_DEFAULTS",
           "PREFERENCES", "check_nifti_pattern"]

SPEC_FORMAT = 1
KINDS = ("ct", "mr", "xray")

#: The one table of modality kinds: spec ``kind`` -> the DICOM Modality values (PS3.3
#: C.7.3.1.1.1) a source of that kind may carry. Validation checks headers against it,
#: the readers treat the ``xray`` values as projection radiographs (no patient-space
#: geometry), and error messages map a header Modality back to the spec's name with it.
#: ``DR`` (retired) and ``RG`` still appear in exports.
KIND_MODALITIES: dict[str, tuple[str, ...]] = {
    "ct": ("CT",),
    "mr": ("MR",),
    "xray": ("CR", "DX", "DR", "RG", "PX", "MG", "RF", "XA", "IO", "DF"),
}
REGISTER = ("none", "rigid", "auto")
CROP = ("center", "body")
ENCODINGS = ("int", "onehot")

#: Largest spec file read (bytes); real specs are under 4 KiB.
MAX_SPEC_BYTES = 2**20
#: Deepest YAML nesting accepted in a spec (real specs nest 6 levels: spec, modalities,
#: modality, intensity, windows, window).
MAX_SPEC_DEPTH = 16
#: Smallest and largest voxel/pixel spacing accepted in ``spacing_mm`` (millimetres).
SPACING_RANGE_MM = (1e-3, 1e4)

# Plain decimal text YAML 1.1 leaves as a string (``1e9``, ``+2``); never nan/inf/hex.
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 40
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = 4
_SHOW.maxlevel = 2


def _show(value: Any) -> str:
    """A short repr of a spec value for a message (bounded, whatever the value holds)."""
    return _SHOW.repr(value)

# Intensity keys accepted per kind, with defaults. Values are checked by
# medmulti.intensity when used; here only the key names and obvious types.
INTENSITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ct": {"windows": ["brain"]},
    "mr": {"method": "percentile", "percentiles": [1.0, 99.0], "n4": False},
    "xray": {"method": "voi", "percentiles": [1.0, 99.0], "clahe": False},
}


# How ``medmulti scan`` chooses one series per modality and patient (``select:`` in a
# modality). A key given in the spec replaces its default; see docs/scan.md.
SELECT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ct": {
        "modalities": ["CT"],
        "exclude_image_type": ["LOCALIZER", "DERIVED", "SECONDARY", "PROJECTION IMAGE"],
        "include": [],
        "exclude": ["scout", "localizer", "localiser", "topogram", "surview", "scanogram", "pilot", "bolus",
                    "monitoring"],
        "min_images": 3,
        "prefer": ["readable", "original", "axial", "most_images", "thinnest"],
        "nifti": [],
    },
    "mr": {
        "modalities": ["MR"],
        "exclude_image_type": ["LOCALIZER", "DERIVED", "SECONDARY", "PROJECTION IMAGE"],
        "include": [],
        "exclude": ["localizer", "localiser", "scout", "pilot", "survey", "3-plane", "3 plane"],
        "min_images": 3,
        "prefer": ["readable", "original", "3d", "most_images", "thinnest"],
        "nifti": [],
    },
    "xray": {
        "modalities": ["CR", "DX", "DR", "RG"],
        "exclude_image_type": ["LOCALIZER"],
        "include": [],
        "exclude": [],
        "min_images": 1,
        "prefer": ["view:PA", "view:AP", "original", "largest"],
        "nifti": [],
    },
}
#: Preferences ``select.prefer`` may name, besides ``view:<ViewPosition>`` and
#: ``description:<pattern>`` (see :class:`SeriesSelect`).
PREFERENCES = ("readable", "original", "axial", "coronal", "sagittal", "3d", "most_images", "fewest_images",
               "thinnest", "largest")
_PREFERENCE_PREFIXES = ("view:", "description:")
_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")  # a CS value (PS3.5 6.2): upper case, digits, space, underscore
_MAX_PATTERN = 200


@dataclass(frozen=True)
class SeriesSelect:
    """How ``medmulti scan`` chooses one series (or X-ray image) per modality and patient.

    A modality's ``select:`` block in the spec overrides these per key; the rest
    come from :data:`SELECT_DEFAULTS` for its kind (:attr:`ModalitySpec.selection`
    gives the merged rules). Rules leave series out, in this order; preferences
    then rank what is left.

    Parameters
    ----------
    modalities : tuple of str
        DICOM Modality codes taken (PS3.3 C.7.3.1.1.1), a subset of
        ``KIND_MODALITIES[kind]``.
    exclude_image_type : tuple of str
        A series whose ImageType (PS3.3 C.7.6.1.1.2) holds one of these values in
        any file is left out (``LOCALIZER``, ``DERIVED``, ``SECONDARY``,
        ``PROJECTION IMAGE`` for CT and MR).
    include : tuple of str
        When not empty, only series whose SeriesDescription or ProtocolName
        matches one of these patterns are taken.
    exclude : tuple of str
        Series whose SeriesDescription or ProtocolName matches one of these
        patterns are left out. Patterns are case-insensitive; ``*`` and ``?``
        are wildcards over the whole text, and a pattern without them matches
        anywhere in it (``scout`` matches ``CT Scout 2``).
    min_images : int
        Fewer images (frames) than this: left out as a localizer or a tiny series.
    prefer : tuple of str
        Preferences in order, each one of :data:`PREFERENCES`,
        ``view:<ViewPosition>`` (e.g. ``view:PA``; the X-ray's ViewPosition, else a
        word of its SeriesDescription) or ``description:<pattern>``.
    nifti : tuple of str
        Glob patterns of NIfTI files under the scanned folder, relative to it, with
        ``{key}`` where the patient's identifier stands (``*`` one path component,
        ``**`` any number); without ``{key}``, a ``sub-<key>`` folder of the path
        (BIDS) names the patient. A NIfTI file found this way is taken for the
        modality in preference to DICOM series.
    """

    modalities: tuple[str, ...]
    exclude_image_type: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    min_images: int
    prefer: tuple[str, ...]
    nifti: tuple[str, ...]


def _text_list(value: Any, key: str, where: str, *, upper: bool = False) -> list[str]:
    """A list of short non-empty texts (a single text is a one-item list)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{where}: select.{key} must be a list of texts, got {_show(value)}", keyword=key)
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
            raise SpecError(f"{where}: select.{key} must hold non-empty texts, got {_show(item)}", keyword=key)
        text = str(item).strip()
        if len(text) > _MAX_PATTERN or not text.isprintable():
            raise SpecError(f"{where}: select.{key} holds a text longer than {_MAX_PATTERN} characters or with "
                            "control characters", keyword=key)
        out.append(text.upper() if upper else text)
    return out


def check_nifti_pattern(pattern: str, where: str) -> None:
    """Refuse a NIfTI pattern of ``select.nifti`` (or ``--nifti``) that could leave the folder scanned.

    Parameters
    ----------
    pattern : str
        Relative to the folder scanned; ``{key}`` at most once, in a component without ``*``.
    where : str
        Where it was given, for the message.

    Raises
    ------
    SpecError
        Absolute, ``..``, empty components, a drive letter, ``{key}`` twice or beside
        ``*``, other braces.
    """
    parts = pattern.replace("\\", "/").split("/")
    if pattern.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", pattern) or ".." in parts or "" in parts:
        raise SpecError(f"{where}: select.nifti patterns are relative to the scanned folder, without '..' or "
                        f"empty components, got {_show(pattern)}", keyword="nifti")
    if pattern.count("{key}") > 1 or any(p.count("{key}") and p.count("*") for p in parts) \
            or re.search(r"\{(?!key\})|(?<!\{key)\}", pattern):
        raise SpecError(f"{where}: select.nifti: '{{key}}' may appear once, in a component without '*', and no "
                        f"other braces, got {_show(pattern)}", keyword="nifti")


def _check_select(data: Any, kind: str, where: str) -> dict[str, Any]:
    """Check a modality's ``select:`` overrides; return them normalised (lists, stripped, codes upper case)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: select must be a mapping", keyword="select")
    defaults = SELECT_DEFAULTS[kind]
    _check_keys(data, list(defaults), f"{where} select")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "min_images":
            n = _number(value, "min_images", where, integer=True)
            if n < 1:
                raise SpecError(f"{where}: select.min_images must be at least 1, got {_show(value)}",
                                keyword="min_images")
            out[key] = n
            continue
        items = _text_list(value, key, where, upper=key in ("modalities", "exclude_image_type"))
        if key == "modalities":
            bad = [m for m in items if m not in KIND_MODALITIES[kind]]
            if not items or bad:
                raise SpecError(f"{where}: select.modalities must be DICOM Modality codes of kind {kind!r} "
                                f"({list(KIND_MODALITIES[kind])}), got {_show(items)}", keyword="modalities")
        elif key == "exclude_image_type":
            bad = [m for m in items if not _CODE.fullmatch(m)]
            if bad:
                raise SpecError(f"{where}: select.exclude_image_type holds ImageType values (upper-case codes), "
                                f"got {_show(bad[0])}", keyword="exclude_image_type")
        elif key == "prefer":
            for item in items:
                prefix = next((p for p in _PREFERENCE_PREFIXES if item.lower().startswith(p)), None)
                if prefix is None and item.lower() not in PREFERENCES:
                    raise SpecError(f"{where}: select.prefer: unknown preference {_show(item)}; use "
                                    f"{list(PREFERENCES)}, 'view:<ViewPosition>' or 'description:<pattern>'",
                                    keyword="prefer")
                if prefix is not None and not item[len(prefix):].strip():
                    raise SpecError(f"{where}: select.prefer: {_show(item)} names nothing after {prefix!r}",
                                    keyword="prefer")
            items = [i.lower() if i.lower() in PREFERENCES else
                     next(p for p in _PREFERENCE_PREFIXES if i.lower().startswith(p)) + i.split(":", 1)[1].strip()
                     for i in items]
            if len(set(items)) != len(items):
                raise SpecError(f"{where}: select.prefer names a preference twice", keyword="prefer")
        elif key == "nifti":
            for item in items:
                check_nifti_pattern(item, where)
        out[key] = items
    return out


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise SpecError(f"keys in {where} must be text, got {_show(odd[0])}", keyword=str(odd[0])[:40])
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(
            f"unknown key(s) {_show(unknown)} in {where}; allowed keys are {sorted(allowed)}",
            keyword=unknown[0][:40],
        )


def _is_number(value: Any) -> bool:
    """A real number that is not a boolean (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _number(value: Any, key: str, where: str, *, integer: bool = False) -> float | int:
    """One finite number from the spec: a YAML number or plain decimal text, never a bool, NaN or inf."""
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        value = int(value) if integer and value.strip().lstrip("+-").isdigit() else float(value)
    if not _is_number(value):
        raise SpecError(f"{where}: {key} must hold numbers, got {_show(value)}", keyword=key)
    try:
        f = float(value)
    except OverflowError:  # an integer beyond float's range
        f = math.inf
    if not math.isfinite(f):
        raise SpecError(f"{where}: {key} must hold finite numbers, got {_show(value)}", keyword=key)
    if not integer:
        return f
    if isinstance(value, numbers.Integral):
        return int(value)
    if f != math.floor(f):
        raise SpecError(f"{where}: {key} must hold integers, got {_show(value)}", keyword=key)
    return int(f)


def _pair(value: Any, key: str, where: str, what: str) -> list[Any]:
    """Two finite numbers ``[low, high]`` with ``low < high``; text converted, numbers kept as given."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SpecError(f"{where}: {key} must be {what}, got {_show(value)}", keyword=key)
    lo, hi = (_number(v, key, where) for v in value)
    if not lo < hi:
        raise SpecError(f"{where}: {key} must be {what} with low < high, got {_show(value)}", keyword=key)
    return [v if _is_number(v) else float(v) for v in value]


def _tuple_of(value: Any, n: int | None, kind: type, key: str, where: str,
              positive: bool = True) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if _is_number(value) or (isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip())):
        if n is None:
            raise SpecError(f"{where}: {key} must be a list", keyword=key)
        value = [value] * n
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        raise SpecError(f"{where}: {key} must be a list of {n} numbers, got {_show(value)}", keyword=key)
    out = tuple(kind(_number(v, key, where, integer=kind is int)) for v in value)
    if positive and any(v <= 0 for v in out):
        raise SpecError(f"{where}: {key} must be positive, got {_show(value)}", keyword=key)
    return out


def _check_intensity(opts: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """Check every number and flag of a modality's merged intensity settings; return them normalised."""
    if kind == "ct":
        w = opts["windows"]
        if isinstance(w, str):
            w = [w]
        if not isinstance(w, (list, tuple)):
            raise SpecError(f"{where}: intensity.windows must be a list, got {_show(w)}", keyword="windows")
        if not w:
            raise SpecError(f"{where}: intensity.windows needs at least one window", keyword="windows")
        windows: list[Any] = []
        for item in w:
            if isinstance(item, str):
                windows.append(item)
                continue
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise SpecError(f"{where}: a window is a preset name or [center, width] in HU, got {_show(item)}",
                                keyword="windows")
            center, width = (_number(v, "windows", where) for v in item)
            if width <= 0:
                raise SpecError(f"{where}: a window's width must be positive (HU), got {_show(item)}",
                                keyword="windows")
            windows.append([center, width])
        opts["windows"] = windows
    if "percentiles" in opts:
        pct = _pair(opts["percentiles"], "percentiles", where, "[low, high] percentiles")
        if not all(0.0 <= float(v) <= 100.0 for v in pct):
            raise SpecError(f"{where}: percentiles must lie in [0, 100], got {_show(pct)}", keyword="percentiles")
        opts["percentiles"] = pct
    if opts.get("clip") is not None:
        opts["clip"] = _pair(opts["clip"], "clip", where, "[low, high]")
    for flag in ("n4", "clahe", "zscore_foreground"):
        if flag in opts and not isinstance(opts[flag], bool):
            raise SpecError(f"{where}: intensity.{flag} must be true or false, got {_show(opts[flag])}",
                            keyword=flag)
    if "method" in opts and not isinstance(opts["method"], str):
        raise SpecError(f"{where}: intensity.method must be a name, got {_show(opts['method'])}", keyword="method")
    return opts


def present_input_name(modality: str) -> str:
    """Name of the presence input of ``modality`` (``"<name>_present"``).

    :func:`~medmulti.models.build_fusion_model` gives each optional modality a Keras input of
    this name (shape ``(1,)``: 1 present, 0 missing), and the sequences yield
    the flag under the same key.

    Parameters
    ----------
    modality : str
        Modality name as in the spec (not checked against any spec).

    Returns
    -------
    str
        ``modality + "_present"``.

    Examples
    --------
    >>> present_input_name("xray")
    'xray_present'
    """
    return f"{modality}_present"


@dataclass
class ModalitySpec:
    """How one modality is read and prepared for one Keras input.

    Parameters
    ----------
    name : str
        Keras input name and manifest column (a Python identifier, e.g. ``"ct"``).
    kind : {"ct", "mr", "xray"}
        What the images are; selects the intensity step.
    dims : {2, 3}
        Spatial dimensions of the model input (X-rays are 2, CT/MR 3 by default).
    spacing_mm : tuple of float, optional
        Target voxel/pixel spacing in array axis order, mm. ``None`` keeps the
        reference image's spacing (3D) or is ignored (2D X-rays are resized to ``shape``).
    shape : tuple of int, optional
        Target spatial shape in array axis order. Required for 2D modalities.
    reference : bool
        This 3D modality defines the study's grid. At most one; if none is marked,
        the first 3D ``ct`` modality (else the first 3D one) is the reference.
    register : {"none", "rigid", "auto"}
        For non-reference 3D modalities: ``"rigid"`` always refines the header
        alignment by registration, ``"auto"`` does so only when the frames of
        reference differ, ``"none"`` never.
    crop : {"center", "body"}
        Crop/pad the reference grid around the image centre or the body's bounding box.
    required : bool
        A patient without this modality is a validation problem.
    intensity : dict
        Per-kind settings, see ``INTENSITY_DEFAULTS`` and :mod:`medmulti.intensity`.
    select : dict
        How ``medmulti scan`` chooses this modality's series: overrides of
        :data:`SELECT_DEFAULTS` for the kind, key by key (see :class:`SeriesSelect`;
        :attr:`selection` merges them). Does not change how an image is read or
        prepared; empty (the default) is left out of :meth:`to_dict`.
    """

    name: str
    kind: str
    dims: int | None = None
    spacing_mm: tuple[float, ...] | None = None
    shape: tuple[int, ...] | None = None
    reference: bool = False
    register: str = "auto"
    crop: str = "center"
    required: bool = True
    intensity: dict[str, Any] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"modality {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise SpecError(f"modality name must be a Python identifier, got {self.name!r}", keyword="name")
        if self.name.endswith(present_input_name("")):
            raise SpecError(f"{where}: names ending in '_present' are reserved", keyword="name")
        if self.kind not in KINDS:
            raise SpecError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}", keyword="kind")
        if self.dims is None:
            self.dims = 2 if self.kind == "xray" else 3
        if not _is_number(self.dims) or self.dims not in (2, 3):
            raise SpecError(f"{where}: dims must be 2 or 3, got {_show(self.dims)}", keyword="dims")
        self.dims = int(self.dims)
        if self.kind == "xray" and self.dims != 2:
            raise SpecError(f"{where}: xray modalities are 2D (dims: 2)", keyword="dims")
        self.spacing_mm = _tuple_of(self.spacing_mm, self.dims, float, "spacing_mm", where)
        low, high = SPACING_RANGE_MM
        if self.spacing_mm is not None and not all(low <= v <= high for v in self.spacing_mm):
            raise SpecError(f"{where}: spacing_mm must lie between {low} and {high:g} mm, got "
                            f"{_show(list(self.spacing_mm))}", keyword="spacing_mm")
        self.shape = _tuple_of(self.shape, self.dims, int, "shape", where)
        if self.dims == 2 and self.shape is None:
            raise SpecError(f"{where}: 2D modalities need a shape, e.g. shape: [128, 128]", keyword="shape")
        if self.register not in REGISTER:
            raise SpecError(f"{where}: register must be one of {REGISTER}, got {self.register!r}", keyword="register")
        if self.crop not in CROP:
            raise SpecError(f"{where}: crop must be one of {CROP}, got {self.crop!r}", keyword="crop")
        for key in ("reference", "required"):
            if not isinstance(getattr(self, key), bool):
                raise SpecError(f"{where}: {key} must be true or false", keyword=key)
        if self.reference and self.dims != 3:
            raise SpecError(f"{where}: only a 3D modality can be the reference", keyword="reference")
        if not isinstance(self.intensity, Mapping):
            raise SpecError(f"{where}: intensity must be a mapping", keyword="intensity")
        defaults = INTENSITY_DEFAULTS[self.kind]
        _check_keys(self.intensity, list(defaults) + ["clip", "zscore_foreground"], f"{where} intensity")
        merged = dict(defaults)
        merged.update(self.intensity)
        self.intensity = _check_intensity(merged, self.kind, where)
        self.select = _check_select({} if self.select is None else self.select, self.kind, where)
        if self.shape is not None:
            voxels = math.prod(self.shape) * self.channels
            if voxels > DEFAULT_LIMITS.max_voxels:
                raise SpecError(
                    f"{where}: shape {_show(list(self.shape))} x {self.channels} channel(s) is {voxels:,} values "
                    f"per patient, more than the {DEFAULT_LIMITS.max_voxels:,}-voxel cap", keyword="shape",
                    hint="choose a smaller shape (or a coarser spacing_mm); medmulti.io.Limits.max_voxels is the "
                         "cap")

    @property
    def channels(self) -> int:
        """Number of channels of the model input (CT: one per window; else 1)."""
        return len(self.intensity["windows"]) if self.kind == "ct" else 1

    @property
    def selection(self) -> SeriesSelect:
        """The series-choice rules of this modality: its ``select`` overrides on the kind's defaults.

        Returns
        -------
        SeriesSelect

        Examples
        --------
        >>> ModalitySpec(name="ct", kind="ct", select={"min_images": 20}).selection.min_images
        20
        >>> ModalitySpec(name="xray", kind="xray", shape=(64, 64)).selection.prefer[0]
        'view:PA'
        """
        merged: dict[str, Any] = dict(SELECT_DEFAULTS[self.kind], **self.select)
        return SeriesSelect(
            modalities=tuple(merged["modalities"]), exclude_image_type=tuple(merged["exclude_image_type"]),
            include=tuple(merged["include"]), exclude=tuple(merged["exclude"]), min_images=int(merged["min_images"]),
            prefer=tuple(merged["prefer"]), nifti=tuple(merged["nifti"]))

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """``(*shape, channels)`` when ``shape`` is set, else ``None``."""
        return None if self.shape is None else (*self.shape, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (YAML-ready, lists not tuples)."""
        out = dataclasses.asdict(self)
        for key in ("spacing_mm", "shape"):
            if out[key] is not None:
                out[key] = list(out[key])
        if not out["select"]:  # the defaults: kept out, so specs without select stay as they were
            del out["select"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModalitySpec":
        """Build from a mapping, refusing unknown keys.

        Parameters
        ----------
        data : Mapping
            Keys as in the dataclass fields: ``name`` and ``kind`` required, the
            others optional (class defaults). Values are passed to the
            constructor, which checks and normalises them.

        Returns
        -------
        ModalitySpec

        Raises
        ------
        SpecError
            ``data`` is not a mapping, has unknown keys or lacks ``name`` or
            ``kind``, or a value the class refuses (see :class:`ModalitySpec`).
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"each modality must be a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        _check_keys(data, names, f"modality {data.get('name', '?')!r}")
        for key in ("name", "kind"):
            if key not in data:
                raise SpecError(f"a modality is missing the required key {key!r}", keyword=key)
        return cls(**dict(data))


@dataclass
class LabelSpec:
    """The diagnosis labels.

    Parameters
    ----------
    classes : list of str
        Class names, in output order.
    column : str, optional
        Single-label: the manifest column holding one class name per row.
    columns : list of str, optional
        Multi-label: one 0/1 manifest column per class (then ``classes`` equals
        ``columns`` and may be omitted).
    encoding : {"onehot", "int"}
        Single-label targets as one-hot vectors or integer class indices.
        Multi-label targets are always multi-hot.
    """

    classes: list[str] = field(default_factory=list)
    column: str | None = None
    columns: list[str] | None = None
    encoding: str = "onehot"

    def __post_init__(self) -> None:
        if (self.column is None) == (self.columns is None):
            raise SpecError("labels need exactly one of 'column' (single-label) or 'columns' (multi-label)",
                            keyword="labels")
        if self.columns is not None:
            self.columns = [str(c) for c in self.columns]
            if not self.columns:
                raise SpecError("labels.columns must not be empty", keyword="columns")
            if not self.classes:
                self.classes = list(self.columns)
            if list(self.classes) != self.columns:
                raise SpecError("for multi-label specs classes must equal columns", keyword="classes")
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) < 2 and self.columns is None:
            raise SpecError("a single-label spec needs at least two classes", keyword="classes")
        if len(set(self.classes)) != len(self.classes):
            raise SpecError("labels.classes has duplicates", keyword="classes")
        if self.encoding not in ENCODINGS:
            raise SpecError(f"labels.encoding must be one of {ENCODINGS}, got {self.encoding!r}", keyword="encoding")

    @property
    def multi_label(self) -> bool:
        """True for multi-label (sigmoid) diagnoses."""
        return self.columns is not None

    @property
    def manifest_columns(self) -> list[str]:
        """The manifest columns that hold labels."""
        return list(self.columns) if self.columns is not None else [self.column]  # type: ignore[list-item]

    @property
    def num_classes(self) -> int:
        """Number of classes (model outputs)."""
        return len(self.classes)

    def encode(self, values: Mapping[str, str]) -> np.ndarray:
        """Encode one manifest row's label cells as a model target.

        Parameters
        ----------
        values : Mapping[str, str]
            Label column name -> cell text.

        Returns
        -------
        numpy.ndarray
            float32 one-hot/multi-hot of length ``num_classes``, or an int64
            scalar class index for ``encoding="int"``.

        Raises
        ------
        SpecError
            An unknown class name or a multi-label cell that is not 0/1.
        """
        if self.columns is not None:
            out = np.zeros(len(self.columns), np.float32)
            for i, col in enumerate(self.columns):
                cell = str(values.get(col, "")).strip().lower()
                if cell in ("1", "1.0", "true", "yes"):
                    out[i] = 1.0
                elif cell not in ("0", "0.0", "false", "no"):
                    raise SpecError(f"label column {col!r} must hold 0 or 1", keyword=col)
            return out
        cell = str(values.get(self.column, "")).strip()  # type: ignore[arg-type]
        if cell not in self.classes:
            raise SpecError(f"label in column {self.column!r} is not one of the classes {self.classes}",
                            keyword=self.column)
        idx = self.classes.index(cell)
        if self.encoding == "int":
            return np.asarray(idx, dtype=np.int64)  # a 0-d array: the class index
        out = np.zeros(len(self.classes), np.float32)
        out[idx] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (YAML-ready)."""
        out: dict[str, Any] = {"classes": list(self.classes), "encoding": self.encoding}
        if self.columns is not None:
            out["columns"] = list(self.columns)
        else:
            out["column"] = self.column
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelSpec":
        """Build from a mapping, refusing unknown keys (see class doc).

        Parameters
        ----------
        data : Mapping
            Keys ``classes``, ``column``, ``columns``, ``encoding`` (all
            optional here; the class checks their combination).

        Returns
        -------
        LabelSpec

        Raises
        ------
        SpecError
            ``data`` is not a mapping or has unknown keys; neither or both of
            ``column`` and ``columns``; an empty ``columns``; ``classes`` not
            equal to ``columns`` (multi-label); fewer than two classes
            (single-label); duplicate classes; or an unknown ``encoding``.
        """
        if not isinstance(data, Mapping):
            raise SpecError("labels must be a mapping", keyword="labels")
        _check_keys(data, ["classes", "column", "columns", "encoding"], "labels")
        return cls(**dict(data))


@dataclass
class StudySpec:
    """Everything a model needs to know about its inputs and targets.

    Parameters
    ----------
    modalities : list of ModalitySpec
        One per Keras input, unique names.
    labels : LabelSpec
        The diagnosis labels.
    name : str
        A short name for reports.
    format : int
        Spec format version (currently 1).
    """

    modalities: list[ModalitySpec]
    labels: LabelSpec
    name: str = ""
    format: int = SPEC_FORMAT

    def __post_init__(self) -> None:
        if isinstance(self.format, (bool, np.bool_)) or self.format != SPEC_FORMAT:
            raise SpecError(f"unsupported spec format {_show(self.format)}; this medmulti reads format {SPEC_FORMAT}",
                            keyword="format")
        if not self.modalities:
            raise SpecError("a spec needs at least one modality", keyword="modalities")
        names = [m.name for m in self.modalities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"modality names must be unique, duplicated: {dup}", keyword="name")
        clash = set(names) & set(self.labels.manifest_columns)
        if clash:
            raise SpecError(f"label columns clash with modality names: {sorted(clash)}", keyword="labels")
        refs = [m.name for m in self.modalities if m.reference]
        if len(refs) > 1:
            raise SpecError(f"at most one modality can be the reference, got {refs}", keyword="reference")

    # -- lookups ---------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Modality names in spec order (the Keras input order)."""
        return [m.name for m in self.modalities]

    def modality(self, name: str) -> ModalitySpec:
        """Return the modality called ``name``.

        Parameters
        ----------
        name : str
            Modality name (Keras input name / manifest column).

        Returns
        -------
        ModalitySpec
            The spec's own object (not a copy).

        Raises
        ------
        SpecError
            If there is none; the message lists the spec's modality names.
        """
        for m in self.modalities:
            if m.name == name:
                return m
        raise SpecError(f"no modality {name!r} in the spec; it has {self.names}", keyword="name")

    @property
    def reference(self) -> ModalitySpec | None:
        """The 3D reference modality (explicit, else first 3D CT, else first 3D), or ``None``."""
        three_d = [m for m in self.modalities if m.dims == 3]
        for m in three_d:
            if m.reference:
                return m
        for m in three_d:
            if m.kind == "ct":
                return m
        return three_d[0] if three_d else None

    # -- (de)serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (YAML-ready)."""
        return {
            "format": self.format,
            "name": self.name,
            "labels": self.labels.to_dict(),
            "modalities": [m.to_dict() for m in self.modalities],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StudySpec":
        """Build from a mapping (as loaded from YAML).

        Parameters
        ----------
        data : Mapping
            Keys ``labels`` (a mapping, see :meth:`LabelSpec.from_dict`) and
            ``modalities`` (a list of mappings, see
            :meth:`ModalitySpec.from_dict`), both required; ``name`` (default
            ``""``, converted to str) and ``format`` (default 1), optional.

        Returns
        -------
        StudySpec

        Raises
        ------
        SpecError
            Unknown keys or bad values, naming the key: ``data`` is not a
            mapping, has unknown top-level keys or lacks ``labels`` or
            ``modalities``; ``modalities`` is not a list; a modality or the
            labels are refused (see :meth:`ModalitySpec.from_dict` and
            :meth:`LabelSpec.from_dict`); or the
            whole is inconsistent (``format`` other than 1, no modality,
            duplicate modality names, label columns named like modalities, more
            than one reference).

        Examples
        --------
        >>> spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]},
        ...                             "modalities": [{"name": "ct", "kind": "ct"}]})
        >>> spec.names, spec.reference.name, spec.modality("ct").channels
        (['ct'], 'ct', 1)
        """
        if not isinstance(data, Mapping):
            raise SpecError("a spec must be a mapping at the top level")
        _check_keys(data, ["format", "name", "labels", "modalities"], "the spec")
        for key in ("labels", "modalities"):
            if key not in data:
                raise SpecError(f"the spec is missing the required key {key!r}", keyword=key)
        mods = data["modalities"]
        if not isinstance(mods, list):
            raise SpecError("modalities must be a list", keyword="modalities")
        name = data.get("name", "")
        if name is None:
            name = ""
        if not isinstance(name, (str, int, float)) or isinstance(name, bool):
            raise SpecError(f"the spec's name must be text, got {_show(name)}", keyword="name")
        return cls(
            modalities=[ModalitySpec.from_dict(m) for m in mods],
            labels=LabelSpec.from_dict(data["labels"]),
            name=str(name),
            format=data.get("format", SPEC_FORMAT),
        )

    @classmethod
    def from_yaml(cls, path: str | PathLike[str]) -> "StudySpec":
        """Load a spec from a YAML file.

        Parameters
        ----------
        path : str or PathLike
            The YAML file.

        Returns
        -------
        StudySpec

        Raises
        ------
        MissingFileError
            If the file does not exist or cannot be read.
        SpecError
            If it is larger than :data:`MAX_SPEC_BYTES`, not UTF-8, not valid
            YAML, holds YAML anchors or aliases, nests deeper than
            :data:`MAX_SPEC_DEPTH` or repeats a key in one mapping, or is not a
            valid spec (see :meth:`from_dict`).
        """
        p = Path(path)
        if not p.is_file():
            raise MissingFileError("spec file not found", path=p)
        try:
            with open(p, "rb") as fh:
                raw = fh.read(MAX_SPEC_BYTES + 1)
        except OSError:
            raise MissingFileError("the spec file cannot be read", path=p) from None
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"the spec file is larger than {MAX_SPEC_BYTES:,} bytes; a spec is a few hundred bytes",
                            path=p)
        try:
            data = load_spec_yaml(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise SpecError("the spec file is not UTF-8 text", path=p) from None
        except SpecError as exc:
            raise exc.with_context(path=p)
        try:
            return cls.from_dict(data)
        except SpecError as exc:
            raise exc.with_context(path=p)

    def to_yaml(self, path: str | PathLike[str]) -> None:
        """Write the spec as YAML (atomically).

        Parameters
        ----------
        path : str or PathLike
            Destination file.
        """
        import os
        import tempfile

        import yaml

        p = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@functools.lru_cache(maxsize=1)
def _spec_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses anchors, aliases, deep nesting and repeated keys."""
    import yaml

    class SpecLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
        """SafeLoader for specs: an alias bomb, a nesting bomb or a repeated key is a SpecError."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                mark = getattr(event, "start_mark", None)
                at = f" (line {mark.line + 1})" if mark is not None else ""
                raise SpecError(f"YAML anchors and aliases (&name, *name, <<: *name) are not allowed in a spec{at}",
                                hint="write each value out in full")
            self._depth += 1
            try:
                if self._depth > MAX_SPEC_DEPTH:
                    raise SpecError(f"the spec nests deeper than {MAX_SPEC_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in seen:
                    raise SpecError(f"the key {_show(key)} appears twice in one mapping "
                                    f"(line {key_node.start_mark.line + 1})", keyword=str(key)[:40])
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return SpecLoader


def load_spec_yaml(text: str) -> Any:
    """Parse spec YAML safely: plain data, no anchors or aliases, bounded nesting.

    Parameters
    ----------
    text : str
        The YAML document.

    Returns
    -------
    Any
        What ``yaml.safe_load`` returns for the same text (dicts, lists, scalars).

    Raises
    ------
    SpecError
        Longer than :data:`MAX_SPEC_BYTES` characters, not valid YAML, an anchor,
        an alias or a merge key, nesting deeper than :data:`MAX_SPEC_DEPTH`, or a
        key repeated in one mapping.

    Examples
    --------
    >>> load_spec_yaml("a: [1, 2]")
    {'a': [1, 2]}
    >>> load_spec_yaml("[&x 1, *x]")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    medmulti.errors.SpecError: YAML anchors and aliases are not allowed in a spec
    """
    import yaml

    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is larger than {MAX_SPEC_BYTES:,} characters; a spec is a few hundred bytes")
    try:
        return yaml.load(text, Loader=_spec_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"not valid YAML{at}: {type(exc).__name__}") from None
    except RecursionError:
        raise SpecError(f"the spec nests deeper than {MAX_SPEC_DEPTH} levels") from None
