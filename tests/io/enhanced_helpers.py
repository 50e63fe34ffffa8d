"""Write enhanced multi-frame DICOM files holding several volumes (test helper).

``medmulti.examples.synth.write_dicom_multiframe`` writes one stack; these files carry
several stacks (StackID), temporal positions (TemporalPositionIndex), frames at
several orientations, or another dimension (echoes), each frame with its own
Plane Position / Plane Orientation / Pixel Measures / Frame Content items, as
PS3.3 C.7.6.16 and C.7.6.17 describe. Written with pydicom, read back by the
tests with pydicom (what each frame declares) and SimpleITK (single-stack files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from medmulti.examples import synth

# DimensionIndexPointer / FunctionalGroupPointer tags
STACK_ID = 0x00209056
IN_STACK_POSITION = 0x00209057
TEMPORAL_POSITION_INDEX = 0x00209128
EFFECTIVE_ECHO_TIME = 0x00189082
FRAME_CONTENT_SEQUENCE = 0x00209111
MR_ECHO_SEQUENCE = 0x00189114


@dataclass
class Frame:
    """One frame: values (output units) and what its functional groups declare."""

    pixels: np.ndarray
    position: np.ndarray
    iop: np.ndarray
    spacing: tuple[float, float]
    stack_id: str | None = None
    in_stack: int | None = None
    temporal: int | None = None
    echo: int | None = None
    extra: dict = field(default_factory=dict)


def stack_frames(volume: np.ndarray, affine: np.ndarray, **content) -> list[Frame]:
    """Frames of a ``(z, y, x)`` volume with an array-order affine (as synth's writers take).

    ``content`` (stack_id, temporal, echo) is copied into every frame;
    ``in_stack`` numbers them 1.. along the array's z axis.
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    iop = np.concatenate([affine[:3, 2] / spacing[2], affine[:3, 1] / spacing[1]])
    return [
        Frame(volume[k], affine[:3, 3] + k * affine[:3, 0], iop, (float(spacing[1]), float(spacing[2])), in_stack=k + 1, **content)
        for k in range(volume.shape[0])
    ]


def write_enhanced(
    frames: Sequence[Frame],
    path: str | Path,
    *,
    modality: str = "MR",
    frame_content: bool = True,
    dimensions: Sequence[int] | None = None,
    rescale: tuple[float, float] = (1.0, -1024.0),
) -> Path:
    """Write ``frames`` (in this file order) as one enhanced multi-frame object.

    Parameters
    ----------
    frames : sequence of Frame
        The frames, in file order.
    path : str or Path
        Destination.
    modality : str
        ``"CT"`` or ``"MR"``.
    frame_content : bool
        Write a FrameContentSequence per frame (StackID, InStackPositionNumber,
        TemporalPositionIndex where set, and DimensionIndexValues).
    dimensions : sequence of int, optional
        DimensionIndexPointer tags of the DimensionIndexSequence; default:
        StackID and InStackPositionNumber, plus TemporalPositionIndex and
        EffectiveEchoTime when some frame sets them.
    rescale : (slope, intercept)
        Shared Pixel Value Transformation.

    Returns
    -------
    pathlib.Path
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSequence

    ds = synth._base_dataset(
        synth.ENHANCED_SOP_CLASS[modality], modality, patient=None, study_uid=synth.new_uid(),
        series_uid=synth.new_uid(), series_number=1, transfer_syntax="1.2.840.10008.1.2.1",
    )
    ds.FrameOfReferenceUID = synth.new_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frames)
    if dimensions is None:
        dimensions = [STACK_ID, IN_STACK_POSITION]
        if any(f.temporal is not None for f in frames):
            dimensions.append(TEMPORAL_POSITION_INDEX)
        if any(f.echo is not None for f in frames):
            dimensions.append(EFFECTIVE_ECHO_TIME)
    organisation = synth.new_uid()
    ds.DimensionOrganizationSequence = DSequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = organisation
    items = []
    for tag in dimensions:
        item = Dataset()
        item.DimensionOrganizationUID = organisation
        item.DimensionIndexPointer = tag
        item.FunctionalGroupPointer = MR_ECHO_SEQUENCE if tag == EFFECTIVE_ECHO_TIME else FRAME_CONTENT_SEQUENCE
        items.append(item)
    ds.DimensionIndexSequence = DSequence(items)
    shared = Dataset()
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept = float(rescale[0]), float(rescale[1])
    pvt.RescaleType = "HU" if modality == "CT" else "US"
    shared.PixelValueTransformationSequence = DSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DSequence([shared])
    per = []
    for f in frames:
        item = Dataset()
        pp, po, pm = Dataset(), Dataset(), Dataset()
        pp.ImagePositionPatient = [float(v) for v in f.position]
        po.ImageOrientationPatient = [float(v) for v in f.iop]
        pm.PixelSpacing = [float(f.spacing[0]), float(f.spacing[1])]
        pm.SliceThickness = 1.0
        item.PlanePositionSequence = DSequence([pp])
        item.PlaneOrientationSequence = DSequence([po])
        item.PixelMeasuresSequence = DSequence([pm])
        if f.echo is not None:
            echo = Dataset()
            echo.EffectiveEchoTime = 10.0 * f.echo
            item.MREchoSequence = DSequence([echo])
        if frame_content:
            fc = Dataset()
            values = []
            for tag in dimensions:
                value = {STACK_ID: f.stack_id, IN_STACK_POSITION: f.in_stack, TEMPORAL_POSITION_INDEX: f.temporal,
                         EFFECTIVE_ECHO_TIME: f.echo}[tag]
                values.append(int(value) if value is not None else 1)
            if f.stack_id is not None:
                fc.StackID = f.stack_id
            if f.in_stack is not None:
                fc.InStackPositionNumber = int(f.in_stack)
            if f.temporal is not None:
                fc.TemporalPositionIndex = int(f.temporal)
            fc.DimensionIndexValues = values
            item.FrameContentSequence = DSequence([fc])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = DSequence(per)
    slope, intercept = rescale
    pixels = np.stack([synth._to_stored(f.pixels, slope, intercept) for f in frames])
    synth._set_pixels(ds, pixels, signed=True)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(p, enforce_file_format=True)
    return p


def declared_geometry(path: str | Path, frame_indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """What the given frames declare, read back with pydicom (the oracle).

    Returns
    -------
    (origin, direction, slice_spacing, order)
        Origin = ImagePositionPatient of the first frame along the normal
        ``row x column``; direction columns ``(row, column, normal)``; the mean
        step along the normal; the frames sorted along the normal (file indices).
    """
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    per = ds.PerFrameFunctionalGroupsSequence
    pos = np.array([[float(v) for v in per[i].PlanePositionSequence[0].ImagePositionPatient] for i in frame_indices])
    iop = np.array([float(v) for v in per[frame_indices[0]].PlaneOrientationSequence[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    d = pos @ normal
    order = np.argsort(d)
    step = float((d[order[-1]] - d[order[0]]) / (len(order) - 1)) if len(order) > 1 else 1.0
    return pos[order[0]], np.column_stack([row, col, normal]), step, np.asarray(frame_indices)[order]


def stored_frames(path: str | Path) -> np.ndarray:
    """Every frame after the modality LUT, via pydicom (file order)."""
    import pydicom

    ds = pydicom.dcmread(path)
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    return ds.pixel_array.astype(np.float64) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
