"""Parse one DICOM file's header once, strictly, and locate its pixel data.

Everything later (geometry checks, truncation checks, digests, decoding) works
from the :class:`DicomHeader` built here, so each file is parsed exactly once.
pydicom does the parsing (``stop_before_pixels``); the file object is wrapped so
that a header cut short is reported as corrupt instead of silently accepted (pydicom
only warns), and every exception from pydicom is wrapped at this boundary.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptFileError, MedmultiError, MissingFileError, ResourceLimitError, UnsupportedDataError
from .detect import FileFormat, sniff_bytes
from .limits import DEFAULT_LIMITS, Limits
from .safe_files import open_regular

__all__ = ["DicomHeader", "read_header", "PROJECTION_MODALITIES", "COLOR_PHOTOMETRICS"]

#: Projection radiography modalities: 2D, no patient-space geometry.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX", "RG", "DF"})
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
_PIXEL_TAG = 0x7FE00010
_OTHER_PIXEL_TAGS = {0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}  # deflated explicit LE (+ image frame)
_DEFLATED_BYTES = tuple(uid.encode() for uid in _DEFLATED)
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


# Attributes read for every file of a series: converted straight from the raw
# element bytes (pydicom's generic conversion costs ~20-50 us per attribute,
# which dominated series reading). Anything unexpected falls back to pydicom.
_FAST = {
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "SamplesPerPixel": (0x00280002, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "SeriesNumber": (0x00200011, "IS"),
    "Modality": (0x00080060, "CS"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "MediaStorageSOPClassUID": (0x00020002, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "PixelSpacing": (0x00280030, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
}
_MISSING = object()


def fast_get(ds: Any, keyword: str) -> Any:
    """Value of a common attribute from its raw bytes (pydicom's conversion otherwise).

    Parameters
    ----------
    ds : pydicom.Dataset
    keyword : str
        One of the keywords in ``_FAST`` (others go to ``ds.get``).

    Returns
    -------
    int, str, list of str or None
        US as int; CS/UI as stripped text; IS/DS as text, or a list of texts
        when multi-valued (callers convert); None when absent.
    """
    spec = _FAST.get(keyword)
    store = getattr(ds, "_dict", None)
    if spec is None or store is None:
        return ds.get(keyword, None)
    tag, vr = spec
    elem = store.get(tag, _MISSING)
    if elem is _MISSING:
        return None
    raw = getattr(elem, "is_raw", False)
    if not raw or (elem.VR is not None and elem.VR != vr) or elem.value is None:
        return ds.get(keyword, None)
    data = elem.value
    if vr == "US":
        if len(data) != 2:
            return ds.get(keyword, None)
        return struct.unpack("<H" if elem.is_little_endian else ">H", data)[0]
    text = data.decode("latin-1").strip(" \x00")
    if vr in ("DS", "IS") and "\\" in text:
        return [t.strip() for t in text.split("\\")]
    return text


class _StrictReader:
    """File wrapper that records reads cut short by the end of the file."""

    def __init__(self, raw, name: str) -> None:
        self._raw = raw
        self.name = name
        self.truncated = False

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if n is not None and n > 0 and len(data) < n and not (n == 8 and len(data) == 0):
            self.truncated = True
        return data

    def seek(self, *args):
        return self._raw.seek(*args)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:  # pydicom must not close our file
        pass


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def codestream_dims(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) declared inside a JPEG / JPEG-LS / JPEG 2000 codestream.

    Reads the SIZ marker (JPEG 2000, ISO/IEC 15444-1 A.5.1), the ``ihdr`` box of a
    JP2 file, or the SOF marker (JPEG / JPEG-LS). Checked against Rows/Columns
    before decoding, so a header whose sizes were changed cannot make a decoder
    allocate an image of another size. None when not recognised (RLE, other).

    Parameters
    ----------
    data : bytes
        The first bytes of the first fragment.

    Returns
    -------
    (int, int) or None
    """
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 24:  # SOC + SIZ
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
        return (ysiz - yo, xsiz - xo)
    if data[4:8] == b"jP  ":
        i = data.find(b"ihdr")
        if i >= 0 and len(data) >= i + 12:
            h, w = struct.unpack(">II", data[i + 4 : i + 12])
            return (h, w)
        return None
    if data[:2] == b"\xff\xd8":  # JPEG SOI: walk the marker segments to the SOF
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            seg = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
            if marker in _SOF_MARKERS:
                if pos + 9 > len(data):
                    return None
                y, x = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return (y, x) if y else None  # Y may be 0 (set by a later DNL marker)
            pos += 2 + seg
    return None


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

    def rescale(self) -> tuple[float, float]:
        """(RescaleSlope, RescaleIntercept) of the top-level dataset (1, 0 when absent).

        Notes
        -----
        PS3.3 C.11.1. An empty, unparseable, non-finite or zero slope counts as 1.
        """
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
            if self.is_native:
                if self.pixel_length is not None and self.pixel_offset + self.pixel_length <= self.file_size:
                    self._check_trailing(self.pixel_offset + self.pixel_length, f)
            elif self.pixel_length is None:
                self._check_fragments(f)
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

    def _check_fragments(self, f) -> None:
        """Walk the encapsulated items (headers only) up to the sequence delimiter.

        Raises
        ------
        CorruptFileError
            If the file ends before the Sequence Delimitation Item, an item runs
            past the end of the file, or an unexpected tag appears (PS3.5 A.4).
        """
        n_items = 0
        e = "<" if self.little_endian else ">"
        f.seek(self.pixel_offset)
        pos, end = self.pixel_offset, self.file_size
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFileError(
                    "the file is truncated inside the compressed pixel data", path=self.name, keyword="PixelData"
                )
            group, elem, length = struct.unpack(e + "HHI", head)
            pos += 8
            if (group, elem) == (0xFFFE, 0xE0DD):
                break
            if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF or pos + length > end:
                raise CorruptFileError(
                    "the compressed pixel data is damaged or truncated (bad item)", path=self.name, keyword="PixelData"
                )
            n_items += 1
            if n_items > self.frames + 1 + 4 * self.frames * 64 + 1024:  # fragments per frame are bounded in practice
                raise CorruptFileError("too many pixel data fragments", path=self.name, keyword="PixelData")
            if n_items == 2 and length:
                dims = codestream_dims(f.read(min(length, 4096)))
                if dims is not None and dims != (self.rows, self.columns):
                    raise CorruptFileError(
                        "the compressed image's own size disagrees with Rows/Columns", path=self.name, keyword="Rows"
                    )
            pos += length
            f.seek(pos)
        if n_items < 2:  # the Basic Offset Table item plus at least one fragment
            raise CorruptFileError("the compressed pixel data holds no fragment", path=self.name, keyword="PixelData")
        self._check_trailing(pos, f)

    def _check_trailing(self, pos: int, f) -> None:
        """Walk the elements after PixelData (e.g. DataSetTrailingPadding) by their headers.

        Raises
        ------
        CorruptFileError
            If one of them runs past the end of the file (the file was cut).
        """
        e = "<" if self.little_endian else ">"
        implicit = self.transfer_syntax == "1.2.840.10008.1.2"
        for _ in range(64):
            if self.file_size - pos == 0:
                return
            f.seek(pos)
            head = f.read(12)
            if len(head) < 8:
                if head.strip(b"\x00"):
                    raise CorruptFileError("the file is truncated after the pixel data", path=self.name)
                return
            if implicit:
                length = struct.unpack(e + "I", head[4:8])[0]
                start = pos + 8
            elif head[4:6] in _LONG_VRS:
                if len(head) < 12:
                    raise CorruptFileError("the file is truncated after the pixel data", path=self.name)
                length = struct.unpack(e + "I", head[8:12])[0]
                start = pos + 12
            else:
                length = struct.unpack(e + "H", head[6:8])[0]
                start = pos + 8
            if length == 0xFFFFFFFF:
                return  # an undefined-length trailing sequence: not walked
            if start + length > self.file_size:
                raise CorruptFileError("the file is truncated after the pixel data", path=self.name)
            pos = start + length

    def open_pixels(self):
        """Return a binary file object positioned at the PixelData value."""
        if self.buffer is not None:
            f = io.BytesIO(self.buffer)
        else:
            f = open_regular(self.path, name=self.name)
        f.seek(self.pixel_offset)
        return f


def _inflate(fp, path_name: str, limits: Limits) -> bytes:
    """Inflate a deflated dataset in bounded steps (a deflate bomb stops at the cap)."""
    try:  # ISA-L when installed (about 2.3x faster), else zlib
        from isal import isal_zlib

        d = isal_zlib.decompressobj(wbits=-15)
    except ImportError:  # pragma: no cover - isal is a dependency
        d = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks, total = [], 0
    step = 1 << 20
    while not d.eof:
        data = d.unconsumed_tail or fp.read(1 << 16)
        if not data:
            break
        out = d.decompress(data, step)
        total += len(out)
        if total > limits.max_bytes:
            raise ResourceLimitError(
                f"the deflated dataset inflates beyond the {limits.max_bytes:,}-byte cap",
                path=path_name,
                keyword="TransferSyntaxUID",
            )
        chunks.append(out)
    return b"".join(chunks)


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_KNOWN_TS = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.2": (False, False),
}


