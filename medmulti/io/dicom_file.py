"""Read one DICOM file: a projection radiograph, a single CT/MR slice, or (through
:mod:`medmulti.io.dicom_enhanced`) an enhanced multi-frame CT/MR volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CorruptFileError, UnsupportedDataError
from ..image import Image, affine_from_itk
from .assembly import check_orientation
from .dicom_enhanced import read_enhanced
from .dicom_header import (
    NON_IMAGE_MODALITIES,
    PROJECTION_MODALITIES,
    UNKNOWN_SPACING_WARNING,
    DicomHeader,
    base_meta,
)
from .error_ladder import reader_errors
from .limits import Limits
from .pixels import read_stored
from .values import apply_modality_lut_into, apply_rescale_into, invert_monochrome1, output_range, voi_meta
from .volume_choice import no_volume_choice

__all__ = [
    "read_dicom_file",
    "is_projection",
    "NON_IMAGE_MODALITIES",
    "single_slice_spacing",
]


def is_projection(h: DicomHeader) -> bool:
    """Whether the object is a projection radiograph (2D, no patient-space geometry).

    Parameters
    ----------
    h : DicomHeader

    Returns
    -------
    bool
        True for CR/DX/MG/RF/XA/... modalities, and for other single-frame objects
        without ImagePositionPatient/ImageOrientationPatient (except CT/MR/PT,
        which must carry geometry).
    """
    if h.modality in PROJECTION_MODALITIES:
        return True
    if h.is_enhanced or h.modality in ("CT", "MR", "PT"):
        return False
    return "ImagePositionPatient" not in h.ds or "ImageOrientationPatient" not in h.ds


def single_slice_spacing(h: DicomHeader) -> float:
    """Slice spacing SimpleITK gives a one-slice volume: SpacingBetweenSlices, else 1 mm.

    SliceThickness is not used (SimpleITK does not use it either).

    Parameters
    ----------
    h : DicomHeader
        The slice's parsed header.

    Returns
    -------
    float
        SpacingBetweenSlices in mm (its first value if multi-valued) when it is
        present, parseable, finite and positive; else 1.0. Never raises for a
        bad value.
    """
    try:
        value = h.get("SpacingBetweenSlices")
        value = float(value[0] if isinstance(value, list) else (value or 0.0))
    except (TypeError, ValueError):
        value = 0.0
    return value if np.isfinite(value) and value > 0 else 1.0


def _check_supported(h: DicomHeader, limits: Limits) -> None:
    h.check_image(limits)


def _modality_values(h: DicomHeader, stored: np.ndarray) -> tuple[np.ndarray, tuple[float, float], dict[str, Any]]:
    """Stored values through the modality LUT: float32 output, its possible range, and the meta describing it.

    The Modality LUT Sequence when there is one (PS3.3 C.11.1, as pydicom's
    ``apply_modality_lut``), else RescaleSlope/RescaleIntercept.
    """
    out = np.empty(stored.shape, np.float32)
    lut = h.modality_lut()
    if lut is not None:
        apply_modality_lut_into(stored, out, lut)
        return out, lut.output_range, {
            "modality_lut": {"first_mapped": lut.first_mapped, "bits": lut.bits, "entries": int(len(lut.data))}
        }
    slope, intercept = h.rescale()
    apply_rescale_into(stored, out, slope, intercept)
    return out, output_range(h.bits_stored, h.signed, slope, intercept), {
        "rescale": {"slope": slope, "intercept": intercept}
    }


def _read_projection(h: DicomHeader, modality: str) -> Image:
    if h.frames != 1:
        raise UnsupportedDataError(
            "multi-frame projection images (cine, tomosynthesis) are not supported", path=h.name, keyword="NumberOfFrames"
        )
    spacing, spacing_source = h.projection_spacing()  # header checks before decoding
    out, (low, high), lut_meta = _modality_values(h, read_stored(h)[0])
    inverted = h.photometric == "MONOCHROME1"
    if inverted:
        invert_monochrome1(out, low, high)
    meta = base_meta(h)
    meta.update(lut_meta)
    meta.update({"inverted": inverted, "value_range": [low, high], "spacing_source": spacing_source})
    if spacing_source == "none":
        meta["warnings"] = [UNKNOWN_SPACING_WARNING]
    meta.update(voi_meta(h.ds, inverted=inverted, low=low, high=high))
    view = h.ds.get("ViewPosition", None)
    if view:
        meta["view_position"] = str(view).strip()[:16]
    return Image(out, None, spacing, modality, meta)


def _read_slice(h: DicomHeader, modality: str) -> Image:
    if h.frames != 1:
        raise UnsupportedDataError(
            "multi-frame objects without functional groups are not supported", path=h.name, keyword="NumberOfFrames"
        )
    ipp, iop, ps = h.position(), h.orientation(), h.pixel_spacing()
    for value, kw in ((ipp, "ImagePositionPatient"), (iop, "ImageOrientationPatient"), (ps, "PixelSpacing")):
        if value is None:
            raise CorruptFileError(f"a {modality} slice must carry {kw}", path=h.name, keyword=kw)
    if np.any(ps <= 0):
        raise CorruptFileError("pixel spacing must be positive", path=h.name, keyword="PixelSpacing")
    row, col, normal = check_orientation(iop, name=h.name)
    dz = single_slice_spacing(h)
    vol, _, lut_meta = _modality_values(h, read_stored(h))
    affine = affine_from_itk(ipp, (ps[1], ps[0], dz), np.column_stack([row, col, normal]).ravel())
    meta = base_meta(h)
    meta["source"] = "dicom-file"
    meta.update(lut_meta)
    meta.update(voi_meta(h.ds, inverted=False, low=0.0, high=0.0))
    return Image(vol, affine, (dz, float(ps[0]), float(ps[1])), modality, meta)


def read_dicom_file(h: DicomHeader, modality: str | None, limits: Limits, *, volume: int | None = None) -> Image:
    """Read one DICOM object into an :class:`Image`.

    Parameters
    ----------
    h : DicomHeader
        The parsed header (see :func:`~medmulti.io.dicom_header.read_header`).
    modality : str, optional
        Modality to record when the header has none.
    limits : Limits
        Caps.
    volume : int, optional
        0-based volume of a multi-stack enhanced object (see
        :func:`~medmulti.io.dicom_enhanced.enhanced_volumes` for their order); refused for other objects.

    Returns
    -------
    Image
        Projection radiographs: 2D ``(rows, columns)``, ``affine=None``.
        A CT/MR slice: ``(1, rows, columns)``. Enhanced multi-frame: ``(frames,
        rows, columns)`` sorted along the slice normal (the chosen volume's
        frames). float32 values after the modality LUT.

    Raises
    ------
    UnsupportedDataError
        Non-image objects, colour images, unsupported layouts; several volumes
        without ``volume=``, ``volume=`` out of range or given for a
        single-volume object.
    CorruptFileError
        Truncated or undecodable data, missing geometry.
    SeriesGeometryError
        Irregular frame geometry in an enhanced object.
    ResourceLimitError
        Declared sizes beyond ``limits``.
    """
    _check_supported(h, limits)
    mod = h.modality if h.ds.get("Modality", None) else (modality or "OT").upper()
    with reader_errors(
        h.name,
        memory="not enough memory for this image",
        corrupt="the DICOM header holds values that cannot be interpreted",  # pydicom value conversion
    ):
        if is_projection(h):
            if h.frames == 1:
                no_volume_choice(volume, "a projection image", h.name)
            return _read_projection(h, mod)
        if h.is_enhanced:
            return read_enhanced(h, mod, limits, volume)
        if h.frames == 1:
            no_volume_choice(volume, "a single-frame DICOM file", h.name)
        return _read_slice(h, mod)
