"""Parse one DICOM file's header once, strictly, and locate its pixel data.

Everything later (geometry checks, truncation checks, digests, decoding) works
from the :class:`DicomHeader` built here, so each file is parsed exactly once.
pydicom does the parsing (``stop_before_pixels``) through the byte layer of
:mod:`medmulti.io.dicom_bytes`, which reports a header cut short as corrupt instead
of silently accepting it (pydicom only warns), bounds deflated data, locates
PixelData and walks what follows it. Every exception from pydicom is wrapped at
this boundary.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFileError, MedmultiError, MissingFileError, ResourceLimitError, UnsupportedDataError
from ..spec import KIND_MODALITIES
from .detect import FileFormat, sniff_bytes
from .dicom_bytes import (
    check_fragments,
    check_trailing,
    fast_get,
    file_meta_of,
    locate_pixel_data,
    parse_dataset,
    select_elements,
)
from .error_ladder import reader_errors
from .limits import DEFAULT_LIMITS, Limits
from .safe_files import open_regular
from .values import ModalityLut, modality_lut_of, modality_lut_refused

__all__ = [
    "DicomHeader",
    "read_header",
    "base_meta",
    "PROJECTION_MODALITIES",
    "COLOR_PHOTOMETRICS",
    "LOSSY_TRANSFER_SYNTAXES",
    "ALWAYS_KEPT",
    "UNKNOWN_SPACING_WARNING",
]

#: Projection radiography modalities: 2D, no patient-space geometry.
#: DICOM Modality values read as projection radiographs: the spec's ``xray`` kind.
PROJECTION_MODALITIES = frozenset(KIND_MODALITIES["xray"])
COLOR_PHOTOMETRICS = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR", "HSV", "ARGB", "CMYK"}
)
#: SOP class UID prefixes of objects that are not images (PS3.4 B.5): structured
#: reports, RT plans/structures/records/doses, presentation states, waveforms,
#: encapsulated documents, raw data/registration/segmentation, DICOMDIR.
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.481.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.9.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.1.3.10",
    "1.2.840.10008.5.1.4.1.1.67",
    "1.2.840.10008.5.1.4.1.1.68.",
)
NON_IMAGE_MODALITIES = frozenset(
    {"RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTIMAGE", "SEG", "SR", "PR", "KO", "REG", "ECG", "HD", "DOC", "AU", "RWV", "PLAN", "FID"}
)
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
#: Transfer syntaxes whose compression is always lossy (PS3.5 A.4, 8.2): JPEG baseline and
#: extended (processes 1, 2 and 4), JPEG-LS near-lossless, MPEG-2/4 and HEVC video. JPEG 2000
#: and HTJ2K may be either; there LossyImageCompression decides.
LOSSY_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
    | {f"1.2.840.10008.1.2.4.{k}" for k in range(100, 109)}
)
#: Attributes a header read with ``read_header(only=...)`` keeps besides those asked for:
#: what :func:`base_meta` reads beyond the Image Pixel module (so a series' meta says
#: ``lossy`` as a single file's does).
ALWAYS_KEPT = frozenset({"LossyImageCompression"})
#: The warning of a projection image whose pixel spacing is unknown (it names the
#: attributes, never a value).
UNKNOWN_SPACING_WARNING = (
    "pixel spacing unknown: PixelSpacing and ImagerPixelSpacing are absent or zero, so 1 mm per pixel is assumed"
)
_IMPLICIT_LE = "1.2.840.10008.1.2"


class _Borrowed:
    """A caller's open file used in a ``with`` block without being closed."""

    def __init__(self, f) -> None:
        self._f = f

    def __enter__(self):
        return self._f

    def __exit__(self, *exc) -> None:
        return None


