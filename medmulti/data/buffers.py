"""Reusable, 64-byte aligned batch buffers.

Every batch of 3D volumes is tens to hundreds of megabytes. Allocating it afresh
costs page faults and zero-filling of new memory on every batch, which measured
as half of the ``model.fit`` feeding time (``benchmarks/feed.py``). Buffers are
therefore kept in a small process-wide pool and handed out again once nothing
refers to them any more: a buffer is reused only when its reference count shows
that no array view of it is alive (a batch kept by the caller, a tensor that
TensorFlow adopted without copying, a queued batch all hold such a view), so a
reused buffer can never overwrite data someone still holds.

Buffers are 64-byte aligned so TensorFlow adopts them as tensors without a copy
(``tf.numpy_function`` and ``Dataset.from_generator``, which ``model.fit`` uses
for a ``PyDataset``); large NumPy allocations are only 16-byte aligned.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["aligned_empty", "pooled_empty", "clear_pool", "pool_bytes"]

ALIGN = 64
#: Bytes of buffers the pool keeps at most; beyond it, batches are plain allocations.
MAX_POOL_BYTES = 2 * 2**30

_LOCK = threading.Lock()
_POOL: list[np.ndarray] = []
_POOL_BYTES = 0
# references to a free pooled buffer: the pool's list, and getrefcount's argument
_FREE_REFS = 2


def _view(buf: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    off = (-buf.ctypes.data) % ALIGN
    return buf[off:off + nbytes].view(dtype).reshape(shape)


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Return a new uninitialised array whose data starts on a 64-byte boundary.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : numpy dtype
        Element type (default float32).

    Returns
    -------
    numpy.ndarray
        A view of a fresh ``uint8`` buffer (its ``base``).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return _view(np.empty(nbytes + ALIGN, np.uint8), tuple(shape), dtype)


def pooled_empty(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Return an uninitialised aligned array, reusing a pooled buffer that nobody holds.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : numpy dtype
        Element type (default float32).

    Returns
    -------
    numpy.ndarray
        A view of a pooled buffer of exactly the needed size (or of a fresh
        buffer, pooled when the pool has room). Its contents are arbitrary.

    Notes
    -----
    Thread-safe. A buffer returns to the pool by itself when the last array or
    tensor viewing it is released; the caller does nothing.
    """
    global _POOL_BYTES
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + ALIGN
    with _LOCK:
        for buf in _POOL:
            if buf.size == size and sys.getrefcount(buf) == _FREE_REFS + 1:  # + the loop variable
                return _view(buf, shape, dtype)  # the view's reference marks it taken before the lock is released
        buf = np.empty(size, np.uint8)
        if _POOL_BYTES + size <= MAX_POOL_BYTES:
            _POOL.append(buf)
            _POOL_BYTES += size
        return _view(buf, shape, dtype)


def clear_pool() -> None:
    """Forget every pooled buffer (arrays still in use stay valid)."""
    global _POOL_BYTES
    with _LOCK:
        _POOL.clear()
        _POOL_BYTES = 0


def pool_bytes() -> int:
    """Bytes held by the pool (free and in use)."""
    with _LOCK:
        return _POOL_BYTES
