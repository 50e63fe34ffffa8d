"""Decode the stored pixel values of one DICOM object, eagerly and strictly.

Native (uncompressed) data is read straight from the file into a preallocated
array (one copy, from the page cache). Compressed data is decoded by pydicom's
decoders (pylibjpeg / openjpeg / pyjpegls / RLE) from the file positioned at the
PixelData value, so the header is not parsed again. Every decoder failure becomes
:class:`~medmulti.errors.CorruptFileError`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from typing import Any

import numpy as np

from .._processes import WorkerPool
from ..errors import CorruptFileError, MedmultiError, UnsupportedDataError
from .dicom_header import DicomHeader
from .error_ladder import reader_errors
from .safe_files import open_regular

__all__ = ["read_stored", "fix_bits", "decode_compressed_file", "decode_pool", "PARALLEL_SYNTAXES"]

#: Transfer syntaxes whose decoding is slow enough for process parallelism to pay
#: (JPEG 2000 lossless/lossy, HTJ2K). Measured: threads do not help (the GIL),
#: JPEG baseline / JPEG-LS / RLE decode faster than the inter-process copy pays.
PARALLEL_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)


def fix_bits(stored: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Drop bits above BitsStored (in place), sign-extending signed values.

    Parameters
    ----------
    stored : numpy.ndarray
        Integer values as allocated (8/16/32 bits).
    bits_stored : int
        BitsStored.
    signed : bool
        PixelRepresentation == 1.

    Returns
    -------
    numpy.ndarray
        ``stored`` (modified in place when needed).

    Notes
    -----
    PS3.5 8.1.1: bits above HighBit are not part of the pixel value.
    """
    nbits = stored.dtype.itemsize * 8
    if bits_stored >= nbits or stored.dtype.kind not in "iu":
        return stored
    if signed:
        shift = nbits - bits_stored
        signed_view = stored.view(stored.dtype.newbyteorder("=").str.replace("u", "i")) if stored.dtype.kind == "u" else stored
        np.left_shift(signed_view, shift, out=signed_view)
        np.right_shift(signed_view, shift, out=signed_view)
    else:
        np.bitwise_and(stored, stored.dtype.type(2**bits_stored - 1), out=stored)
    return stored


def decode_options(h: DicomHeader) -> dict[str, Any]:
    return {
        "rows": h.rows,
        "columns": h.columns,
        "samples_per_pixel": h.samples,
        "bits_allocated": h.bits_allocated,
        "bits_stored": h.bits_stored,
        "pixel_representation": 1 if h.signed else 0,
        "photometric_interpretation": h.photometric,
        "number_of_frames": h.frames,
        "pixel_keyword": "PixelData",
    }


def _check_fragments(f, offset: int, name: str) -> None:
    """Walk the encapsulated items (PS3.5 A.4): each must fit in the file, and the
    sequence delimiter must follow them; decoders would otherwise pad a truncated
    fragment silently. Leaves ``f`` at ``offset``."""
    import struct

    size = f.seek(0, 2)
    pos = offset
    while True:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFileError("the encapsulated pixel data is truncated (no sequence delimiter)", path=name, keyword="PixelData")
        group, elem, length = struct.unpack("<HHI", head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000) or pos + 8 + length > size:
            raise CorruptFileError("the encapsulated pixel data is truncated or malformed", path=name, keyword="PixelData")
        pos += 8 + length
    f.seek(offset)


