"""The batch buffer pool: aligned, reused only when nothing refers to a buffer."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from medmulti.data.buffers import ALIGN, BufferPool, aligned_empty


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), np.float32), ((1,), np.float32), ((2, 9), np.float64)])
def test_arrays_are_64_byte_aligned_with_the_asked_shape(shape, dtype):
    for a in (aligned_empty(shape, dtype), BufferPool().empty(shape, dtype)):
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0


def test_a_released_buffer_is_reused_and_a_held_one_never():
    pool = BufferPool()
    a = pool.empty((4, 8))
    a[...] = 1.0
    addr = a.ctypes.data
    b = pool.empty((4, 8))  # a is alive: b gets other memory
    assert not np.shares_memory(a, b)
    del a
    c = pool.empty((4, 8))
    assert c.ctypes.data == addr  # reused
    part = c[2:]  # a view of the buffer keeps it taken
    del c
    d = pool.empty((4, 8))
    assert not np.shares_memory(d, part) and not np.shares_memory(d, b)


def test_tensors_tensorflow_adopted_keep_their_buffers_taken():
    """tf.data adopts aligned buffers without copying: kept tensors must not be overwritten."""
    tf = pytest.importorskip("tensorflow")
    pool = BufferPool()

    def make(i):
        a = pool.empty((256, 256))
        a[...] = i
        return a

    ds = tf.data.Dataset.range(4).map(lambda i: tf.numpy_function(make, [i], tf.float32))
    got = list(ds)  # all four batches held at once
    assert [float(t.numpy()[0, 0]) for t in got] == [0.0, 1.0, 2.0, 3.0]
    assert all(np.all(t.numpy() == k) for k, t in enumerate(got))


def test_the_pool_is_bounded_and_can_be_cleared():
    pool = BufferPool(max_bytes=3 * (1000 * 4 + ALIGN))
    held = [pool.empty((1000,)) for _ in range(5)]
    assert pool.nbytes == 3 * (1000 * 4 + ALIGN)
    assert len({h.ctypes.data for h in held}) == 5  # all distinct memory
    pool.clear()
    assert pool.nbytes == 0 and all(h.shape == (1000,) for h in held)  # held arrays stay valid


def test_a_pickled_pool_arrives_empty():
    pool = BufferPool(max_bytes=12345)
    keep = pool.empty((100,))
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.max_bytes == 12345 and copy.nbytes == 0 and pool.nbytes > 0 and keep.size == 100


def test_threads_never_share_a_buffer():
    pool = BufferPool()
    seen: list[np.ndarray] = []
    lock = threading.Lock()

    def work(k):
        for _ in range(50):
            a = pool.empty((256,))
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


def test_sequence_batches_kept_by_the_caller_are_never_overwritten(clean_cohort, spec, warm_cache):
    from medmulti.data.sequence import PatientSequence

    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=2, cache_dir=warm_cache,
                          progress=False, shuffle=False)
    kept = [seq[i] for i in range(len(seq))]  # all batches held
    copies = [{n: x[n].copy() for n in spec.names} for x, _ in kept]
    for _ in range(2):  # more batches through the same pool
        for i in range(len(seq)):
            seq[i]
    for (x, _), c in zip(kept, copies):
        for n in spec.names:
            np.testing.assert_array_equal(x[n], c[n])
    ct = [x["ct"] for x, _ in kept]
    assert len({a.ctypes.data for a in ct}) == len(ct)
    del kept, x, ct
    before = seq._buffers.nbytes
    for i in range(len(seq)):  # released buffers are reused: the pool does not grow
        seq[i]
    assert seq._buffers.nbytes == before
    seq.release_buffers()
    assert seq._buffers.nbytes == 0 and seq[0][0]["ct"].shape[0] == 2
