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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import SpecError

__all__ = ["ModalitySpec", "LabelSpec", "StudySpec", "SPEC_FORMAT"]

SPEC_FORMAT = 1
KINDS = ("ct", "mr", "xray")
REGISTER = ("none", "rigid", "auto")
CROP = ("center", "body")
ENCODINGS = ("int", "onehot")

# Intensity keys accepted per kind, with defaults. Values are checked by
# medmulti.intensity when used; here only the key names and obvious types.
INTENSITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "ct": {"windows": ["brain"]},
    "mr": {"method": "percentile", "percentiles": [1.0, 99.0], "n4": False},
    "xray": {"method": "voi", "percentiles": [1.0, 99.0], "clahe": False},
}


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise SpecError(
            f"unknown key(s) {unknown} in {where}; allowed keys are {sorted(allowed)}",
            keyword=unknown[0],
        )


def _tuple_of(value: Any, n: int | None, kind: type, key: str, where: str, positive: bool = True) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if n is None:
            raise SpecError(f"{where}: {key} must be a list", keyword=key)
        value = [value] * n
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        raise SpecError(f"{where}: {key} must be a list of {n} numbers, got {value!r}", keyword=key)
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {key} must hold numbers, got {value!r}", keyword=key) from None
    if kind is int and any(float(v) != int(v) for v in value):
        raise SpecError(f"{where}: {key} must hold integers, got {value!r}", keyword=key)
    if positive and any(v <= 0 for v in out):
        raise SpecError(f"{where}: {key} must be positive, got {value!r}", keyword=key)
    return out


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

    def __post_init__(self) -> None:
        where = f"modality {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise SpecError(f"modality name must be a Python identifier, got {self.name!r}", keyword="name")
        if self.name.endswith("_present"):
            raise SpecError(f"{where}: names ending in '_present' are reserved", keyword="name")
        if self.kind not in KINDS:
            raise SpecError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}", keyword="kind")
        if self.dims is None:
            self.dims = 2 if self.kind == "xray" else 3
        if self.dims not in (2, 3):
            raise SpecError(f"{where}: dims must be 2 or 3, got {self.dims!r}", keyword="dims")
        if self.kind == "xray" and self.dims != 2:
            raise SpecError(f"{where}: xray modalities are 2D (dims: 2)", keyword="dims")
        self.spacing_mm = _tuple_of(self.spacing_mm, self.dims, float, "spacing_mm", where)
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
        if self.kind == "ct":
            w = merged["windows"]
            if isinstance(w, (str, list, tuple)) and not isinstance(w, str):
                w = list(w)
            elif isinstance(w, str):
                w = [w]
            if not w:
                raise SpecError(f"{where}: intensity.windows needs at least one window", keyword="windows")
            for item in w:
                ok = isinstance(item, str) or (
                    isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(v, (int, float)) for v in item)
                )
                if not ok:
                    raise SpecError(
                        f"{where}: a window is a preset name or [center, width] in HU, got {item!r}", keyword="windows"
                    )
            merged["windows"] = [item if isinstance(item, str) else [float(v) for v in item] for item in w]
        self.intensity = merged

    @property
    def channels(self) -> int:
        """Number of channels of the model input (CT: one per window; else 1)."""
        return len(self.intensity["windows"]) if self.kind == "ct" else 1

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
            return np.int64(idx)  # type: ignore[return-value]
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
        if self.format != SPEC_FORMAT:
            raise SpecError(f"unsupported spec format {self.format!r}; this medmulti reads format {SPEC_FORMAT}",
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
        return cls(
            modalities=[ModalitySpec.from_dict(m) for m in mods],
            labels=LabelSpec.from_dict(data["labels"]),
            name=str(data.get("name", "")),
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
            If the file does not exist.
        SpecError
            If it is not valid YAML or not a valid spec.
        """
        import yaml

        from .errors import MissingFileError

        p = Path(path)
        if not p.is_file():
            raise MissingFileError("spec file not found", path=p)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SpecError(f"not valid YAML: {type(exc).__name__}", path=p) from None
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