@dataclass
class DicomHeader:
    """One DICOM file's parsed header and where its pixels are.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    name : str
        Name used in messages (relative to the folder being read).
    ds : pydicom.Dataset
        The dataset without pixel data.
    transfer_syntax : str
        Transfer syntax UID.
    pixel_offset : int or None
        Offset of the PixelData value in the file (or in ``buffer``), None when
        the object has no PixelData.
    pixel_length : int or None
        Declared PixelData length; None for encapsulated (undefined length).
    file_size : int
        Bytes in the file (or in ``buffer``).
    buffer : bytes or None
        The inflated dataset for deflated transfer syntaxes (pixels are read
        from here, not from the file).
    """

    path: Path
    name: str
    ds: Any
    transfer_syntax: str
    pixel_offset: int | None
    pixel_length: int | None
    file_size: int
    buffer: bytes | None = None
    little_endian: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    # -- typed accessors (never return header text to messages) -------------
    def get(self, keyword: str) -> Any:
        """Attribute value (fast path for common attributes); None when absent.

        Parameters
        ----------
        keyword : str
            DICOM keyword of a top-level attribute (e.g. ``"SpacingBetweenSlices"``).

        Returns
        -------
        Any
            For the common Image Pixel / geometry attributes read from raw
            bytes: an int for US, stripped text for CS/UI, text for IS/DS (a
            list of texts when multi-valued; not converted to numbers). For
            other keywords, or elements pydicom has already converted, pydicom's
            value. None when the attribute is absent.

        Notes
        -----
        The value comes from the header and may identify the patient: use it
        for computation, never in messages.
        """
        return fast_get(self.ds, keyword)

    def _int(self, keyword: str, default: int | None = None) -> int | None:
        value = fast_get(self.ds, keyword)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise CorruptFileError("a required number could not be parsed", path=self.name, keyword=keyword) from None

    def _floats(self, keyword: str, n: int, ds: Any = None) -> np.ndarray | None:
        src = self.ds if ds is None else ds
        value = fast_get(src, keyword)
        if value is None or value == "":
            return None
        try:
            arr = np.asarray([float(v) for v in (value if hasattr(value, "__len__") and not isinstance(value, str) else [value])], dtype=np.float64)
        except (TypeError, ValueError):
            raise CorruptFileError("a number could not be parsed", path=self.name, keyword=keyword) from None
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise CorruptFileError(f"expected {n} finite numbers", path=self.name, keyword=keyword)
        return arr

    @property
    def has_pixels(self) -> bool:
        """Whether the object has (integer) PixelData."""
        return self.pixel_offset is not None

    @cached_property
    def is_non_image(self) -> bool:
        """Whether the object is positively recognised as a non-image object."""
        if self.modality in NON_IMAGE_MODALITIES:
            return True
        for source, kw in ((self.ds, "SOPClassUID"), (getattr(self.ds, "file_meta", None), "MediaStorageSOPClassUID")):
            if source is None:
                continue
            try:
                uid = str(fast_get(source, kw) or "")
            except Exception:
                uid = ""
            if uid and any(uid.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
                return True
        return False

    @cached_property
    def modality(self) -> str:
        """DICOM Modality (``"OT"`` when absent)."""
        value = fast_get(self.ds, "Modality")
        return str(value).strip().upper() if value else "OT"

    @cached_property
    def rows(self) -> int:
        """Rows."""
        return self._int("Rows", 0) or 0

    @cached_property
    def columns(self) -> int:
        """Columns."""
        return self._int("Columns", 0) or 0

    @cached_property
    def frames(self) -> int:
        """NumberOfFrames (1 when absent)."""
        n = self._int("NumberOfFrames", 1)
        return 1 if n is None else n

    @cached_property
    def samples(self) -> int:
        """SamplesPerPixel (1 when absent)."""
        return self._int("SamplesPerPixel", 1) or 1

    @cached_property
    def bits_allocated(self) -> int:
        """BitsAllocated."""
        return self._int("BitsAllocated", 0) or 0

    @cached_property
    def bits_stored(self) -> int:
        """BitsStored (BitsAllocated when absent)."""
        return self._int("BitsStored", self.bits_allocated) or self.bits_allocated

    @cached_property
    def signed(self) -> bool:
        """PixelRepresentation == 1."""
        return (self._int("PixelRepresentation", 0) or 0) == 1

    @cached_property
    def photometric(self) -> str:
        """PhotometricInterpretation (``"MONOCHROME2"`` when absent)."""
        value = fast_get(self.ds, "PhotometricInterpretation")
        return str(value).strip().upper() if value else "MONOCHROME2"

    @cached_property
    def is_native(self) -> bool:
        """Uncompressed (native) pixel data."""
        return self.transfer_syntax in _NATIVE

    @cached_property
    def is_enhanced(self) -> bool:
        """Whether the object carries functional groups (enhanced multi-frame)."""
        return "PerFrameFunctionalGroupsSequence" in self.ds or "SharedFunctionalGroupsSequence" in self.ds

    @cached_property
    def series_uid(self) -> str | None:
        """SeriesInstanceUID (internal grouping only; never printed)."""
        value = fast_get(self.ds, "SeriesInstanceUID")
        return str(value) if value else None

    @cached_property
    def series_number(self) -> int | None:
        """SeriesNumber."""
        try:
            return self._int("SeriesNumber", None)
        except CorruptFileError:
            return None

    def position(self) -> np.ndarray | None:
        """ImagePositionPatient (mm) or None."""
        key = "ImagePositionPatient"
        if key not in self._cache:
            self._cache[key] = self._floats("ImagePositionPatient", 3)
        return self._cache[key]

    def orientation(self) -> np.ndarray | None:
        """ImageOrientationPatient (6 direction cosines) or None."""
        key = "ImageOrientationPatient"
        if key not in self._cache:
            self._cache[key] = self._floats("ImageOrientationPatient", 6)
        return self._cache[key]

    def pixel_spacing(self) -> np.ndarray | None:
        """PixelSpacing (row spacing, column spacing) mm, or None."""
        key = "PixelSpacing"
        if key not in self._cache:
            self._cache[key] = self._floats("PixelSpacing", 2)
        return self._cache[key]

    def projection_spacing(self) -> tuple[tuple[float, float], str]:
        """Pixel spacing of a projection radiograph and the attribute it comes from.

        Returns
        -------
        ((float, float), str)
            ``(row spacing, column spacing)`` in mm and its source: PixelSpacing
            when present and positive; else ImagerPixelSpacing when present and
            positive; else ``(1.0, 1.0)`` and ``"none"`` (spacing unknown: the
            caller warns with :data:`UNKNOWN_SPACING_WARNING`). A value of zero
            (``0\\0``, which many CR/DX exports write) counts as absent.

        Raises
        ------
        CorruptFileError
            A present value that is not two finite numbers, or a negative one
            (keyword: the attribute).

        Notes
        -----
        PS3.3 C.8.11.4.1.1 (DX) and 10.7.1.3: PixelSpacing, when present, is
        calibrated (at the patient); ImagerPixelSpacing is measured at the
        detector. SimpleITK (GDCM) reads only ImagerPixelSpacing for the CR, DX,
        MG and XA storage classes and only PixelSpacing for others, with 1 mm
        when that one is absent or zero; both agree with this rule whenever the
        attribute GDCM reads is the one chosen here.
        """
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = self.pixel_spacing() if keyword == "PixelSpacing" else self._floats(keyword, 2)
            if value is None:
                continue
            if np.any(value < 0):
                raise CorruptFileError("pixel spacing must not be negative", path=self.name, keyword=keyword)
            if np.all(value > 0):
                return (float(value[0]), float(value[1])), keyword
        return (1.0, 1.0), "none"

    def modality_lut(self) -> ModalityLut | None:
        """The Modality LUT Sequence's table, or None when the image has none.

        Returns
        -------
        ModalityLut or None
            See :func:`medmulti.io.values.modality_lut_of`.

        Raises
        ------
        CorruptFileError
            A damaged LUTDescriptor or LUTData (keyword named).
        """
        if "_modality_lut" not in self._cache:
            self._cache["_modality_lut"] = modality_lut_of(
                self.ds, little_endian=self.little_endian, signed=self.signed, name=self.name
            )
        return self._cache["_modality_lut"]

    @cached_property
    def lossy(self) -> bool:
        """Whether the pixels went through lossy compression.

        True when the transfer syntax is lossy by definition
        (:data:`LOSSY_TRANSFER_SYNTAXES`: JPEG baseline/extended, JPEG-LS
        near-lossless, video) or LossyImageCompression is ``"01"`` (set once an
        image has been lossy compressed, even if it is stored uncompressed now;
        PS3.3 C.7.6.1.1.5). A JPEG 2000 file without LossyImageCompression
        counts as not lossy.
        """
        if self.transfer_syntax in LOSSY_TRANSFER_SYNTAXES:
            return True
        try:
            value = self.ds.get("LossyImageCompression", None)
        except Exception:  # an unparseable value: no claim either way
            return False
        return str(value or "").strip() == "01"

    def rescale(self) -> tuple[float, float]:
        """(RescaleSlope, RescaleIntercept) of the top-level dataset (1, 0 when absent).

        Raises
        ------
        UnsupportedDataError
            The image holds a Modality LUT Sequence (keyword
            ``ModalityLUTSequence``): its values are converted by that table
            (:meth:`modality_lut`), never by a slope and intercept, so a reader
            that only applies these refuses rather than return stored values.

        Notes
        -----
        PS3.3 C.11.1. An empty, unparseable, non-finite or zero slope counts as 1.
        """
        if "ModalityLUTSequence" in self.ds and self.ds.get("ModalityLUTSequence", None):
            raise modality_lut_refused(self.name)
        out = []
        for kw, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
            value = fast_get(self.ds, kw)
            if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
                value = value[0] if len(value) else None
            try:
                f = float(value) if value not in (None, "") else default
            except (TypeError, ValueError):
                f = default
            out.append(f if np.isfinite(f) else default)
        if out[0] == 0.0:
            out[0] = 1.0
        return out[0], out[1]

    def stored_dtype(self) -> np.dtype:
        """numpy dtype of the stored native values."""
        ba = self.bits_allocated
        if ba not in (8, 16, 32):
            raise UnsupportedDataError(
                "only 8, 16 or 32 bits allocated per pixel are supported", path=self.name, keyword="BitsAllocated"
            )
        kind = "i" if self.signed else "u"
        return np.dtype(("<" if self.little_endian else ">") + kind + str(ba // 8))

    def expected_pixel_bytes(self) -> int:
        """Bytes of native pixel data implied by Rows, Columns, frames, samples, bits."""
        return self.rows * self.columns * self.frames * self.samples * max(self.bits_allocated, 8) // 8

    def check_image(self, limits: Limits) -> None:
        """Header-level checks of the Image Pixel module, before any allocation.

        Parameters
        ----------
        limits : Limits
            Caps to enforce.

        Raises
        ------
        UnsupportedDataError
            No PixelData, colour data, unsupported bit depth.
        ResourceLimitError
            Declared size beyond the caps.
        CorruptFileError
            Declared size beyond the bytes present (truncated file).
        """
        if "_checked" in self._cache:
            return
        if not self.has_pixels:
            sop = self.ds.get("SOPClassUID") or getattr(getattr(self.ds, "file_meta", None), "MediaStorageSOPClassUID", None)
            if sop is not None and "Image Storage" in str(getattr(sop, "name", "")):  # an image object cut short
                raise CorruptFileError("this image object has no PixelData: the file is probably truncated",
                                       path=self.name, keyword="PixelData")
            raise UnsupportedDataError(
                "this DICOM object holds no image (no PixelData): structured reports, RT plans, "
                "presentation states and waveforms are not images",
                path=self.name,
                keyword="PixelData",
            )
        rows, cols, frames = self.rows, self.columns, self.frames
        if rows <= 0 or cols <= 0 or frames <= 0:
            raise CorruptFileError("Rows, Columns and NumberOfFrames must be positive", path=self.name, keyword="Rows")
        if frames > limits.max_frames:
            raise ResourceLimitError(
                f"more frames than the {limits.max_frames:,}-frame cap", path=self.name, keyword="NumberOfFrames"
            )
        limits.check_voxels(rows * cols * frames * self.samples, path=self.name, keyword="Rows")
        if self.samples != 1 or self.photometric in COLOR_PHOTOMETRICS:
            raise UnsupportedDataError(
                "colour (RGB/YBR/palette) images are not supported; medmulti reads greyscale CT, MR and X-ray",
                path=self.name,
                keyword="PhotometricInterpretation",
            )
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise UnsupportedDataError("unsupported photometric interpretation", path=self.name, keyword="PhotometricInterpretation")
        self.stored_dtype()
        bs = self.bits_stored
        if not 1 <= bs <= self.bits_allocated:
            raise CorruptFileError("BitsStored must be between 1 and BitsAllocated", path=self.name, keyword="BitsStored")
        available = self.file_size - self.pixel_offset
        if self.is_native:
            need = self.expected_pixel_bytes()
            if self.pixel_length is None or self.pixel_length < need:
                raise CorruptFileError(
                    "PixelData is shorter than Rows x Columns x NumberOfFrames x BitsAllocated declare",
                    path=self.name,
                    keyword="PixelData",
                )
            if available < need:
                raise CorruptFileError(
                    "the file is truncated: it ends before the declared pixel data", path=self.name, keyword="PixelData"
                )
            if self.pixel_offset + self.pixel_length > self.file_size:
                raise CorruptFileError(
                    "the file is truncated inside PixelData (shorter than its declared length)", path=self.name, keyword="PixelData"
                )
            self._structure()
        else:
            if self.pixel_length is not None:
                raise CorruptFileError("compressed PixelData must be encapsulated (undefined length)", path=self.name, keyword="PixelData")
            self._structure()
        self._cache["_checked"] = True

    def check_structure(self, f) -> None:
        """Walk the pixel data items / trailing elements with an already open file.

        Called by :func:`read_header` while the file is open (so each file is
        opened once); the outcome is kept and raised by :meth:`check_image`.

        Native pixel data: the elements after PixelData are walked by their
        headers (only when the declared PixelData fits in the file; otherwise
        :meth:`check_image` reports the truncation). Encapsulated pixel data:
        the items are walked up to the Sequence Delimitation Item (the first
        fragment's codestream size is compared with Rows/Columns), then the
        trailing elements. Nothing is done for objects without PixelData.

        Parameters
        ----------
        f : binary file object
            Seekable file holding the dataset this header was parsed from (the
            file itself, or the inflated bytes of a deflated dataset).

        Returns
        -------
        None
            Never raises: a problem found is stored (the
            :class:`~medmulti.errors.MedmultiError` the walk raised, or a
            ``CorruptFileError`` "the pixel data structure cannot be read" for
            any other exception) and raised later by :meth:`check_image`.
        """
        try:
            if self.pixel_offset is None:
                return
            encoding = {"little_endian": self.little_endian, "implicit": self.transfer_syntax == _IMPLICIT_LE}
            if self.is_native:
                if self.pixel_length is not None and self.pixel_offset + self.pixel_length <= self.file_size:
                    check_trailing(f, self.pixel_offset + self.pixel_length, file_size=self.file_size, name=self.name, **encoding)
            elif self.pixel_length is None:
                check_fragments(
                    f, offset=self.pixel_offset, file_size=self.file_size, rows=self.rows, columns=self.columns,
                    frames=self.frames, name=self.name, **encoding,
                )
            self._cache["structure"] = None
        except MedmultiError as exc:
            self._cache["structure"] = exc
        except Exception:
            self._cache["structure"] = CorruptFileError("the pixel data structure cannot be read", path=self.name, keyword="PixelData")

    def _structure(self) -> None:
        if "structure" not in self._cache:
            with self.open_pixels() as f:
                self.check_structure(f)
        err = self._cache["structure"]
        if err is not None:
            raise err

    def open_pixels(self):
        """Return a binary file object positioned at the PixelData value."""
        if self.buffer is not None:
            f = io.BytesIO(self.buffer)
        else:
            f = open_regular(self.path, name=self.name)
        f.seek(self.pixel_offset)
        return f


def base_meta(h: DicomHeader) -> dict[str, Any]:
    """Non-identifying metadata shared by every DICOM reader (numbers and codes only).

    Parameters
    ----------
    h : DicomHeader
        The parsed header of the (first) file.

    Returns
    -------
    dict
        ``{"source": "dicom", "photometric": str, "bits_stored": int,
        "bits_allocated": int, "signed": bool, "compressed": bool, "lossy": bool}``:
        PhotometricInterpretation (``"MONOCHROME2"`` when absent), BitsStored
        (BitsAllocated when absent or 0), BitsAllocated, PixelRepresentation == 1,
        True unless the transfer syntax stores native pixels (implicit or
        explicit VR little endian, explicit VR big endian, deflated explicit VR
        little endian), and :attr:`DicomHeader.lossy`. Readers add their own keys to it.

    Raises
    ------
    CorruptFileError
        If BitsAllocated, BitsStored or PixelRepresentation cannot be parsed as
        an integer.
    """
    return {
        "source": "dicom",
        "photometric": h.photometric,
        "bits_stored": int(h.bits_stored),
        "bits_allocated": int(h.bits_allocated),
        "signed": bool(h.signed),
        "compressed": not h.is_native,
        "lossy": h.lossy,
    }


def read_header(
    path: Path,
    *,
    name: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    head: bytes | None = None,
    check_depth: bool = True,
    fileobj: Any = None,
    only: frozenset[str] | None = None,
) -> DicomHeader:
    """Parse a DICOM file's header (no pixels) and locate its PixelData.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    name : str, optional
        Name for messages (default: the path as given).
    limits : Limits
        Caps (file size, inflated size, sequence depth).
    head : bytes, optional
        The file's first bytes when the caller already read them.
    fileobj : file object, optional
        The file already opened by the caller (binary, seekable); it is used
        and left open, so a folder scan opens each file once.
    check_depth : bool
        Walk every sequence to enforce ``limits.max_depth`` (about 1 ms for a
        large header; series reads skip it: sequences they do not touch are
        never parsed, and undefined-length nesting deep enough to exhaust
        Python's stack is still reported as :class:`ResourceLimitError`).
    only : frozenset of str, optional
        Keep only these attributes (DICOM keywords; the ones the header's own
        accessors and the series checks use must be among them). For a Part 10
        file in explicit VR little endian (native or encapsulated) the dataset is
        then walked by its element headers instead of parsed by pydicom
        (:func:`~medmulti.io.dicom_bytes.select_elements`, about 3x faster; what a
        scan of an export uses), and ``ds`` holds only those attributes (and
        :data:`ALWAYS_KEPT`, which :func:`base_meta` reads). Any other
        file, and any file the walk cannot vouch for, is parsed as without ``only``.

    Returns
    -------
    DicomHeader

    Raises
    ------
    MissingFileError
        The file cannot be opened.
    CorruptFileError
        Not parseable as DICOM, or cut short inside the header.
    ResourceLimitError
        File or inflated data beyond ``limits``, or sequences nested too deep.
    """
    name = str(path) if name is None else name
    if fileobj is not None:
        fileobj.seek(0)
        f = _Borrowed(fileobj)
    else:
        try:
            f = open_regular(path, name=name)
        except OSError:
            raise MissingFileError("the file cannot be opened (missing or unreadable)", path=name) from None
    ladder = reader_errors(
        name,
        nested=f"DICOM sequences are nested deeper than the {limits.max_depth}-level cap",
        memory="the header declares more data than memory allows",
        corrupt="the DICOM header cannot be parsed",  # pydicom/struct/zlib/OSError: text may hold header values
    )
    with f as f, ladder:  # a borrowed file yields the caller's object and is not closed
        size = os.fstat(f.fileno()).st_size
        limits.check_bytes(size, path=name)
        if head is None:
            head = f.read(544)
            f.seek(0)
        fmt = sniff_bytes(head)
        if fmt not in (FileFormat.DICOM, FileFormat.DICOM_RAW):
            raise CorruptFileError("not a DICOM file (no DICM marker and no recognisable dataset)", path=name)
        if len(head) < 2048:
            head = head + f.read(2048 - len(head))
            f.seek(0)
        if only is not None and fmt == FileFormat.DICOM:
            header = _selected_header(Path(path), name, f, head, size, only, limits)
            if header is not None:
                return header
            f.seek(0)
        ds, reader, inflated, ts = parse_dataset(f, name, force=fmt == FileFormat.DICOM_RAW, limits=limits, head=head, strict=False)
        inflated_size = None if inflated is None else len(inflated)
        total = size if inflated is None else inflated_size
        little = ts != "1.2.840.10008.1.2.2"
        pixel_offset, pixel_length = locate_pixel_data(
            reader, reader.tell(), total, transfer_syntax=ts, little_endian=little, name=name
        )
        if pixel_offset is None and inflated is None:
            # no pixel tag reached: a non-image object, or a header cut short
            # (pydicom only warns on that); parse again, watching for short reads
            f.seek(0)
            _, strict_reader, _, _ = parse_dataset(f, name, force=fmt == FileFormat.DICOM_RAW, limits=limits, head=head, strict=True)
            if strict_reader.truncated:
                raise CorruptFileError("the file is truncated inside its header", path=name)
        elif inflated is not None and reader.truncated:
            raise CorruptFileError("the deflated dataset is truncated", path=name)
        header = DicomHeader(
            path=Path(path),
            name=name,
            ds=ds,
            transfer_syntax=ts,
            pixel_offset=pixel_offset,
            pixel_length=pixel_length,
            file_size=total,
            buffer=inflated,
            little_endian=little,
        )
        if check_depth:
            _check_depth(ds, limits, name)
        if pixel_offset is not None:
            header.check_structure(io.BytesIO(inflated) if inflated is not None else f)
        return header


@functools.lru_cache(maxsize=16)
def _tags_of(keywords: frozenset[str]) -> frozenset[int]:
    from pydicom.datadict import tag_for_keyword

    return frozenset(int(t) for t in (tag_for_keyword(k) for k in keywords) if t is not None)


def _selected_header(path: Path, name: str, f, head: bytes, size: int, only: frozenset[str],
                     limits: Limits) -> DicomHeader | None:
    """The header of ``read_header(only=...)`` from the element walk, or None to parse it with pydicom."""
    got = select_elements(f, head, size, _tags_of(only | ALWAYS_KEPT), max_depth=limits.max_depth)
    if got is None:
        return None
    found, ts, sop, offset, length = got
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import BaseTag

    tags = {t: BaseTag(t) for t in found}  # BaseTag(int): pydicom's Tag() parses any form, 3 us each
    ds = Dataset({tags[t]: RawDataElement(tags[t], vr, len(v), v, at, False, True) for t, (vr, at, v) in found.items()})
    ds.file_meta = file_meta_of(ts, sop)
    header = DicomHeader(path=path, name=name, ds=ds, transfer_syntax=ts, pixel_offset=offset, pixel_length=length,
                         file_size=size)
    header.check_structure(f)
    return header


def _check_depth(ds, limits: Limits, name: str) -> None:
    """Walk sequences iteratively (no recursion) and enforce ``max_depth``."""
    from pydicom.datadict import dictionary_VR

    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        for elem in list(current.values()):
            vr = getattr(elem, "VR", None)
            if vr is None or vr == "UN":
                if getattr(elem, "length", 0) == 0xFFFFFFFF:
                    vr = "SQ"
                else:
                    try:
                        vr = dictionary_VR(elem.tag)
                    except KeyError:
                        continue
            if vr != "SQ":
                continue
            if depth + 1 > limits.max_depth:
                raise ResourceLimitError(
                    f"DICOM sequences are nested deeper than the {limits.max_depth}-level cap", path=name
                )
            seq = current[elem.tag].value
            if not hasattr(seq, "__iter__") or isinstance(seq, (bytes, str)):
                continue
            for item in seq:
                if hasattr(item, "values"):
                    stack.append((item, depth + 1))