def _scan_meta(head: bytes) -> tuple[int, str, str] | None:
    """Locate the file meta group (explicit VR little endian) in the first bytes.

    Returns ``(end offset, TransferSyntaxUID, MediaStorageSOPClassUID)``, or None
    when the group is not entirely inside ``head`` or looks unusual (pydicom then
    parses the file the ordinary way).
    """
    pos, ts, sop = 132, "", ""
    while pos + 8 <= len(head):
        group, elem = struct.unpack("<HH", head[pos : pos + 4])
        if group != 0x0002:
            return (pos, ts, sop) if ts else None
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length = struct.unpack("<I", head[pos + 8 : pos + 12])[0]
            start = pos + 12
        elif vr.isalpha() and vr.isupper():
            length = struct.unpack("<H", head[pos + 6 : pos + 8])[0]
            start = pos + 8
        else:
            return None
        if length == 0xFFFFFFFF or start + length > len(head):
            return None
        if elem == 0x0010:
            ts = head[start : start + length].decode("ascii", "replace").strip(" \x00")
        elif elem == 0x0002:
            sop = head[start : start + length].decode("ascii", "replace").strip(" \x00")
        pos = start + length
    return None


def _at_pixels(tag, vr, length) -> bool:
    # int() first: pydicom's BaseTag compares in Python, int compares in C
    return 0x7FE00008 <= int(tag) <= 0x7FE00010