def decode_compressed_file(path: str, offset: int, transfer_syntax: str, options: dict[str, Any], name: str, buffer: bytes | None = None) -> np.ndarray:
    """Decode encapsulated PixelData located at ``offset`` in ``path``.

    Runs in worker processes too, so it takes plain arguments.

    Parameters
    ----------
    path : str
        The file.
    offset : int
        Offset of the PixelData value (the Basic Offset Table item).
    transfer_syntax : str
        Transfer syntax UID.
    options : dict
        pydicom decoding options (rows, columns, bits...).
    name : str
        File name for messages.
    buffer : bytes, optional
        In-memory dataset to read from instead of ``path``.

    Returns
    -------
    numpy.ndarray
        ``(frames, rows, columns)`` stored values.

    Raises
    ------
    CorruptFileError
        If the data cannot be decoded or decodes to the wrong size.
    UnsupportedDataError
        If no decoder is available for the transfer syntax.
    """
    import io

    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        decoder = get_decoder(UID(transfer_syntax))
    except Exception:
        raise UnsupportedDataError("no pixel decoder for this transfer syntax", path=name, keyword="TransferSyntaxUID") from None
    if not decoder.is_available:
        raise UnsupportedDataError(
            "the pixel decoder for this transfer syntax is not installed", path=name, keyword="TransferSyntaxUID"
        )
    ladder = reader_errors(
        name,
        keyword="PixelData",
        memory="decoding the pixel data needs more memory than available",
        corrupt="the compressed pixel data cannot be decoded",
        panics=True,  # also pyo3's PanicException (a Rust decoder such as pylibjpeg-rle panicked), not an Exception
    )
    with ladder, (io.BytesIO(buffer) if buffer is not None else open_regular(path, name=name)) as f:
        _check_fragments(f, offset, name)
        arr, _ = decoder.as_array(f, **options)
    rows, cols, frames = options["rows"], options["columns"], options["number_of_frames"]
    if arr.size != rows * cols * frames:
        raise CorruptFileError("decoded pixel data does not match Rows x Columns x NumberOfFrames", path=name, keyword="PixelData")
    arr = arr.reshape(frames, rows, cols)
    return fix_bits(arr, options["bits_stored"], options["pixel_representation"] == 1)


def read_stored(h: DicomHeader, out: np.ndarray | None = None) -> np.ndarray:
    """Return all frames of a checked header as stored values ``(frames, rows, cols)``.

    Parameters
    ----------
    h : DicomHeader
        A header that passed :meth:`DicomHeader.check_image`.
    out : numpy.ndarray, optional
        Destination of the native dtype and shape ``(frames, rows, cols)``;
        reused between slices of a series to avoid allocations.

    Returns
    -------
    numpy.ndarray
        Stored values in native byte order.

    Raises
    ------
    CorruptFileError
        Truncated or undecodable data.
    """
    shape = (h.frames, h.rows, h.columns)
    if not h.is_native:
        return decode_compressed_file(str(h.path), h.pixel_offset, h.transfer_syntax, decode_options(h), h.name, h.buffer)
    dtype = h.stored_dtype()
    if out is None or out.shape != shape or out.dtype != dtype.newbyteorder("="):
        out = np.empty(shape, dtype=dtype.newbyteorder("="))
    try:
        if h.buffer is not None:
            n = out.nbytes
            src = np.frombuffer(h.buffer, dtype=dtype, count=out.size, offset=h.pixel_offset)
            out[...] = src.reshape(shape)
        else:
            with open_regular(h.path, name=h.name) as f:
                f.seek(h.pixel_offset)
                n = f.readinto(memoryview(out).cast("B"))
            if n != out.nbytes:
                raise CorruptFileError("the file is truncated: it ends before the declared pixel data", path=h.name, keyword="PixelData")
            if not h.little_endian and dtype.itemsize > 1:
                out.byteswap(inplace=True)
    except MedmultiError:
        raise
    except (OSError, ValueError):
        raise CorruptFileError("the pixel data cannot be read", path=h.name, keyword="PixelData") from None
    return fix_bits(out, h.bits_stored, h.signed)


# -- parallel decoding ----------------------------------------------------------
_POOL: WorkerPool | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def decode_pool(workers: int) -> WorkerPool:
    """Return the shared process pool used to decode compressed series.

    The pool is created on first use (``forkserver`` start method, safe with
    threads already running, e.g. TensorFlow's) and reused; it is shut down at
    interpreter exit. As with any multiprocessing code, a script that reads
    JPEG 2000 series at module level needs an ``if __name__ == "__main__":``
    guard (workers import the main module); without one the pool fails and the
    series is decoded in the calling process.

    Parameters
    ----------
    workers : int
        Number of worker processes.

    Returns
    -------
    medmulti._processes.WorkerPool
        Its workers ignore Ctrl-C; the ``medmulti`` command stops them on one.
    """
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE != workers or _POOL.stopped:
            if _POOL is not None:
                _POOL.shutdown(wait=False, cancel_futures=True)
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            _POOL = WorkerPool(workers, mp_context=mp.get_context(method))
            _POOL_SIZE = workers
        return _POOL


def reset_pool() -> None:
    """Shut the shared decoding pool down (a broken pool is replaced on next use)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=False, cancel_futures=True)
        _POOL, _POOL_SIZE = None, 0


def default_workers() -> int:
    """Worker processes for compressed series: the usable CPU count, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))
