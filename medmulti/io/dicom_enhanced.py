"""Enhanced multi-frame CT/MR objects: geometry from the functional groups.

An enhanced object (PS3.3 A.38 Enhanced CT, A.36 Enhanced MR) holds a whole
acquisition in one file: each frame's position, orientation, pixel spacing and
rescale are in its Per-frame Functional Groups item, else in the Shared one
(PS3.3 C.7.6.16). Such a file may hold several volumes (stacks, temporal
positions, orientations, echoes); they are found from the Frame Content and
Multi-frame Dimension modules (C.7.6.16.2.2, C.7.6.17) and one is chosen with
``volume=``. Headers only, except :func:`read_enhanced`, which decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptFileError, SeriesGeometryError, UnsupportedDataError
from ..image import Image, affine_from_itk
from .assembly import DUPLICATE_TOLERANCE_MM, ORIENTATION_TOLERANCE, assemble_stack
from .dicom_header import DicomHeader, base_meta
from .limits import Limits
from .pixels import read_stored
from .values import apply_rescale_into, rescale_of, voi_meta
from .volume_choice import check_volume_index, no_volume_choice

__all__ = ["EnhancedVolume", "enhanced_volumes", "enhanced_geometry", "read_enhanced"]


def _fg_item(h: DicomHeader, shared: Any, frame: Any, seq: str):
    for group in (frame, shared):
        if group is None:
            continue
        items = group.get(seq, None)
        if items:
            return items[0]
    return None


#: DimensionIndexPointer tags handled on their own: InStackPositionNumber, ImagePositionPatient,
#: SliceLocation (a frame's place within a stack), StackID and TemporalPositionIndex (volume keys).
_KNOWN_DIMENSIONS = frozenset({0x00209057, 0x00200032, 0x00201041, 0x00209056, 0x00209128})
_MAX_LISTED = 8


@dataclass
class EnhancedVolume:
    """One 3D volume of an enhanced multi-frame object (headers only).

    Attributes
    ----------
    frames : numpy.ndarray
        0-based indices of its frames in the file, in file order.
    label : str
        Description for messages (stack rank, temporal position, plane, frame
        count; no header text).
    """

    frames: np.ndarray
    label: str


@dataclass
class _Frames:
    positions: np.ndarray
    orientations: list[np.ndarray]
    spacings: list[np.ndarray]
    rescales: list[tuple[float, float]]
    measures: list[Any]
    keys: list[tuple[int, ...]]
    others: list[tuple[int, ...] | None]
    counts: dict[str, int]
    split_by_other: bool = False


def _plane(iop: np.ndarray) -> str:
    normal = np.abs(np.cross(iop[:3], iop[3:]))
    axis = int(np.argmax(normal))
    if normal[axis] < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _frame_content(h: DicomHeader, shared: Any, frame: Any) -> tuple[str | None, int | None, tuple[int, ...] | None]:
    """(StackID, TemporalPositionIndex, DimensionIndexValues) of one frame (PS3.3 C.7.6.16.2.2)."""
    fc = _fg_item(h, shared, frame, "FrameContentSequence")
    if fc is None:
        return None, None, None
    raw = fc.get("StackID", None)
    stack_id = str(raw).strip() or None if raw is not None else None
    temporal = fc.get("TemporalPositionIndex", None)
    if temporal is not None and temporal != "":
        try:
            temporal = int(temporal)
        except (TypeError, ValueError):
            raise CorruptFileError(
                "a frame's TemporalPositionIndex could not be parsed", path=h.name, keyword="TemporalPositionIndex"
            ) from None
    else:
        temporal = None
    dims = fc.get("DimensionIndexValues", None)
    try:  # used only to split frames that repeat positions: ignored when malformed
        dims = tuple(int(v) for v in (dims if hasattr(dims, "__len__") and not isinstance(dims, str) else [dims]))
    except (TypeError, ValueError):
        dims = None
    return stack_id, temporal, dims or None


def _other_dimensions(h: DicomHeader) -> list[int] | None:
    """Positions in DimensionIndexValues of the dimensions that do not place a frame within a stack."""
    seq = h.ds.get("DimensionIndexSequence", None)
    if not seq:
        return None
    idx = []
    for i, item in enumerate(seq):
        pointer = item.get("DimensionIndexPointer", None)
        try:
            tag = int(pointer) if pointer is not None else None
        except (TypeError, ValueError):
            tag = None
        if tag not in _KNOWN_DIMENSIONS:
            idx.append(i)
    return idx


def _has_duplicates(positions: np.ndarray, iop: np.ndarray) -> bool:
    d = np.sort(positions @ np.cross(iop[:3], iop[3:]))
    return bool(np.any(np.diff(d) < DUPLICATE_TOLERANCE_MM))


def _scan_frames(h: DicomHeader) -> _Frames:
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
    iops, spacings, measures, rescales = [], [], [], []
    stack_ids, temporals, dims = [], [], []
    planes: list[np.ndarray] = []
    plane_of = []
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
        for k, ref in enumerate(planes):
            if np.max(np.abs(iop - ref)) <= ORIENTATION_TOLERANCE:
                plane_of.append(k)
                break
        else:
            plane_of.append(len(planes))
            planes.append(iop)
        iops.append(iop)
        spacings.append(ps)
        measures.append(pm)
        pvt = _fg_item(h, shared, frame, "PixelValueTransformationSequence")
        rescales.append(rescale_of(pvt if pvt is not None else ds))
        sid, tpi, div = _frame_content(h, shared, frame)
        stack_ids.append(sid)
        temporals.append(tpi)
        dims.append(div)
    uniq = list(dict.fromkeys(stack_ids))
    if all(s is not None and s.isascii() and s.isdigit() for s in uniq):
        uniq.sort(key=int)
    stack_rank = {s: r for r, s in enumerate(uniq)}
    keys = [(stack_rank[s], -1 if t is None else t, p) for s, t, p in zip(stack_ids, temporals, plane_of)]
    other_idx = _other_dimensions(h)
    others: list[tuple[int, ...] | None] = [None] * n
    if other_idx and all(d is not None and len(d) == len(h.ds.DimensionIndexSequence) for d in dims):
        others = [tuple(d[j] for j in other_idx) for d in dims]
    counts = {
        "stacks": len(uniq),
        "temporal positions": len(set(temporals)),
        "orientations": len(planes),
    }
    return _Frames(positions, iops, spacings, rescales, measures, keys, others, counts)


def _group_volumes(fr: _Frames) -> list[np.ndarray]:
    def group(keys):
        groups: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        return [np.array(groups[k]) for k in sorted(groups)]

    vols = group(fr.keys)
    if fr.others[0] is not None and any(
        len(v) > 1 and _has_duplicates(fr.positions[v], fr.orientations[v[0]]) for v in vols
    ):  # frames repeat positions within a stack: split by the other dimensions (echo, b-value...)
        keys = [k + o for k, o in zip(fr.keys, fr.others)]
        split = group(keys)
        if len(split) > len(vols):
            fr.counts["values of other dimensions"] = len(set(fr.others))
            fr.split_by_other = True
            return split
    return vols


def enhanced_volumes(h: DicomHeader) -> list[EnhancedVolume]:
    """The 3D volumes an enhanced multi-frame object holds (headers only).

    Parameters
    ----------
    h : DicomHeader

    Returns
    -------
    list of EnhancedVolume
        One entry for an ordinary single-stack object. Several for multi-stack
        objects, ordered by StackID (numerically when every StackID is a number,
        else in first-frame order), then TemporalPositionIndex, then orientation
        (in first-frame order), then, only when frames still repeat positions,
        the other DimensionIndexValues (echo, b-value...).

    Raises
    ------
    CorruptFileError
        Missing or malformed functional groups.

    Notes
    -----
    PS3.3 C.7.6.16.2.2 (Frame Content: StackID, TemporalPositionIndex,
    DimensionIndexValues) and C.7.6.17 (Multi-frame Dimension module).
    """
    fr = _scan_frames(h)
    return _label_volumes(fr, _group_volumes(fr))


def _label_volumes(fr: _Frames, vols: list[np.ndarray]) -> list[EnhancedVolume]:
    if len(vols) == 1:
        return [EnhancedVolume(vols[0], f"{len(vols[0])} frame(s)")]
    out = []
    for v in vols:
        key = fr.keys[v[0]]
        parts = []
        if fr.counts["stacks"] > 1:
            parts.append(f"stack {key[0] + 1} of {fr.counts['stacks']}")
        if fr.counts["temporal positions"] > 1 and key[1] >= 0:
            parts.append(f"temporal position {key[1]}")
        parts.append(_plane(fr.orientations[v[0]]))
        if fr.split_by_other:
            parts.append("dimension index " + ",".join(str(x) for x in fr.others[v[0]]))
        parts.append(f"{len(v)} frame(s)")
        out.append(EnhancedVolume(v, ", ".join(parts)))
    return out


def _refuse_several(h: DicomHeader, vols: list[EnhancedVolume], counts: dict[str, int]) -> UnsupportedDataError:
    what = ", ".join(f"{c} {name}" for name, c in counts.items() if c > 1) or f"{len(vols)} groups"
    listed = "; ".join(f"volume {i}: {v.label}" for i, v in enumerate(vols[:_MAX_LISTED]))
    if len(vols) > _MAX_LISTED:
        listed += f"; ... ({len(vols) - _MAX_LISTED} more)"
    keyword = next(
        (kw for name, kw in (("stacks", "StackID"), ("temporal positions", "TemporalPositionIndex"),
                             ("orientations", "ImageOrientationPatient")) if counts.get(name, 0) > 1),
        "DimensionIndexValues",
    )
    return UnsupportedDataError(
        f"this enhanced multi-frame file holds {len(vols)} volumes ({what}); medmulti reads one 3D volume: {listed}",
        path=h.name,
        keyword=keyword,
        argument="volume",
        hint=f"pass volume=<index> (0-based, 0 to {len(vols) - 1}) to read one of them; volumes are ordered by "
        "StackID, then TemporalPositionIndex, then orientation",
    )


def enhanced_geometry(h: DicomHeader, *, volume: int | None = None):
    """Check an enhanced multi-frame object's functional groups (headers only).

    Parameters
    ----------
    h : DicomHeader
    volume : int, optional
        0-based index of the volume to check when the object holds several
        (see :func:`enhanced_volumes` for their order).

    Returns
    -------
    (Stack, numpy.ndarray, list of (float, float))
        Sorted frame geometry (``Stack.order`` holds 0-based frame indices in
        the file, ascending along the slice normal; only the chosen volume's
        frames), PixelSpacing (row, column) and each frame's (RescaleSlope,
        RescaleIntercept) in file frame order (every frame of the file).

    Raises
    ------
    CorruptFileError
        Missing or malformed functional groups.
    UnsupportedDataError
        Several volumes (stacks, temporal positions, orientations) without
        ``volume=``; ``volume=`` out of range, or given for a single-volume object.
    SeriesGeometryError
        Frames of the volume with different spacings, duplicates, gaps, tilt.

    Notes
    -----
    PS3.3 C.7.6.16 (Multi-frame Functional Groups): each attribute is taken from
    the frame's Per-frame item, else from the Shared item.
    """
    stack, spacing, rescales, _ = _enhanced_geometry(h, volume)
    return stack, spacing, rescales


def _enhanced_geometry(h: DicomHeader, volume: int | None):
    fr = _scan_frames(h)
    groups = _group_volumes(fr)
    if len(groups) > 1 and volume is None:
        raise _refuse_several(h, _label_volumes(fr, groups), fr.counts)
    if len(groups) == 1:
        no_volume_choice(volume, "this enhanced multi-frame file", h.name)
        frames = groups[0]
    else:
        frames = groups[check_volume_index(volume, len(groups), h.name)]
    ref = fr.spacings[frames[0]]
    for i in frames:
        if np.max(np.abs(fr.spacings[i] - ref)) > 1e-4 * max(1.0, float(ref.max())):
            raise SeriesGeometryError(f"frames have different pixel spacing (frame {i + 1})", path=h.name, keyword="PixelSpacing")
    if np.any(ref <= 0):
        raise CorruptFileError("pixel spacing must be positive", path=h.name, keyword="PixelSpacing")
    sbs = fr.measures[frames[0]].get("SpacingBetweenSlices", None)
    try:
        single = float(sbs) if sbs not in (None, "") and float(sbs) > 0 else 1.0
    except (TypeError, ValueError):
        single = 1.0
    stack = assemble_stack(
        fr.positions[frames], fr.orientations[frames[0]], [f"frame {i + 1}" for i in frames],
        what="frame", where=h.name, single_spacing=single,
    )
    stack.order = frames[stack.order]
    return stack, ref, fr.rescales, len(groups)


def read_enhanced(h: DicomHeader, modality: str, limits: Limits, volume: int | None) -> Image:
    """Read one volume of an enhanced multi-frame object (called by ``read_dicom_file``).

    Parameters
    ----------
    h : DicomHeader
        A header that passed :meth:`DicomHeader.check_image`.
    modality : str
        Modality to record.
    limits : Limits
        Caps.
    volume : int, optional
        0-based volume (see :func:`enhanced_volumes`).

    Returns
    -------
    Image
        ``(frames, rows, columns)`` float32 after the modality LUT, sorted along
        the slice normal.

    Raises
    ------
    CorruptFileError, UnsupportedDataError, SeriesGeometryError
        As :func:`enhanced_geometry`, or undecodable pixel data.
    """
    stack, spacing, rescales, n_volumes = _enhanced_geometry(h, volume)
    n = len(stack.order)
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
    if volume is not None:
        meta["volume"] = int(volume)
        meta["n_volumes"] = n_volumes
    meta["rescale"] = _rescale_meta([rescales[i] for i in stack.order])
    meta.update(voi_meta(h.ds, inverted=False, low=0.0, high=0.0))
    return Image(vol, affine, (stack.slice_spacing, float(spacing[0]), float(spacing[1])), modality, meta)


def _rescale_meta(rescales: list[tuple[float, float]]) -> Any:
    first = rescales[0]
    if all(r == first for r in rescales):
        return {"slope": first[0], "intercept": first[1]}
    return {"per_slice": True}
