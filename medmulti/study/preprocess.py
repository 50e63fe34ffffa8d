"""One study in, model-ready arrays out: read, co-register, window/normalise.

:func:`preprocess_study` is a pure function of ``(sources, spec)``:

1. **Reference grid.** The spec's reference modality (``reference: true``, else
   the first 3D CT, else the first 3D modality) is put in the canonical axial
   LPS orientation (axis permutation/flips only), at the spec's ``spacing_mm``
   (or its own), with the spec's ``shape`` (or whatever covers its field of
   view) centred on the image centre (``crop: center``) or the body's bounding
   box (``crop: body``). If the study lacks the reference modality, the next 3D
   modality of the spec that is present becomes the reference (recorded as
   ``meta["reference"]``, logged as a warning); use ``required: true`` and
   validation to refuse such studies instead.
2. **Other 3D modalities** are resampled (SimpleITK, linear) into that grid
   through the world coordinates of their headers -- one interpolation, from
   the original voxels. A modality with its own ``spacing_mm``/``shape`` gets a
   grid with the reference grid's orientation and centre at that sampling.
   Registration refines the header alignment when ``register: rigid``, or with
   ``register: auto`` when the frames of reference differ: both images carry a
   FrameOfReference digest (``meta["frame_of_reference"]``, or
   ``medmulti.io.inspect_source`` for paths) and the digests differ, or either
   image is a NIfTI file (which has no frame of reference, so header alignment
   with another file is not guaranteed). DICOM images without a digest keep the
   header alignment. The transform found is recorded in ``meta["registration"]``.
3. **2D X-rays** are not co-registered: normalised at full resolution, then
   resized preserving aspect and padded to ``shape``.
4. **Intensity**: CT windows stacked as channels (``[0, 1]``), MR percentile
   (``[0, 1]``) or z-score, X-ray VOI/percentiles (``[0, 1]``); see
   :mod:`medmulti.intensity`.

Outside the source's field of view CT is filled with air (-1000 HU, so 0 after
any window above air) and MR with 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Iterable, Mapping, Union

import numpy as np

from ..errors import MedmultiError, SpecError, UnsupportedDataError
from ..geometry import (
    Grid,
    body_center,
    canonical_transform,
    fill_value_for,
    fit_2d,
    make_grid,
    orientation_codes,
    reorient_canonical,
    resample_to,
    rigid_registration,
)
from ..image import Image
from ..intensity import correct_bias_n4, foreground_mask, normalize_mr, normalize_xray, voi_from_meta, window_channels
from ..io import inspect_source, read_image
from ..io.source_ref import SourceRef
from ..spec import ModalitySpec, StudySpec

__all__ = ["Preprocessed", "preprocess_study", "reference_grid"]

log = logging.getLogger("medmulti.preprocess")

Source = Union[str, "PathLike[str]", "SourceRef", Image, None]

#: DICOM Modality passed to the reader per spec kind (X-rays: whatever the file says).
_READER_MODALITY = {"ct": "CT", "mr": "MR", "xray": None}


@dataclass
class Preprocessed:
    """One modality of one study, ready for the model.

    Attributes
    ----------
    array : numpy.ndarray
        float32 ``(*spatial, channels)``: ``(z, y, x, c)`` for 3D modalities on
        the study grid, ``(rows, columns, c)`` for X-rays.
    affine : numpy.ndarray or None
        4x4 array-order LPS affine of the spatial axes (``None`` for X-rays).
    spacing : tuple of float
        Voxel/pixel size in mm, spatial axes in array order.
    meta : dict
        JSON-serialisable, no PHI: ``name``, ``kind``, ``modality``,
        ``reference``, ``grid``, ``source_shape``, ``source_spacing``,
        ``source_orientation``, ``registration`` (``None`` or the transform and
        diagnostics), ``intensity``, ``fill_value``...
    """

    array: np.ndarray
    affine: np.ndarray | None
    spacing: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape including the channel axis."""
        return tuple(self.array.shape)


# -- loading -------------------------------------------------------------------


