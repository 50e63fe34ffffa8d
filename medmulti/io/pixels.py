"""Decode the stored pixel values of one DICOM object, eagerly and strictly.

Native (uncompressed) data is read straight from the file into a preallocated
array (one copy, from the page cache). Compressed data is decoded by pydicom's
decoders (pylibjpeg / openjpeg / pyjpegls / RLE) from the file positioned at the
PixelData value, so the header is not parsed again. Every decoder failure becomes
:class:`~medmulti.errors.CorruptFileError`.

A JPEG 2000 series is decoded by SimpleITK in threads where that gives pydicom's
values (:mod:`medmulti.io.j2k_threads`); otherwise in worker processes
(:func:`decode_series_parallel`):
the openjpeg binding pydicom uses (pylibjpeg-openjpeg) holds the GIL while it
decodes (its ``Decode`` is called without releasing it, and reads the codestream
through Python callbacks) and is built without OpenJPEG's own threads, so threads
do not help (``benchmarks/RESULTS.md``, "Reading"). The workers write each decoded
slice into POSIX shared memory where the platform has it (no frame is pickled or
piped), and this process, which also decodes the last slices no worker has started,
converts them into the output volume.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._processes import WorkerPool
from ..errors import CorruptFileError, MedmultiError, UnsupportedDataError
from .dicom_header import DicomHeader
from .error_ladder import reader_errors
from .safe_files import open_regular
from .values import apply_rescale_into

__all__ = ["read_stored", "fix_bits", "decode_compressed_file", "decode_pool", "decode_series_parallel",
           "PARALLEL_SYNTAXES"]

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
_SHM_DIR = "/dev/shm"  # where POSIX shared memory objects appear as files (Linux)
#: Slices per task sent to a worker: small, so the workers finish together (one
#: 512 x 512 JPEG 2000 slice decodes in about 30 ms).
CHUNK_SLICES = 4


class _Staging:
    """Stored values of a series' slices in POSIX shared memory, written by worker processes.

    The workers write each decoded slice into a shared-memory file (``pwrite``) instead
    of pickling it back through a pipe; this process reads the slices of each finished
    task (``pread``, into one reused slice buffer), converts them into the output volume
    (private memory, as any array) and gives their pages back at once (``MADV_REMOVE``),
    so only the slices in flight take memory. Plain reads and writes: no page of it is
    mapped into any process (no page faults), and a full ``/dev/shm`` is an ``OSError``
    (``ENOSPC``) for the writer, not a SIGBUS. Created through
    :class:`multiprocessing.shared_memory.SharedMemory`, whose resource tracker removes
    the name should this process be killed before :meth:`close`.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        from multiprocessing.shared_memory import SharedMemory

        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.slice_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        nbytes = max(self.slice_bytes * shape[0], 1)
        room = os.statvfs(_SHM_DIR)
        if room.f_bavail * room.f_frsize < nbytes:
            raise OSError("no room in /dev/shm")
        self._shm: Any = SharedMemory(create=True, size=nbytes)
        self._map: mmap.mmap | None = None
        self._fd = -1
        try:
            self.path = os.path.join(_SHM_DIR, self._shm.name.lstrip("/"))
            self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
            self._map = mmap.mmap(self._fd, nbytes)  # only for MADV_REMOVE: never touched
        except BaseException:
            self.close()
            raise
        self._buffer = np.empty(shape[1:], self.dtype)

    @classmethod
    def create(cls, shape: tuple[int, ...], dtype: np.dtype) -> _Staging | None:
        """A staging area, or None where there is no (room in) POSIX shared memory."""
        if not os.path.isdir(_SHM_DIR) or not hasattr(mmap, "MADV_REMOVE") or not hasattr(os, "pread"):
            return None
        try:
            return cls(shape, dtype)
        except (OSError, ValueError):
            return None

    def read(self, k: int) -> np.ndarray:
        """Slice ``k`` as written by a worker (a view of a buffer reused by the next call)."""
        view = memoryview(self._buffer).cast("B")
        if os.preadv(self._fd, [view], k * self.slice_bytes) != self.slice_bytes:
            raise OSError("a staged slice is missing")
        return self._buffer

    def release(self, first: int, stop: int) -> None:
        """Give back the pages that lie wholly inside slices ``first`` to ``stop - 1``."""
        page = mmap.PAGESIZE
        start = -(-first * self.slice_bytes // page) * page
        end = stop * self.slice_bytes // page * page
        if end > start and self._map is not None:
            self._map.madvise(mmap.MADV_REMOVE, start, end - start)

    def close(self) -> None:
        """Close, and remove the name (the memory goes once no worker holds the file open)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        shm, self._shm = self._shm, None
        if shm is not None:
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass


def _decode_chunk(jobs: Sequence[tuple[Any, ...]],
                  target: tuple[str, int, str] | None) -> list[tuple[int, np.ndarray]]:
    """Decode some slices of a series (in a worker process, or in the parent).

    Each job is ``(k, path, offset, transfer_syntax, options, name, buffer)``. With
    ``target`` (staging path, bytes per slice, dtype) slice ``k``'s stored values are
    written at ``k`` times the slice size in the staging file; a slice of another dtype
    or size, and every slice without ``target``, is returned as ``(k, stored values)``.
    """
    fd = -1
    if target is not None:
        path, slice_bytes, dtype = target
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    back = []
    try:
        for k, path_, offset, ts, options, name, buffer in jobs:
            stored = decode_compressed_file(path_, offset, ts, options, name, buffer)
            if fd >= 0 and stored.dtype == np.dtype(dtype) and stored.nbytes == slice_bytes:
                data = memoryview(np.ascontiguousarray(stored)).cast("B")
                if os.pwrite(fd, data, k * slice_bytes) != slice_bytes:
                    raise OSError("a slice could not be staged")
            else:
                back.append((k, stored))
    finally:
        if fd >= 0:
            os.close(fd)
    return back


def decode_series_parallel(hs: Sequence[DicomHeader], rescales: Sequence[tuple[float, float]], workers: int,
                           *, steal: bool = True) -> np.ndarray:
    """Decode a compressed series of single-frame files in worker processes into one volume.

    Parameters
    ----------
    hs : sequence of DicomHeader
        Checked headers of single-frame files, in slice order, all of one size.
    rescales : sequence of (float, float)
        Each slice's (RescaleSlope, RescaleIntercept).
    workers : int
        Worker processes (:func:`decode_pool`); the caller checked
        :func:`medmulti._processes.workers_allowed`.
    steal : bool
        Let this process decode too, taking tasks from the end of the series that no
        worker has started: it works while the workers start up, and on the last
        slices.

    Returns
    -------
    numpy.ndarray
        float32 ``(slices, rows, columns)``, each slice's modality LUT applied.

    Raises
    ------
    MedmultiError
        A slice that does not decode (typed, naming its file).
    Exception
        The pool could not start or a worker died (e.g. ``BrokenProcessPool``): the
        caller decodes in this process instead.

    Notes
    -----
    Workers write the stored values into POSIX shared memory (Linux ``/dev/shm``,
    when it has room), so no decoded slice is pickled or piped; otherwise the slices
    come back through the pool. This process converts each finished task's slices
    into the volume, which lies in ordinary private memory.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    n, shape = len(hs), (len(hs), hs[0].rows, hs[0].columns)
    vol = np.empty(shape, np.float32)
    staging = _Staging.create(shape, hs[0].stored_dtype().newbyteorder("="))
    jobs = [(k, str(h.path), h.pixel_offset, h.transfer_syntax, decode_options(h), h.name, h.buffer)
            for k, h in enumerate(hs)]
    chunks = [jobs[i:i + CHUNK_SLICES] for i in range(0, n, CHUNK_SLICES)]
    target = (staging.path, staging.slice_bytes, staging.dtype.str) if staging is not None else None

    def convert(j: int, back: list[tuple[int, np.ndarray]]) -> None:
        returned = dict(back)
        for k in (job[0] for job in chunks[j]):
            slope, intercept = rescales[k]
            stored = returned[k][0] if k in returned else staging.read(k)  # type: ignore[union-attr]
            apply_rescale_into(stored, vol[k], slope, intercept)
        if staging is not None:
            staging.release(chunks[j][0][0], chunks[j][-1][0] + 1)

    futures: dict[int, Any] = {}
    try:
        pool = decode_pool(workers)
        futures = {j: pool.submit(_decode_chunk, chunk, target) for j, chunk in enumerate(chunks)}
        remaining = dict(futures)
        last = len(chunks) - 1
        while remaining:
            for j in [j for j, fut in remaining.items() if fut.done()]:  # finished tasks, converted at once
                convert(j, remaining.pop(j).result())
            if steal and last in remaining and remaining[last].cancel():
                del remaining[last]
                convert(last, _decode_chunk(chunks[last], None))
                last -= 1
                continue
            steal = False  # a worker has the last chunk left: from now on, only wait
            if remaining:
                wait(list(remaining.values()), return_when=FIRST_COMPLETED)
    except BaseException:
        for fut in futures.values():
            fut.cancel()
        raise
    finally:
        if staging is not None:
            staging.close()
    return vol


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
