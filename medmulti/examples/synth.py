"""Write synthetic but real DICOM and NIfTI files with known geometry.

These writers produce standard files with pydicom and nibabel. The sample cohort,
the tests and the benchmarks use them, so every reader is exercised on real bytes.
Identity attributes default to obviously fake values (``ANON``) and can be set to
canary strings by privacy tests.
"""

from __future__ import annotations

import datetime as _dt
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..image import Image

__all__ = [
    "affine_from_geometry",
    "write_dicom_series",
    "write_dicom_slice",
    "write_dicom_multiframe",
    "write_dicom_xray",
    "write_nifti",
    "new_uid",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "CR": CR_STORAGE, "DX": DX_STORAGE}
ENHANCED_SOP_CLASS = {"CT": ENHANCED_CT_STORAGE, "MR": ENHANCED_MR_STORAGE}


def new_uid(seed: Any = None) -> str:
    """Return a DICOM UID, deterministic when ``seed`` is given.

    Parameters
    ----------
    seed : any, optional
        Hashable entropy source (e.g. ``("patient", 3, "ct")``) for reproducible UIDs.

    Returns
    -------
    str
        A UID under pydicom's root.
    """
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=None if seed is None else [repr(seed)])


def affine_from_geometry(
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Build an array-order affine from spacing, origin and direction.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size in array axis order ``(z, y, x)``, mm.
    origin : sequence of float
        LPS position of voxel ``(0, 0, 0)``, mm.
    direction : numpy.ndarray, optional
        3x3 matrix whose columns are the unit LPS directions of the array axes
        ``(z, y, x)``. Default: axial LPS (``z``->S, ``y``->P, ``x``->L).

    Returns
    -------
    numpy.ndarray
        4x4 float64 affine.
    """
    if direction is None:
        direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    a = np.eye(4)
    a[:3, :3] = np.asarray(direction, float) * np.asarray(spacing, float)[None, :]
    a[:3, 3] = origin
    return a


def _base_dataset(
    sop_class: str,
    modality: str,
    *,
    patient: Mapping[str, Any] | None,
    study_uid: str,
    series_uid: str,
    series_number: int,
    transfer_syntax: str,
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "ANON^SYNTHETIC"
    ds.PatientID = "ANON"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = _dt.date(2026, 1, 1).strftime("%Y%m%d")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Manufacturer = "medmulti-synth"
    for key, value in (patient or {}).items():
        setattr(ds, key, value)
    return ds


def _set_pixels(ds, frames: np.ndarray, *, signed: bool, bits: int = 16) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = getattr(ds, "PhotometricInterpretation", "MONOCHROME2")
    ds.Rows, ds.Columns = int(frames.shape[-2]), int(frames.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = np.int16 if signed else np.uint16
    ds.PixelData = np.ascontiguousarray(frames.astype(dtype)).tobytes()


def _to_stored(values: np.ndarray, slope: float, intercept: float, signed: bool = True) -> np.ndarray:
    stored = np.rint((np.asarray(values, np.float64) - intercept) / slope)
    info = np.iinfo(np.int16 if signed else np.uint16)
    return np.clip(stored, info.min, info.max)


def write_dicom_slice(
    pixels: np.ndarray,
    path: str | PathLike[str],
    *,
    position: Sequence[float],
    row_direction: Sequence[float],
    column_direction: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_thickness: float,
    modality: str = "CT",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    instance_number: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    patient: Mapping[str, Any] | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one single-frame CT/MR slice with full patient-space geometry.

    Parameters
    ----------
    pixels : numpy.ndarray
        2D ``(rows, columns)`` values in output units (HU for CT).
    path : str or PathLike
        Destination file.
    position : sequence of float
        ImagePositionPatient, LPS mm of the first pixel's centre.
    row_direction, column_direction : sequence of float
        ImageOrientationPatient halves: direction along a row (increasing column
        index) and along a column (increasing row index).
    pixel_spacing : sequence of float
        PixelSpacing ``(row spacing, column spacing)`` mm.
    slice_thickness : float
        SliceThickness, mm.
    modality : str
        ``"CT"`` or ``"MR"``.
    rescale_slope, rescale_intercept : float
        Modality LUT stored in the header (values are stored as
        ``(pixels - intercept) / slope``, int16).
    instance_number, series_number : int
        InstanceNumber and SeriesNumber.
    study_uid, series_uid, frame_of_reference_uid : str, optional
        UIDs (fresh ones when omitted).
    patient : Mapping, optional
        Extra identity attributes (keyword -> value).
    transfer_syntax : str
        Transfer syntax UID (uncompressed ones: explicit/implicit little endian).
    extra : Mapping, optional
        Further attributes (keyword -> value) set last.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from pydicom.uid import ImplicitVRLittleEndian

    ds = _base_dataset(
        SOP_CLASS.get(modality, CT_IMAGE_STORAGE),
        modality,
        patient=patient,
        study_uid=study_uid or new_uid(),
        series_uid=series_uid or new_uid(),
        series_number=series_number,
        transfer_syntax=transfer_syntax,
    )
    ds.FrameOfReferenceUID = frame_of_reference_uid or new_uid()
    ds.InstanceNumber = int(instance_number)
    ds.ImagePositionPatient = [float(f"{v:.6f}") for v in position]
    ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row_direction, *column_direction)]
    ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    ds.SliceThickness = float(slice_thickness)
    ds.RescaleSlope = float(rescale_slope)
    ds.RescaleIntercept = float(rescale_intercept)
    if modality == "CT":
        ds.RescaleType = "HU"
    _set_pixels(ds, _to_stored(pixels, rescale_slope, rescale_intercept), signed=True)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    little = True
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.save_as(p, implicit_vr=implicit, little_endian=little, enforce_file_format=True)
    return p


def write_dicom_series(
    volume: np.ndarray,
    out_dir: str | PathLike[str],
    *,
    affine: np.ndarray | None = None,
    modality: str = "CT",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    series_number: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    patient: Mapping[str, Any] | None = None,
    filename: str = "IM{index:04d}.dcm",
    order: Sequence[int] | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write a 3D volume as a single-frame DICOM series, one file per slice.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(z, y, x)`` values in output units (HU for CT).
    out_dir : str or PathLike
        Folder for the files (created).
    affine : numpy.ndarray, optional
        Array-order affine (see :func:`affine_from_geometry`); default axial 1 mm.
    modality : str
        ``"CT"`` or ``"MR"``.
    rescale_slope, rescale_intercept : float
        Modality LUT written into every slice.
    series_number : int
        SeriesNumber.
    study_uid, series_uid, frame_of_reference_uid : str, optional
        Shared UIDs (fresh ones when omitted).
    patient : Mapping, optional
        Identity attributes for every slice.
    filename : str
        Pattern with ``{index}`` (the position in ``order``) for the file names.
    order : sequence of int, optional
        Slice indices to write, in file-name order (shuffle it to test sorting,
        drop one to make a gap, repeat one to make a duplicate).
    transfer_syntax : str
        Transfer syntax UID.
    extra : Mapping, optional
        Further attributes for every slice.

    Returns
    -------
    list of pathlib.Path
        The written files, in ``order``.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError("write_dicom_series needs a 3D (z, y, x) volume")
    a = affine_from_geometry() if affine is None else np.asarray(affine, float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    row_dir = a[:3, 2] / spacing[2]
    col_dir = a[:3, 1] / spacing[1]
    study_uid = study_uid or new_uid()
    series_uid = series_uid or new_uid()
    for_uid = frame_of_reference_uid or new_uid()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    indices = list(range(vol.shape[0])) if order is None else list(order)
    for n, k in enumerate(indices):
        position = a[:3, 3] + k * a[:3, 0]
        paths.append(
            write_dicom_slice(
                vol[k],
                out / filename.format(index=n),
                position=position,
                row_direction=row_dir,
                column_direction=col_dir,
                pixel_spacing=(spacing[1], spacing[2]),
                slice_thickness=float(spacing[0]),
                modality=modality,
                rescale_slope=rescale_slope,
                rescale_intercept=rescale_intercept,
                instance_number=k + 1,
                study_uid=study_uid,
                series_uid=series_uid,
                frame_of_reference_uid=for_uid,
                series_number=series_number,
                patient=patient,
                transfer_syntax=transfer_syntax,
                extra=extra,
            )
        )
    return paths


def write_dicom_multiframe(
    volume: np.ndarray,
    path: str | PathLike[str],
    *,
    affine: np.ndarray | None = None,
    modality: str = "CT",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    patient: Mapping[str, Any] | None = None,
    study_uid: str | None = None,
) -> Path:
    """Write a 3D volume as one enhanced (multi-frame) CT/MR object.

    Geometry goes into the Shared Functional Groups (PixelMeasures,
    PlaneOrientation, PixelValueTransformation) and the Per-frame Functional
    Groups (PlanePosition), as PS3.3 C.7.6.16 describes.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(z, y, x)`` values in output units.
    path : str or PathLike
        Destination file.
    affine : numpy.ndarray, optional
        Array-order affine; default axial 1 mm.
    modality : str
        ``"CT"`` or ``"MR"``.
    rescale_slope, rescale_intercept : float
        Modality LUT.
    patient : Mapping, optional
        Identity attributes.
    study_uid : str, optional
        StudyInstanceUID.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSequence

    vol = np.asarray(volume)
    a = affine_from_geometry() if affine is None else np.asarray(affine, float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    ds = _base_dataset(
        ENHANCED_SOP_CLASS[modality],
        modality,
        patient=patient,
        study_uid=study_uid or new_uid(),
        series_uid=new_uid(),
        series_number=1,
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    ds.FrameOfReferenceUID = new_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = int(vol.shape[0])
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [float(spacing[1]), float(spacing[2])]
    pm.SliceThickness = float(spacing[0])
    pm.SpacingBetweenSlices = float(spacing[0])
    shared.PixelMeasuresSequence = DSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [float(v) for v in (*(a[:3, 2] / spacing[2]), *(a[:3, 1] / spacing[1]))]
    shared.PlaneOrientationSequence = DSequence([po])
    pvt = Dataset()
    pvt.RescaleSlope = float(rescale_slope)
    pvt.RescaleIntercept = float(rescale_intercept)
    pvt.RescaleType = "HU" if modality == "CT" else "US"
    shared.PixelValueTransformationSequence = DSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DSequence([shared])
    frames = []
    for k in range(vol.shape[0]):
        f = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(v) for v in a[:3, 3] + k * a[:3, 0]]
        f.PlanePositionSequence = DSequence([pp])
        frames.append(f)
    ds.PerFrameFunctionalGroupsSequence = DSequence(frames)
    _set_pixels(ds, _to_stored(vol, rescale_slope, rescale_intercept), signed=True)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(p, enforce_file_format=True)
    return p


def write_dicom_xray(
    pixels: np.ndarray,
    path: str | PathLike[str],
    *,
    modality: str = "DX",
    pixel_spacing: Sequence[float] = (0.2, 0.2),
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    patient: Mapping[str, Any] | None = None,
    study_uid: str | None = None,
    series_number: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a projection radiograph (CR or DX) as a single-frame DICOM file.

    Parameters
    ----------
    pixels : numpy.ndarray
        2D ``(rows, columns)`` stored values (unsigned, ``< 2**bits_stored``); for
        ``MONOCHROME1`` larger stored values display darker.
    path : str or PathLike
        Destination file.
    modality : {"DX", "CR"}
        Modality and SOP class.
    pixel_spacing : sequence of float
        ImagerPixelSpacing ``(row, column)`` in mm (also PixelSpacing for CR).
    photometric : {"MONOCHROME2", "MONOCHROME1"}
        PhotometricInterpretation.
    bits_stored : int
        BitsStored (BitsAllocated is 16).
    window : (center, width), optional
        WindowCenter/WindowWidth to record.
    patient : Mapping, optional
        Identity attributes.
    study_uid : str, optional
        StudyInstanceUID.
    series_number : int
        SeriesNumber.
    extra : Mapping, optional
        Further attributes set last.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    ds = _base_dataset(
        SOP_CLASS[modality],
        modality,
        patient=patient,
        study_uid=study_uid or new_uid(),
        series_uid=new_uid(),
        series_number=series_number,
        transfer_syntax="1.2.840.10008.1.2.1",
    )
    ds.InstanceNumber = 1
    ds.PhotometricInterpretation = photometric
    ds.ImagerPixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    if modality == "CR":
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    if window is not None:
        ds.WindowCenter = float(window[0])
        ds.WindowWidth = float(window[1])
    arr = np.clip(np.rint(np.asarray(pixels, np.float64)), 0, 2**bits_stored - 1)
    _set_pixels(ds, arr, signed=False, bits=bits_stored)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(p, enforce_file_format=True)
    return p


def write_nifti(
    volume: np.ndarray,
    path: str | PathLike[str],
    *,
    affine: np.ndarray | None = None,
    dtype: Any = np.float32,
    nifti2: bool = False,
) -> Path:
    """Write a ``(z, y, x)`` volume with an array-order LPS affine as NIfTI.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(z, y, x)`` values.
    path : str or PathLike
        Destination (``.nii`` or ``.nii.gz``).
    affine : numpy.ndarray, optional
        Array-order LPS affine; default axial 1 mm.
    dtype : numpy dtype
        On-disk data type.
    nifti2 : bool
        Write NIfTI-2 instead of NIfTI-1.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import nibabel as nib

    a = affine_from_geometry() if affine is None else np.asarray(affine, float)
    img = Image(np.asarray(volume).astype(dtype), a, tuple(np.linalg.norm(a[:3, :3], axis=0)), "MR").to_nifti()
    if nifti2:
        img = nib.Nifti2Image(np.asanyarray(img.dataobj), img.affine, header=None)
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=1)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(p))
    return p