def _is_nifti_path(source: Any) -> bool:
    if isinstance(source, Image) or source is None:
        return False
    name = SourceRef.coerce(source).path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _load(name: str, source: Source, mspec: ModalitySpec, patient_id: str | None) -> Image:
    if isinstance(source, Image):
        img = source
    else:
        ref = SourceRef.coerce(source)
        try:
            img = read_image(ref.path, modality=_READER_MODALITY[mspec.kind], **ref.read_kwargs())
        except MedmultiError as exc:
            raise exc.with_context(patient_id=patient_id, modality=name, path=ref.path)
    if mspec.dims == 3 and (img.ndim != 3 or img.affine is None):
        raise UnsupportedDataError(
            f"the spec declares a 3D {mspec.kind} volume but the source is a {img.ndim}D image without patient geometry",
            modality=name, patient_id=patient_id, path=None if isinstance(source, Image) else str(source),
            hint="point this modality at a volume (DICOM series folder or NIfTI), or declare it dims: 2",
        )
    if mspec.dims == 2 and img.ndim == 3:
        if img.shape[0] != 1:
            raise UnsupportedDataError(
                "the spec declares a 2D image but the source is a volume with several slices",
                modality=name, patient_id=patient_id, path=None if isinstance(source, Image) else str(source),
            )
        img = Image(img.array[0], None, img.spacing[1:], img.modality, dict(img.meta))
    return img


def _frame_digest(img: Image, source: Source) -> str | None:
    digest = img.meta.get("frame_of_reference")
    if digest is None and source is not None and not isinstance(source, Image):
        try:
            digest = inspect_source(source).digests.get("frame_of_reference")
        except (AttributeError, MedmultiError):
            digest = None
    return digest


def _is_nifti(img: Image, source: Source) -> bool:
    kind = str(img.meta.get("source", img.meta.get("kind", ""))).lower()
    return _is_nifti_path(source) or kind.startswith("nifti")


def _should_register(mode: str, ref: Image, ref_src: Source, img: Image, src: Source) -> tuple[bool, str]:
    if mode == "rigid":
        return True, "register: rigid"
    if mode == "none":
        return False, "register: none"
    if _is_nifti(ref, ref_src) or _is_nifti(img, src):  # checked first: no header reads needed
        return True, "NIfTI source has no frame of reference"
    a, b = _frame_digest(ref, ref_src), _frame_digest(img, src)
    if a is not None and b is not None:
        return (a != b), ("frames of reference differ" if a != b else "same frame of reference")
    return False, "no frame of reference recorded; header alignment"


# -- grid ----------------------------------------------------------------------


def reference_grid(image: Image, mspec: ModalitySpec) -> Grid:
    """The study grid a reference image and its spec define.

    Parameters
    ----------
    image : Image
        The reference 3D image.
    mspec : ModalitySpec
        Its spec (``spacing_mm``, ``shape``, ``crop``).

    Returns
    -------
    Grid
        Canonical axial LPS grid.
    """
    center = body_center(image) if mspec.crop == "body" else None
    return make_grid(image, mspec.spacing_mm, mspec.shape, center)


def _modality_grid(grid: Grid, mspec: ModalitySpec, is_reference: bool) -> Grid:
    if is_reference or (mspec.spacing_mm is None and mspec.shape is None):
        return grid
    return make_grid(grid, mspec.spacing_mm or grid.spacing, mspec.shape, grid.center)


# -- intensity -----------------------------------------------------------------


def _intensity_3d(mspec: ModalitySpec, values: np.ndarray, source: Image, spacing) -> np.ndarray:
    opts = mspec.intensity
    if mspec.kind == "ct":
        out = window_channels(values, opts["windows"])
    else:
        arr = values
        reference = source.array
        if opts.get("n4"):
            arr = correct_bias_n4(arr, spacing)
            reference = None
        mask = None
        if opts.get("method") == "zscore" and opts.get("zscore_foreground", True) is False:
            mask = np.ones(arr.shape, bool)
        elif opts.get("method") == "zscore":
            mask = foreground_mask(arr)
        out = normalize_mr(arr, opts["method"], percentiles=opts["percentiles"], reference=reference, mask=mask)[..., None]
    return _clip(out, opts)


def _clip(out: np.ndarray, opts: Mapping[str, Any]) -> np.ndarray:
    clip = opts.get("clip")
    if clip is None:
        return out
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise SpecError(f"intensity.clip must be [low, high], got {clip!r}", keyword="clip") from None
    return np.clip(out, lo, hi, out=out)


