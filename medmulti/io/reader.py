"""``read_image``: one entry point for DICOM files, DICOM series folders and NIfTI."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from ..errors import CorruptFileError, MissingFileError, UnsupportedDataError
from ..image import Image
from .detect import FileFormat, detect_format
from .dicom_file import read_dicom_file
from .dicom_header import read_header
from .dicom_series import read_dicom_series, series_given_for_a_file
from .error_ladder import source_errors
from .limits import DEFAULT_LIMITS, Limits
from .nifti import read_nifti
from .quiet import quiet_pydicom
from .safe_files import check_regular
from .source_ref import SourceRef, parse_series_choice
from .volume_choice import check_volume_argument

__all__ = ["read_image", "resolve_format"]



def resolve_format(path: Path, name: str) -> FileFormat:
    """Check that ``path`` exists and recognise its format by content.

    Parameters
    ----------
    path : pathlib.Path
    name : str
        Name for messages.

    Returns
    -------
    FileFormat

    Raises
    ------
    MissingFileError
        The path does not exist or cannot be read.
    UnsupportedDataError
        Neither DICOM nor NIfTI; a FIFO, socket or device (refused after a
        ``stat``, never opened).
    CorruptFileError
        A gzip stream that is cut or damaged before its content can be recognised.
    """
    check_regular(path, name=name)  # a FIFO would block open() forever
    try:
        fmt = detect_format(path)
    except OSError:
        raise MissingFileError("the file cannot be opened (permissions?)", path=name) from None
    if fmt == FileFormat.GZIP_DAMAGED:
        raise CorruptFileError("a gzip-compressed file that is truncated or damaged", path=name)
    if fmt == FileFormat.UNKNOWN:
        raise UnsupportedDataError(
            "not a DICOM or NIfTI file (recognised by content, not extension)",
            path=name,
            hint="medmulti reads DICOM files, DICOM series folders and .nii/.nii.gz files",
        )
    return fmt


@quiet_pydicom
def read_image(
    path: str | PathLike[str] | SourceRef,
    modality: str | None = None,
    *,
    series: int | str | PathLike[str] | None = None,
    volume: int | None = None,
    limits: Limits | None = None,
    workers: int | None = None,
    root: str | PathLike[str] | None = None,
) -> Image:
    """Read a DICOM file, a folder holding one DICOM series, or a NIfTI file.

    Parameters
    ----------
    path : str or PathLike or SourceRef
        A DICOM file (single-frame or enhanced multi-frame), a folder (searched
        recursively; one image series expected), or a ``.nii``/``.nii.gz`` file.
        Formats are recognised by content. A :class:`~medmulti.io.SourceRef` (a
        manifest row's source) brings its own ``series``/``volume`` choice.
    modality : str, optional
        Modality recorded when the file has none (NIfTI: default ``"MR"``);
        also named in error messages. DICOM files keep their own Modality.
    series : int, str or PathLike, optional
        The series to read when a folder holds several image series (folders
        only), as SimpleITK users pick a series ID: a SeriesNumber (int, or a
        string of digits only); a SeriesInstanceUID (a string of digits and
        dots); or the path of one file of the wanted series (absolute, relative
        to the folder, or relative to the working directory). Use a file path
        when several series share one SeriesNumber: the error listing them
        names one file of each.
    volume : int, optional
        0-based index of the volume to read from a 4D NIfTI file; from an
        enhanced multi-frame DICOM file holding several volumes (stacks,
        temporal positions or orientations; ordered by StackID, then
        TemporalPositionIndex, then orientation in first-frame order); or from
        a series of single-frame files whose slice positions repeat (echoes,
        time points, b-values, phases: split by the first of
        TemporalPositionIdentifier, EchoNumbers, DiffusionBValue,
        AcquisitionNumber, TriggerTime that separates them, in its numeric
        order). Refused for sources holding one volume.
    limits : Limits, optional
        Caps on sizes (default :data:`~medmulti.io.limits.DEFAULT_LIMITS`).
    workers : int, optional
        Threads (SimpleITK, no main guard needed) or, for JPEG 2000 series
        they cannot decode exactly as pydicom does, processes decoding JPEG 2000
        series (default: usable CPUs, at most 8; ``1`` disables parallel decoding).
    root : str or PathLike, optional
        For a folder: the folder that symlinks inside it may point into
        (default: the folder itself; a ``SourceRef`` may carry one). Nothing
        outside it is opened, listed or ``stat``-ed; a link leading out is
        refused. It does not constrain ``path`` itself (a manifest checks that).

    Returns
    -------
    Image
        float32 values (CT in Hounsfield units after each slice's modality LUT).
        Volumes are ``(z, y, x)`` with an affine equal to SimpleITK's geometry;
        projection radiographs are 2D with ``affine=None`` and MONOCHROME1
        inverted so that larger means brighter.

    Raises
    ------
    MissingFileError
        The path does not exist, or a folder holds no DICOM image.
    UnsafePathError
        A symlink inside the folder leads outside ``root`` (or loops).
    CorruptFileError
        Truncated, unparseable or undecodable data (pixels are decoded here).
    UnsupportedDataError
        Non-image DICOM objects, colour images, 4D NIfTI or multi-stack enhanced
        DICOM without ``volume=``, ``volume=`` out of range or given for a
        single volume, ``series=`` given for a file, a FIFO, socket or device
        (refused after a ``stat``, never opened)...
    SeriesGeometryError
        Several series without ``series=``, a ``series=`` that names none of the
        folder's series (or several sharing a SeriesNumber); gaps, duplicates,
        mixed orientations, differing sizes or spacings, non-uniform spacing,
        gantry tilt.
    TypeError
        ``series=`` or ``volume=`` of the wrong type (e.g. a float), or given
        both as an argument and, differently, in a ``SourceRef``.
    ResourceLimitError
        Declared sizes beyond the data present or beyond ``limits``.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> img = read_image(get_testdata_file("CT_small.dcm"))
    >>> img.shape, img.modality, img.array.dtype.name
    ((1, 128, 128), 'CT', 'float32')

    Choosing a series in a folder by the path of one of its files:

    >>> from pathlib import Path
    >>> folder = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033"
    >>> read_image(folder, series="CR1/6154").modality
    'CR'
    """
    if isinstance(path, SourceRef):  # a manifest row's source: its own series / volume choice
        for arg, given, own in (("series", series, path.series), ("volume", volume, path.volume)):
            if given is not None and own is not None and given != own:
                raise TypeError(f"{arg}= given twice (as an argument and in the SourceRef), with different values")
        root = path.root if root is None else root
        path, series, volume = path.resolve(series, volume)
    limits = DEFAULT_LIMITS if limits is None else limits
    name = str(path)
    p = Path(path)
    if series is not None:
        parse_series_choice(series)  # TypeError for a wrong type, before anything is read
    check_volume_argument(volume)
    with source_errors(name, modality, memory="not enough memory to read this image", fill=("path", "modality")):
        if p.is_dir():
            return read_dicom_series(
                p, modality, series=series, volume=volume, limits=limits, workers=workers, display=name, root=root
            )
        if series is not None and p.exists():
            raise series_given_for_a_file(name)
        fmt = resolve_format(p, name)
        if fmt in (FileFormat.NIFTI, FileFormat.NIFTI_GZ):
            return read_nifti(p, modality, volume=volume, limits=limits, gz=fmt == FileFormat.NIFTI_GZ, name=name)
        header = read_header(p, name=name, limits=limits)
        return read_dicom_file(header, modality, limits, volume=volume)
