"""Recognise a file's format by its content, never by its extension.

* DICOM Part 10: a 128-byte preamble followed by ``DICM``.
* DICOM without preamble/meta (older raw datasets): the first element is a
  plausible group 0x0008 (or 0x0002) tag in little- or big-endian, explicit or
  implicit VR; such files are confirmed by parsing.
* NIfTI-1 / NIfTI-2: ``sizeof_hdr`` (348 / 540, either byte order) and the magic
  string (``n+1``/``ni1`` at byte 344, ``n+2``/``ni2`` at byte 4); also inside gzip.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from enum import Enum
from os import PathLike
from pathlib import Path

from .safe_files import open_regular

__all__ = ["FileFormat", "detect_format", "sniff_bytes"]


class FileFormat(str, Enum):
    """What :func:`detect_format` found."""

    DICOM = "dicom"
    DICOM_RAW = "dicom-raw"  # a dataset without preamble / file meta
    NIFTI = "nifti"
    NIFTI_GZ = "nifti-gz"
    GZIP_DAMAGED = "gzip-damaged"  # a gzip stream that ends or fails before 544 bytes inflate
    UNKNOWN = "unknown"


_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
    b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
    b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}


def _nifti_magic(head: bytes) -> bool:
    if len(head) >= 8:
        for fmt in ("<i", ">i"):
            size = struct.unpack(fmt, head[:4])[0]
            if size == 348 and len(head) >= 348 and head[344:347] in (b"n+1", b"ni1") and head[347:348] == b"\0":
                return True
            if size == 540 and head[4:7] in (b"n+2", b"ni2") and head[7:8] == b"\0":
                return True
    return False


def _raw_dicom(head: bytes) -> bool:
    if len(head) < 8:
        return False
    for endian in ("<", ">"):
        group, elem = struct.unpack(endian + "HH", head[:4])
        if group not in (0x0002, 0x0008):
            continue
        if head[4:6] in _VRS:  # explicit VR
            return True
        length = struct.unpack(endian + "I", head[4:8])[0]  # implicit VR
        if length < 0x10000 and elem < 0x1000:
            return True
    return False


def sniff_bytes(head: bytes) -> FileFormat:
    """Classify the first bytes of a file.

    Parameters
    ----------
    head : bytes
        At least the first 544 bytes of the file (fewer for short files).

    Returns
    -------
    FileFormat
        The format recognised from the bytes alone (``NIFTI_GZ`` needs the
        decompressed head, see :func:`detect_format`).
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return FileFormat.DICOM
    if _nifti_magic(head):
        return FileFormat.NIFTI
    if _raw_dicom(head):
        return FileFormat.DICOM_RAW
    return FileFormat.UNKNOWN


def detect_format(path: str | PathLike[str]) -> FileFormat:
    """Recognise DICOM and NIfTI files by their content.

    Parameters
    ----------
    path : str or PathLike
        A regular file.

    Returns
    -------
    FileFormat
        ``UNKNOWN`` for anything else (including unreadable gzip streams).

    Raises
    ------
    OSError
        If the file cannot be opened (callers turn it into ``MissingFileError``).
    UnsupportedDataError
        A FIFO, socket, device or folder: opened without blocking
        (``O_NONBLOCK``) and refused before any read.
    """
    with open_regular(Path(path)) as f:
        head = f.read(544)
    if head[:2] == b"\x1f\x8b":
        try:
            data, inner = head + _read_more(path), b""
            while True:  # concatenated gzip members may split the header
                d = zlib.decompressobj(wbits=31)
                inner += d.decompress(data, 544 - len(inner))
                data = d.unused_data.lstrip(b"\0")
                if len(inner) >= 544 or not d.eof or data[:2] != b"\x1f\x8b":
                    break
        except (zlib.error, OSError, EOFError, gzip.BadGzipFile):
            return FileFormat.GZIP_DAMAGED
        if _nifti_magic(inner):
            return FileFormat.NIFTI_GZ
        if len(inner) < 544 and not d.eof:  # the stream ended early: a cut file
            return FileFormat.GZIP_DAMAGED
        return FileFormat.UNKNOWN
    return sniff_bytes(head)


def _read_more(path, n: int = 4096) -> bytes:
    # a gzip header plus a little deflate data is enough to inflate 544 bytes
    with open_regular(Path(path)) as f:
        f.seek(544)
        return f.read(n)