def _xray(name: str, img: Image, mspec: ModalitySpec) -> Preprocessed:
    opts = mspec.intensity
    voi = voi_from_meta(img.meta)
    array, window, photometric = img.array, voi["window"], voi["photometric"]
    value_range = img.meta.get("value_range")
    if (img.meta.get("inverted") is True and window is not None and voi["lut"] is None
            and isinstance(value_range, (list, tuple)) and len(value_range) == 2):
        # The reader inverted MONOCHROME1 (v -> S - v) and mirrored the window centre. Undo both and
        # window the stored-order values, then invert the result: exactly pydicom's apply_voi_lut
        # followed by the display inversion (windowing the inverted values is off by one unit).
        total = float(value_range[0]) + float(value_range[1])
        array = np.float32(total) - np.asarray(array, np.float32)
        window = (total - window[0], window[1])
        photometric = "MONOCHROME1"
    values = normalize_xray(
        array, method=opts["method"], window=window, function=voi["function"],
        photometric=photometric, percentiles=opts["percentiles"], clahe=bool(opts["clahe"]), lut=voi["lut"],
    )
    out, info = fit_2d(values, mspec.shape)
    out = _clip(out[..., None], opts)
    spacing = tuple(float(s) / info["scale"] for s in img.spacing)
    meta = {
        "name": name, "kind": mspec.kind, "modality": img.modality, "reference": None,
        "source_shape": list(img.shape), "source_spacing": list(img.spacing), "resize": info,
        "voi": "lut" if voi["lut"] else ("window" if voi["window"] else "none"),
        "intensity": _jsonable(opts), "registration": None,
    }
    return Preprocessed(out.astype(np.float32, copy=False), None, spacing, meta)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _volume(m: ModalitySpec, img: Image, sources: Mapping[str, Source], ref_spec: ModalitySpec, ref_img: Image,
            grid: Grid, ref_on_grid: Image | None, patient_id: str | None) -> tuple[Preprocessed, Image | None]:
    """One 3D modality onto the study grid (and the reference on the grid, cached for registration)."""
    is_ref = m.name == ref_spec.name
    mgrid = _modality_grid(grid, m, is_ref)
    fill = fill_value_for(m.kind)
    registration = None
    reason = "reference"
    if is_ref:
        perm, _, can_affine = canonical_transform(img.affine, img.shape)
        if mgrid.shape == tuple(img.shape[p] for p in perm) and np.allclose(mgrid.affine, can_affine, atol=1e-6):
            on_grid = reorient_canonical(img)  # the grid is the image itself: no interpolation
        else:
            on_grid = resample_to(img, mgrid, fill_value=fill)
        ref_on_grid = on_grid if mgrid is grid else ref_on_grid
    else:
        do_register, reason = _should_register(m.register, ref_img, sources[ref_spec.name], img, sources[m.name])
        transform = None
        if do_register:
            if ref_on_grid is None:
                ref_on_grid = resample_to(ref_img, grid, fill_value=fill_value_for(ref_spec.kind))
            result = rigid_registration(ref_on_grid, img, modality=m.name)
            transform = result.matrix
            registration = result.to_dict()
            log.info("patient %s: %s registered (%.2f deg, %.2f mm)", patient_id or "?", m.name,
                     result.rotation_deg, result.shift_mm)
        on_grid = resample_to(img, mgrid, fill_value=fill, transform=transform)
    values = on_grid.array
    array = _intensity_3d(m, values, img, mgrid.spacing)
    meta = {
        "name": m.name,
        "kind": m.kind,
        "modality": img.modality,
        "reference": ref_spec.name,
        "grid": mgrid.to_dict(),
        "source_shape": list(img.shape),
        "source_spacing": list(img.spacing),
        "source_orientation": orientation_codes(img.affine),
        "alignment": reason,
        "registration": registration,
        "fill_value": fill,
        "intensity": _jsonable(m.intensity),
    }
    return Preprocessed(array.astype(np.float32, copy=False), mgrid.affine.copy(), mgrid.spacing, meta), ref_on_grid


# -- the study -----------------------------------------------------------------