def _parse(fp, path_name: str, *, force: bool, limits: Limits, head: bytes, strict: bool):
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    reader = _StrictReader(fp, path_name) if strict else fp
    if not strict and not force and head[128:132] == b"DICM":
        # fast path: meta group scanned here, the dataset parsed by pydicom's
        # read_dataset (skips FileDataset/FileMetaDataset construction, ~40% of dcmread)
        meta = _scan_meta(head)
        if meta is not None and meta[1] not in _DEFLATED:
            end, ts, sop = meta
            implicit, little = _KNOWN_TS.get(ts, (False, True))
            fp.seek(end)
            ds = read_dataset(fp, implicit, little, stop_when=_at_pixels)
            from pydicom.dataset import FileMetaDataset

            fm = FileMetaDataset()
            fm.TransferSyntaxUID = ts
            if sop:
                fm.MediaStorageSOPClassUID = sop
            ds.file_meta = fm
            return ds, fp, None, ts
    if any(uid in head for uid in _DEFLATED_BYTES):
        preamble = read_preamble(reader, force)
        meta = _read_file_meta_info(reader) if preamble is not None or force else None
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if ts in _DEFLATED:
            inflated = _inflate(fp, path_name, limits)
            sub = _StrictReader(io.BytesIO(inflated), path_name)
            ds = pydicom.dcmread(sub, force=True, stop_before_pixels=True)
            ds.file_meta = meta
            return ds, sub, inflated, ts
        reader.seek(0)
    ds = pydicom.dcmread(reader, force=force, stop_before_pixels=True)
    tsu = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsu:
        ts = str(tsu)
    else:  # raw dataset: pydicom guessed the encoding
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ts = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    return ds, reader, None, ts


def read_header(
    path: Path,
    *,
    name: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    head: bytes | None = None,
    check_depth: bool = True,
    fileobj: Any = None,
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
    with f as f:  # a borrowed file yields the caller's object and is not closed
        try:
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
            ds, reader, inflated, ts = _parse(f, name, force=fmt == FileFormat.DICOM_RAW, limits=limits, head=head, strict=False)
            inflated_size = None if inflated is None else len(inflated)
            pos = reader.tell()
            total = size if inflated is None else inflated_size
            little = ts != "1.2.840.10008.1.2.2"
            pixel_offset = pixel_length = None
            if total - pos >= 8:
                reader.seek(pos)
                raw = reader.read(12)
                tag = (struct.unpack("<HH" if little else ">HH", raw[:4]))
                tag = (tag[0] << 16) | tag[1]
                if tag in _OTHER_PIXEL_TAGS:
                    raise UnsupportedDataError("float pixel data is not supported", path=name, keyword=_OTHER_PIXEL_TAGS[tag])
                if tag == _PIXEL_TAG:
                    e = "<" if little else ">"
                    if ts == "1.2.840.10008.1.2":  # implicit VR
                        length = struct.unpack(e + "I", raw[4:8])[0]
                        pixel_offset = pos + 8
                    else:
                        if len(raw) < 12:
                            raise CorruptFileError("the file is truncated at PixelData", path=name, keyword="PixelData")
                        length = struct.unpack(e + "I", raw[8:12])[0]
                        pixel_offset = pos + 12
                    pixel_length = None if length == 0xFFFFFFFF else length
            if pixel_offset is None and inflated is None:
                # no pixel tag reached: a non-image object, or a header cut short
                # (pydicom only warns on that); parse again, watching for short reads
                f.seek(0)
                _, strict_reader, _, _ = _parse(f, name, force=fmt == FileFormat.DICOM_RAW, limits=limits, head=head, strict=True)
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
        except MedmultiError:
            raise
        except RecursionError:
            raise ResourceLimitError(
                f"DICOM sequences are nested deeper than the {limits.max_depth}-level cap", path=name
            ) from None
        except MemoryError:
            raise ResourceLimitError("the header declares more data than memory allows", path=name) from None
        except Exception:  # pydicom/struct/zlib/OSError: text may hold header values
            raise CorruptFileError("the DICOM header cannot be parsed", path=name) from None


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
