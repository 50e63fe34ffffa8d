"""Reusable, 64-byte aligned batch buffers.

Every batch of 3D volumes is tens to hundreds of megabytes. Allocating it afresh
costs page faults and zero-filling of new memory on every batch, which measured
as a large part of the ``model.fit`` feeding time (``benchmarks/feed.py``).
Buffers are therefore kept in a pool (one per sequence) and handed out again once
nothing refers to them any more: a buffer is reused only when its reference count shows
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

__all__ = ["aligned_empty", "BufferPool", "ALIGN", "MAX_POOL_BYTES"]

ALIGN = 64
#: Default cap on the bytes of buffers one pool keeps; beyond it, batches are plain allocations.
MAX_POOL_BYTES = 2 * 2**30
# references to a free pooled buffer: the pool's list, the loop variable, getrefcount's argument
_FREE_REFS = 3


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


class BufferPool:
    """Aligned batch buffers, handed out again once nothing views them.

    Each :class:`~medmulti.data.PatientSequence` owns one, so its buffers are freed
    with it (or by :meth:`clear`); a pickled pool (a sequence sent to worker
    processes) arrives empty.

    Parameters
    ----------
    max_bytes : int, optional
        Bytes of buffers the pool keeps at most (default: :data:`MAX_POOL_BYTES`
        at construction); arrays asked for beyond it are plain aligned
        allocations.

    Examples
    --------
    >>> pool = BufferPool()
    >>> a = pool.empty((2, 3))
    >>> address = a.ctypes.data
    >>> b = pool.empty((2, 3))        # a is alive: other memory
    >>> b.ctypes.data != address
    True
    >>> del a
    >>> pool.empty((2, 3)).ctypes.data == address   # a's buffer is free again
    True
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = int(MAX_POOL_BYTES if max_bytes is None else max_bytes)
        self._lock = threading.Lock()
        self._buffers: list[np.ndarray] = []
        self._bytes = 0

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Return an uninitialised aligned array, reusing a buffer that nobody holds.

        Parameters
        ----------
        shape : tuple of int
            Array shape.
        dtype : numpy dtype
            Element type (default float32).

        Returns
        -------
        numpy.ndarray
            A view of a pooled buffer of exactly the needed size, or of a fresh
            one (pooled while the pool has room). Its contents are arbitrary.

        Notes
        -----
        Thread-safe. A buffer is free again by itself when the last array or
        tensor viewing it is released; the caller does nothing.
        """
        dtype = np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + ALIGN
        with self._lock:
            for buf in self._buffers:
                if buf.size == size and sys.getrefcount(buf) == _FREE_REFS:
                    return _view(buf, shape, dtype)  # the view's reference marks it taken before the lock is released
            buf = np.empty(size, np.uint8)
            if self._bytes + size <= self.max_bytes:
                self._buffers.append(buf)
                self._bytes += size
            return _view(buf, shape, dtype)

    def clear(self) -> None:
        """Forget every buffer (arrays still in use stay valid)."""
        with self._lock:
            self._buffers.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers the pool holds (free and in use)."""
        with self._lock:
            return self._bytes

    def __reduce__(self):
        return (BufferPool, (self.max_bytes,))

    def __repr__(self) -> str:
        return f"BufferPool({len(self._buffers)} buffers, {self._bytes / 2**20:.0f} MiB of at most {self.max_bytes / 2**20:.0f})"
