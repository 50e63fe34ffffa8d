"""Size bombs: small files that declare (or inflate to) enormous sizes.

Each builder writes one file and returns its path. A correct reader refuses each
with :class:`~medmulti.errors.ResourceLimitError` or
:class:`~medmulti.errors.CorruptFileError` quickly and before allocating.
"""

from __future__ import annotations

import struct
import zlib
from os import PathLike
from pathlib import Path

__all__ = [
    "dicom_huge_declared",
    "dicom_huge_encapsulated",
    "nifti_huge_declared",
    "nifti2_huge_declared",
    "deflate_bomb",
    "nested_sequences",
    "BOMBS",
]

_EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _meta(sop_class: str, ts: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _image_ds(ts: str, rows: int, cols: int, frames: int | None):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.file_meta = _meta("1.2.840.10008.5.1.4.1.1.2", ts)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    return ds


def dicom_huge_declared(path: str | PathLike[str], *, rows: int = 65535, cols: int = 65535,
                        frames: int = 10000, pixel_bytes: int = 1024) -> Path:
    """A CT object declaring ``rows x cols x frames`` 16-bit pixels with ``pixel_bytes`` of data."""
    ds = _image_ds(_EXPLICIT_LE, rows, cols, frames)
    ds.PixelData = bytes(pixel_bytes)
    ds["PixelData"].VR = "OW"
    p = Path(path)
    ds.save_as(p, enforce_file_format=True)
    return p


def dicom_huge_encapsulated(path: str | PathLike[str], *, rows: int = 65535, cols: int = 65535,
                            frames: int = 10000) -> Path:
    """Like :func:`dicom_huge_declared` but RLE-encapsulated with one small fragment."""
    from pydicom.encaps import encapsulate

    ds = _image_ds("1.2.840.10008.1.2.5", rows, cols, frames)
    header = struct.pack("<16I", 1, 64, *([0] * 14))  # one RLE segment
    ds.PixelData = encapsulate([header + b"\x7f" + bytes(128) * 8])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    p = Path(path)
    ds.save_as(p, enforce_file_format=True)
    return p


def nifti_huge_declared(path: str | PathLike[str], *, size: int = 30000) -> Path:
    """A 352-byte NIfTI-1 file (header + empty extension flag) declaring ``size**3`` int16 voxels."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, size, size, size, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 4, 16)  # int16
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)
    struct.pack_into("<f", hdr, 112, 1.0)
    struct.pack_into("<hh", hdr, 252, 0, 1)
    struct.pack_into("<4f", hdr, 280, 1, 0, 0, 0)
    struct.pack_into("<4f", hdr, 296, 0, 1, 0, 0)
    struct.pack_into("<4f", hdr, 312, 0, 0, 1, 0)
    hdr[344:348] = b"n+1\0"
    p = Path(path)
    p.write_bytes(bytes(hdr) + b"\0\0\0\0")
    return p


def nifti2_huge_declared(path: str | PathLike[str], *, size: int = 2**40) -> Path:
    """A 544-byte NIfTI-2 file declaring ``size x size x 1`` float32 voxels (an int64 overflow bait)."""
    hdr = bytearray(540)
    struct.pack_into("<i", hdr, 0, 540)
    hdr[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into("<hh", hdr, 12, 16, 32)  # float32
    struct.pack_into("<8q", hdr, 16, 3, size, size, 1, 1, 1, 1, 1)
    struct.pack_into("<8d", hdr, 104, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<q", hdr, 168, 544)
    struct.pack_into("<d", hdr, 176, 1.0)
    struct.pack_into("<ii", hdr, 344, 0, 1)
    struct.pack_into("<4d", hdr, 400, 1, 0, 0, 0)
    struct.pack_into("<4d", hdr, 432, 0, 1, 0, 0)
    struct.pack_into("<4d", hdr, 464, 0, 0, 1, 0)
    p = Path(path)
    p.write_bytes(bytes(hdr) + b"\0\0\0\0")
    return p


def deflate_bomb(path: str | PathLike[str], *, inflated_mib: int = 256) -> Path:
    """A deflated-transfer-syntax DICOM whose dataset inflates to about ``inflated_mib`` MiB.

    The deflate stream repeats one full-flushed block of a compressed MiB of a
    private OB value, so the file is ~1 KiB per inflated MiB and builds instantly.
    """
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = _image_ds("1.2.840.10008.1.2.1.99", 16, 16, None)
    del ds.file_meta
    # the inflated body: a small valid dataset followed by one huge OB element
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    head = fp.getvalue()
    n = inflated_mib << 20
    head += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, n)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    c2 = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = c2.compress(bytes(1 << 20)) + c2.flush(zlib.Z_FULL_FLUSH)
    stream = first + block * inflated_mib + b"\x03\x00"
    # file meta (explicit VR little endian) written by pydicom, then the raw stream
    outer = Dataset()
    outer.file_meta = _meta("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1.99")
    meta_io = DicomBytesIO()
    meta_io.is_little_endian, meta_io.is_implicit_VR = True, False
    write_file_meta_info(meta_io, outer.file_meta, enforce_standard=True)
    p = Path(path)
    p.write_bytes(b"\0" * 128 + b"DICM" + meta_io.getvalue() + stream)
    return p


def nested_sequences(path: str | PathLike[str], *, depth: int = 300, undefined: bool = True) -> Path:
    """A CT object with a private sequence nested ``depth`` levels deep (explicit VR LE)."""
    ds = _image_ds(_EXPLICIT_LE, 4, 4, None)
    ds.PixelData = bytes(32)
    ds["PixelData"].VR = "OW"
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    body = fp.getvalue()
    # splice the nested sequence in before PixelData (tag order: 0008,1140 < 7FE0)
    tag = struct.pack("<HH", 0x0008, 0x1140)  # ReferencedImageSequence
    if undefined:
        inner = b""
        for _ in range(depth):
            inner = (tag + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
                     + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
                     + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    else:
        inner = b""
        for _ in range(depth):
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = tag + b"SQ\0\0" + struct.pack("<I", len(item)) + item
    cut = body.index(struct.pack("<HH", 0x0008, 0x0060))  # Modality follows 0008,0018 in tag order
    # put the sequence after Modality (0008,0060) and before anything in group 0010+
    mod_end = cut + 8 + struct.unpack_from("<H", body, cut + 6)[0]
    body = body[:mod_end] + inner + body[mod_end:]
    meta_io = DicomBytesIO()
    meta_io.is_little_endian, meta_io.is_implicit_VR = True, False
    write_file_meta_info(meta_io, ds.file_meta, enforce_standard=True)
    p = Path(path)
    p.write_bytes(b"\0" * 128 + b"DICM" + meta_io.getvalue() + body)
    return p


#: name -> (builder, kwargs): the size-bomb battery
BOMBS = {
    "dicom_65535x65535x10000_1KiB": (dicom_huge_declared, {}),
    "dicom_65535x65535_single_frame": (dicom_huge_declared, {"frames": 1}),
    "dicom_rle_65535x65535x10000": (dicom_huge_encapsulated, {}),
    "nifti1_30000cubed_352B": (nifti_huge_declared, {}),
    "nifti2_2pow40_squared": (nifti2_huge_declared, {}),
    "dicom_deflate_bomb_256MiB": (deflate_bomb, {"inflated_mib": 256}),
    "dicom_sequence_nested_300_undefined": (nested_sequences, {"depth": 300}),
    "dicom_sequence_nested_300_defined": (nested_sequences, {"depth": 300, "undefined": False}),
}
