"""Read one DICOM file: a projection radiograph, a single CT/MR slice, or an
enhanced multi-frame CT/MR volume (geometry from the functional groups).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CorruptFileError, MedmultiError, SeriesGeometryError, UnsupportedDataError
from ..image import Image, affine_from_itk
from .assembly import assemble_stack, check_orientation
from .dicom_header import NON_IMAGE_MODALITIES, PROJECTION_MODALITIES, DicomHeader
from .limits import Limits
from .pixels import read_stored
from .values import apply_rescale_into, invert_monochrome1, output_range, rescale_of, voi_meta

__all__ = ["read_dicom_file", "enhanced_geometry", "is_projection", "NON_IMAGE_MODALITIES", "base_meta", "single_slice_spacing"]



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


def base_meta(h: DicomHeader) -> dict[str, Any]:
    """Non-identifying metadata shared by every DICOM reader (numbers and codes only)."""
    return {
        "source": "dicom",
        "photometric": h.photometric,
        "bits_stored": int(h.bits_stored),
        "bits_allocated": int(h.bits_allocated),
        "signed": bool(h.signed),
        "compressed": not h.is_native,
    }


def single_slice_spacing(h: DicomHeader) -> float:
    """Slice spacing SimpleITK gives a one-slice volume: SpacingBetweenSlices, else 1 mm."""
    try:
        value = h.get("SpacingBetweenSlices")
        value = float(value[0] if isinstance(value, list) else (value or 0.0))
    except (TypeError, ValueError):
        value = 0.0
    return value if np.isfinite(value) and value > 0 else 1.0


def _check_supported(h: DicomHeader, limits: Limits) -> None:
    h.check_image(limits)


def _read_projection(h: DicomHeader, modality: str) -> Image:
    if h.frames != 1:
        raise UnsupportedDataError(
            "multi-frame projection images (cine, tomosynthesis) are not supported", path=h.name, keyword="NumberOfFrames"
        )
    stored = read_stored(h)[0]
    slope, intercept = h.rescale()
    out = np.empty(stored.shape, np.float32)
    apply_rescale_into(stored, out, slope, intercept)
    low, high = output_range(h.bits_stored, h.signed, slope, intercept)
    inverted = h.photometric == "MONOCHROME1"
    if inverted:
        invert_monochrome1(out, low, high)
    spacing = h.pixel_spacing()
    spacing_source = "PixelSpacing"
    if spacing is None:
        spacing = h._floats("ImagerPixelSpacing", 2)
        spacing_source = "ImagerPixelSpacing"
    if spacing is None:
        spacing, spacing_source = np.array([1.0, 1.0]), "none"
    if np.any(spacing <= 0):
        raise CorruptFileError("pixel spacing must be positive", path=h.name, keyword=spacing_source)
    meta = base_meta(h)
    meta.update(
        {
            "inverted": inverted,
            "rescale": {"slope": slope, "intercept": intercept},
            "value_range": [low, high],
            "spacing_source": spacing_source,
        }
    )
    meta.update(voi_meta(h.ds, inverted=inverted, low=low, high=high))
    view = h.ds.get("ViewPosition", None)
    if view:
        meta["view_position"] = str(view).strip()[:16]
    return Image(out, None, (float(spacing[0]), float(spacing[1])), modality, meta)


def _fg_item(h: DicomHeader, shared: Any, frame: Any, seq: str):
    for group in (frame, shared):
        if group is None:
            continue
        items = group.get(seq, None)
        if items:
            return items[0]
    return None


def enhanced_geometry(h: DicomHeader):
    """Check an enhanced multi-frame object's functional groups (headers only).

    Parameters
    ----------
    h : DicomHeader

    Returns
    -------
    (Stack, numpy.ndarray, list of (float, float))
        Sorted frame geometry, PixelSpacing (row, column) and each frame's
        (RescaleSlope, RescaleIntercept) in file frame order.

    Raises
    ------
    CorruptFileError
        Missing or malformed functional groups.
    SeriesGeometryError
        Frames with different orientations/spacings, duplicates, gaps, tilt.

    Notes
    -----
    PS3.3 C.7.6.16 (Multi-frame Functional Groups): each attribute is taken from
    the frame's Per-frame item, else from the Shared item.
    """
    ds = h.ds
    shared_seq = ds.get("SharedFunctionalGroupsSequence", None)
    shared = shared_seq[0] if shared_seq else None
    per = ds.get("PerFrameFunctionalGroupsSequence", None) or []
    n = h.frames
    if len(per) != n:
        raise CorruptFileError(
            "PerFrameFunctionalGroupsSequence does not have one item per frame",
            path=h.name,
            keyword="PerFrameFunctionalGroupsSequence",
        )
    positions = np.empty((n, 3))
    iop0 = spacing = pm0 = None
    rescales = []
    for i, frame in enumerate(per):
        pp = _fg_item(h, shared, frame, "PlanePositionSequence")
        po = _fg_item(h, shared, frame, "PlaneOrientationSequence")
        pm = _fg_item(h, shared, frame, "PixelMeasuresSequence")
        if pp is None or po is None or pm is None:
            raise CorruptFileError(
                "a frame lacks its plane position, orientation or pixel measures", path=h.name, keyword="PlanePositionSequence"
            )
        pos = h._floats("ImagePositionPatient", 3, pp)
        iop = h._floats("ImageOrientationPatient", 6, po)
        ps = h._floats("PixelSpacing", 2, pm)
        if iop is None or ps is None or pos is None:
            raise CorruptFileError("a frame lacks its geometry", path=h.name, keyword="ImageOrientationPatient")
        positions[i] = pos
        if iop0 is None:
            iop0, spacing, pm0 = iop, ps, pm
        elif np.max(np.abs(iop - iop0)) > 1e-4:
            raise SeriesGeometryError(
                f"frames have different orientations (frame {i + 1} differs from frame 1)",
                path=h.name,
                keyword="ImageOrientationPatient",
            )
        elif np.max(np.abs(ps - spacing)) > 1e-4 * max(1.0, float(spacing.max())):
            raise SeriesGeometryError(f"frames have different pixel spacing (frame {i + 1})", path=h.name, keyword="PixelSpacing")
        pvt = _fg_item(h, shared, frame, "PixelValueTransformationSequence")
        rescales.append(rescale_of(pvt if pvt is not None else ds))
    if np.any(spacing <= 0):
        raise CorruptFileError("pixel spacing must be positive", path=h.name, keyword="PixelSpacing")
    sbs = pm0.get("SpacingBetweenSlices", None)
    try:
        single = float(sbs) if sbs not in (None, "") and float(sbs) > 0 else 1.0
    except (TypeError, ValueError):
        single = 1.0
    stack = assemble_stack(positions, iop0, [f"frame {i + 1}" for i in range(n)], what="frame", where=h.name, single_spacing=single)
    return stack, spacing, rescales


def _read_enhanced(h: DicomHeader, modality: str, limits: Limits) -> Image:
    stack, spacing, rescales = enhanced_geometry(h)
    n = h.frames
    stored = read_stored(h)
    vol = np.empty((n, h.rows, h.columns), np.float32)
    for k, src in enumerate(stack.order):
        slope, intercept = rescales[src]
        apply_rescale_into(stored[src], vol[k], slope, intercept)
    del stored
    affine = affine_from_itk(stack.origin, (spacing[1], spacing[0], stack.slice_spacing), stack.direction.ravel())
    meta = base_meta(h)
    meta["source"] = "dicom-multiframe"
    meta["n_frames"] = n
    meta["rescale"] = _rescale_meta([rescales[i] for i in stack.order])
    meta.update(voi_meta(h.ds, inverted=False, low=0.0, high=0.0))
    return Image(vol, affine, (stack.slice_spacing, float(spacing[0]), float(spacing[1])), modality, meta)


def _rescale_meta(rescales: list[tuple[float, float]]) -> Any:
    first = rescales[0]
    if all(r == first for r in rescales):
        return {"slope": first[0], "intercept": first[1]}
    return {"per_slice": True}


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
    stored = read_stored(h)
    vol = np.empty(stored.shape, np.float32)
    slope, intercept = h.rescale()
    apply_rescale_into(stored, vol, slope, intercept)
    affine = affine_from_itk(ipp, (ps[1], ps[0], dz), np.column_stack([row, col, normal]).ravel())
    meta = base_meta(h)
    meta["source"] = "dicom-file"
    meta["rescale"] = {"slope": slope, "intercept": intercept}
    meta.update(voi_meta(h.ds, inverted=False, low=0.0, high=0.0))
    return Image(vol, affine, (dz, float(ps[0]), float(ps[1])), modality, meta)


def read_dicom_file(h: DicomHeader, modality: str | None, limits: Limits) -> Image:
    """Read one DICOM object into an :class:`Image`.

    Parameters
    ----------
    h : DicomHeader
        The parsed header (see :func:`~medmulti.io.dicom_header.read_header`).
    modality : str, optional
        Modality to record when the header has none.
    limits : Limits
        Caps.

    Returns
    -------
    Image
        Projection radiographs: 2D ``(rows, columns)``, ``affine=None``.
        A CT/MR slice: ``(1, rows, columns)``. Enhanced multi-frame: ``(frames,
        rows, columns)`` sorted along the slice normal. float32 values after
        the modality LUT.

    Raises
    ------
    UnsupportedDataError
        Non-image objects, colour images, unsupported layouts.
    CorruptFileError
        Truncated or undecodable data, missing geometry.
    SeriesGeometryError
        Irregular frame geometry in an enhanced object.
    ResourceLimitError
        Declared sizes beyond ``limits``.
    """
    _check_supported(h, limits)
    mod = h.modality if h.ds.get("Modality", None) else (modality or "OT").upper()
    try:
        if is_projection(h):
            return _read_projection(h, mod)
        if h.is_enhanced:
            return _read_enhanced(h, mod, limits)
        return _read_slice(h, mod)
    except MedmultiError:
        raise
    except MemoryError:
        from ..errors import ResourceLimitError

        raise ResourceLimitError("not enough memory for this image", path=h.name) from None
    except Exception:  # pydicom value conversion on a damaged header
        raise CorruptFileError("the DICOM header holds values that cannot be interpreted", path=h.name) from None
