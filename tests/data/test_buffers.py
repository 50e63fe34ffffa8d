"""The batch buffer pool: aligned, reused only when nothing refers to a buffer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from medmulti.data import buffers


@pytest.fixture(autouse=True)
def _fresh_pool():
    buffers.clear_pool()
    yield
    buffers.clear_pool()


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), np.float32), ((1,), np.float32), ((2, 9), np.float64)])
def test_arrays_are_64_byte_aligned_with_the_asked_shape(shape, dtype):
    for make in (buffers.aligned_empty, buffers.pooled_empty):
        a = make(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0


def test_a_released_buffer_is_reused_and_a_held_one_never():
    a = buffers.pooled_empty((4, 8))
    a[...] = 1.0
    addr = a.ctypes.data
    b = buffers.pooled_empty((4, 8))  # a is alive: b gets other memory
    assert not np.shares_memory(a, b)
    del a
    c = buffers.pooled_empty((4, 8))
    assert c.ctypes.data == addr  # reused
    part = c[2:]  # a view of the buffer keeps it taken
    del c
    d = buffers.pooled_empty((4, 8))
    assert not np.shares_memory(d, part) and not np.shares_memory(d, b)


def test_tensors_tensorflow_adopted_keep_their_buffers_taken():
    """tf.data adopts aligned buffers without copying: kept tensors must not be overwritten."""
    tf = pytest.importorskip("tensorflow")

    def make(i):
        a = buffers.pooled_empty((256, 256))
        a[...] = i
        return a

    ds = tf.data.Dataset.range(4).map(lambda i: tf.numpy_function(make, [i], tf.float32))
    got = list(ds)  # all four batches held at once
    assert [float(t.numpy()[0, 0]) for t in got] == [0.0, 1.0, 2.0, 3.0]
    assert all(np.all(t.numpy() == k) for k, t in enumerate(got))


def test_the_pool_is_bounded(monkeypatch):
    monkeypatch.setattr(buffers, "MAX_POOL_BYTES", 3 * (1000 * 4 + buffers.ALIGN))
    held = [buffers.pooled_empty((1000,)) for _ in range(5)]
    assert buffers.pool_bytes() == 3 * (1000 * 4 + buffers.ALIGN)
    assert len({h.ctypes.data for h in held}) == 5  # all distinct memory


def test_threads_never_share_a_buffer():
    seen: list[np.ndarray] = []
    lock = threading.Lock()

    def work(k):
        for _ in range(50):
            a = buffers.pooled_empty((256,))
            a[...] = k
            with lock:
                seen.append(a)
            assert np.all(a == k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    addrs = [a.ctypes.data for a in seen]
    assert len(set(addrs)) == len(addrs)  # every array still held, so none shares memory
    assert all(np.all(a == a[0]) for a in seen)