def preprocess_study(
    sources: Mapping[str, Source],
    spec: StudySpec,
    *,
    patient_id: str | None = None,
    only: Iterable[str] | None = None,
) -> dict[str, Preprocessed]:
    """Read, co-register and normalise the modalities of one study.

    Parameters
    ----------
    sources : Mapping[str, path or SourceRef or Image or None]
        Spec modality name -> a path (DICOM file, DICOM series folder, NIfTI),
        a :class:`~medmulti.io.SourceRef` (a path with the series of a folder
        or the volume of a 4D file to read), an :class:`~medmulti.image.Image`,
        or ``None``/absent for a missing modality (skipped).
    spec : StudySpec
        The study spec (grid, registration and intensity settings).
    patient_id : str, optional
        The manifest's patient key, used in error messages only.
    only : iterable of str, optional
        Compute just these modality names; the reference is still read to build
        the grid.

    Returns
    -------
    dict[str, Preprocessed]
        Modality name -> float32 channels-last array, its geometry and
        metadata, in spec order, for every present (and requested) modality.

    Raises
    ------
    SpecError
        ``sources`` or ``only`` names a modality the spec does not have.
    UnsupportedDataError
        A source's dimensionality does not match the spec (2D file for a 3D
        modality, volume for an X-ray).
    RegistrationError
        Registration was needed and failed or diverged.
    MedmultiError
        Any reader error (missing/corrupt file, series geometry...), with the
        patient and modality filled in.

    Notes
    -----
    The rules (reference grid, fallback reference, when ``register: auto``
    registers, fill values) are in the module documentation.

    Examples
    --------
    >>> import numpy as np
    >>> from medmulti import Image, StudySpec
    >>> spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]}, "modalities": [
    ...     {"name": "ct", "kind": "ct", "spacing_mm": [2, 2, 2], "shape": [8, 8, 8],
    ...      "intensity": {"windows": ["brain", "bone"]}}]})
    >>> ct = Image(np.zeros((10, 16, 16), np.int16), np.eye(4), (1, 1, 1), "CT")
    >>> preprocess_study({"ct": ct}, spec)["ct"].array.shape
    (8, 8, 8, 2)
    """
    unknown = sorted(set(sources) - set(spec.names))
    if unknown:
        raise SpecError(f"sources name modalities the spec does not have: {unknown}; the spec has {spec.names}",
                        keyword="sources", patient_id=patient_id)
    wanted = list(spec.names) if only is None else list(only)
    bad = sorted(set(wanted) - set(spec.names))
    if bad:
        raise SpecError(f"only= names modalities the spec does not have: {bad}", keyword="only", patient_id=patient_id)
    present = [m for m in spec.modalities if sources.get(m.name) is not None]
    targets = [m for m in present if m.name in wanted]
    loaded: dict[str, Image] = {}

    def load(m: ModalitySpec) -> Image:
        if m.name not in loaded:
            loaded[m.name] = _load(m.name, sources[m.name], m, patient_id)
        return loaded[m.name]

    results: dict[str, Preprocessed] = {}
    three_d = [m for m in targets if m.dims == 3]
    ref_spec = None
    grid = None
    ref_img = None
    ref_on_grid: Image | None = None
    if three_d:
        ref_spec = spec.reference
        if ref_spec is None or sources.get(ref_spec.name) is None:
            fallback = next(m for m in present if m.dims == 3)
            log.warning("patient %s: reference modality %r missing; using %r for the grid",
                        patient_id or "?", None if ref_spec is None else ref_spec.name, fallback.name)
            ref_spec = fallback
        ref_img = load(ref_spec)
        grid = reference_grid(ref_img, ref_spec)
    order = sorted(targets, key=lambda m: 0 if (ref_spec is not None and m.name == ref_spec.name) else 1)
    for m in order:
        try:
            if m.dims == 2:
                results[m.name] = _xray(m.name, load(m), m)
            else:
                assert grid is not None and ref_spec is not None and ref_img is not None
                results[m.name], ref_on_grid = _volume(m, load(m), sources, ref_spec, ref_img, grid, ref_on_grid,
                                                       patient_id)
        except MedmultiError as exc:
            raise exc.with_context(patient_id=patient_id, modality=m.name)
    return {name: results[name] for name in spec.names if name in results}
