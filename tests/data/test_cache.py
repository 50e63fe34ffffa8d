"""The preprocessing cache: round trips, corruption, keys, atomicity under SIGKILL, concurrency."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medmulti.data.cache import PreprocessCache
from medmulti.data.cache_key import entry_key, fingerprint_source
from medmulti.errors import CacheError
from medmulti.spec import LabelSpec, ModalitySpec, StudySpec

KEY = "ab" + "c" * 62


def _array(seed=0, shape=(6, 5, 4, 2)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _npy_of(cache: PreprocessCache, key: str) -> Path:
    info = json.loads(cache.sidecar_path(key).read_text())
    return cache.sidecar_path(key).parent / info["file"]


def test_round_trip_float32_exact(tmp_path):
    cache = PreprocessCache(tmp_path)
    a = _array()
    cache.store(KEY, a, patient_id="p1", modality="ct", affine=np.eye(4), spacing=(1.0, 2.0, 3.0), meta={"n": 1})
    got = cache.load(KEY)
    np.testing.assert_array_equal(got.array, a)
    assert got.array.dtype == np.float32
    np.testing.assert_array_equal(got.affine, np.eye(4))
    assert got.spacing == (1.0, 2.0, 3.0) and got.meta == {"n": 1}
    # the array file is a plain .npy that numpy itself reads without pickle
    np.testing.assert_array_equal(np.load(_npy_of(cache, KEY), allow_pickle=False), a)


def test_float16_storage_matches_numpy_cast_and_halves_size(tmp_path):
    a = _array(1, (16, 16, 16, 1))
    c32, c16 = PreprocessCache(tmp_path / "a"), PreprocessCache(tmp_path / "b", dtype="float16")
    c32.store(KEY, a)
    c16.store(KEY, a)
    got = c16.load(KEY).array
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, a.astype(np.float16).astype(np.float32))
    assert _npy_of(c16, KEY).stat().st_size < 0.6 * _npy_of(c32, KEY).stat().st_size


def test_float16_overflow_is_stored_as_float32(tmp_path):
    cache = PreprocessCache(tmp_path, dtype="float16")
    a = np.full((2, 2, 1), 1e6, np.float32)
    cache.store(KEY, a)
    np.testing.assert_array_equal(cache.load(KEY).array, a)


def test_load_reads_into_the_given_slot(tmp_path):
    cache = PreprocessCache(tmp_path)
    a = _array()
    cache.store(KEY, a)
    batch = np.zeros((3, *a.shape), np.float32)
    got = cache.load(KEY, out=batch[1])
    assert np.shares_memory(got.array, batch)
    np.testing.assert_array_equal(batch[1], a)
    assert not batch[0].any() and not batch[2].any()


def test_miss_returns_none(tmp_path):
    assert PreprocessCache(tmp_path).load(KEY) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_array", "garbage_sidecar", "extra_bytes"])
def test_damaged_entry_is_a_miss_with_a_warning_and_removed(tmp_path, caplog, damage):
    cache = PreprocessCache(tmp_path)
    a = _array()
    cache.store(KEY, a, patient_id="p1", modality="mr")
    cache.load(KEY)  # verified once in this process: damage must still be seen (stat changes)
    npy = _npy_of(cache, KEY)
    data = bytearray(npy.read_bytes())
    if damage == "flip":
        data[-7] ^= 0x10
        npy.write_bytes(bytes(data))
    elif damage == "truncate":
        npy.write_bytes(bytes(data[:-100]))
    elif damage == "delete_array":
        npy.unlink()
    elif damage == "garbage_sidecar":
        cache.sidecar_path(KEY).write_text("{not json")
    elif damage == "extra_bytes":
        npy.write_bytes(bytes(data) + b"\0")
    with caplog.at_level(logging.WARNING, logger="medmulti.data.cache"):
        assert cache.load(KEY) is None
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert KEY not in cache  # removed, so the caller recomputes and stores again
    cache.store(KEY, a)
    np.testing.assert_array_equal(cache.load(KEY).array, a)


def test_flipped_byte_detected_with_verify_always_even_if_stat_unchanged(tmp_path):
    cache = PreprocessCache(tmp_path, verify_reads="always")
    cache.store(KEY, _array())
    cache.load(KEY)
    npy = _npy_of(cache, KEY)
    st = npy.stat()
    data = bytearray(npy.read_bytes())
    data[-1] ^= 1
    npy.write_bytes(bytes(data))
    os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: same size and mtime
    assert cache.load(KEY) is None


def test_pickled_npy_is_refused(tmp_path, caplog):
    cache = PreprocessCache(tmp_path)
    cache.store(KEY, np.zeros((2,), np.float32))
    npy = _npy_of(cache, KEY)
    np.save(npy, np.array([{"evil": 1}, None], dtype=object), allow_pickle=True)
    side = cache.sidecar_path(KEY)
    info = json.loads(side.read_text())
    info["stored_dtype"] = "object"
    side.write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="medmulti.data.cache"):
        assert cache.load(KEY) is None
    assert any("pickle" in r.getMessage() for r in caplog.records)


def test_file_names_are_the_key_only_and_sidecar_has_no_header_data(tmp_path):
    cache = PreprocessCache(tmp_path)
    cache.store(KEY, _array(), patient_id="PAT-0042", modality="ct", meta={"windows": ["brain"]},
                provenance={"source": "PAT-0042/ct"})
    names = [p.name for p in tmp_path.rglob("*")]
    assert names and all("PAT" not in n for n in names)
    info = json.loads(cache.sidecar_path(KEY).read_text())
    assert info["patient_id"] == "PAT-0042"  # the manifest key, allowed
    assert not {"PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"} & set(json.dumps(info).split('"'))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        PreprocessCache(tmp_path, dtype="int8")
    with pytest.raises(ValueError):
        PreprocessCache(tmp_path).load("../../etc/passwd")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError):
        PreprocessCache(tmp_path / "file")


# --------------------------------------------------------------------------- keys
def _spec():
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, shape=(8, 8, 8)),
            ModalitySpec(name="mr", kind="mr"),
            ModalitySpec(name="xray", kind="xray", shape=(16, 16), required=False),
        ],
        labels=LabelSpec(classes=["a", "b"], column="dx"),
    )


def _cohort(tmp_path):
    root = tmp_path / "data"
    (root / "p1" / "ct").mkdir(parents=True)
    for i in range(3):
        (root / "p1" / "ct" / f"{i}.dcm").write_bytes(b"x" * (10 + i))
    (root / "p1" / "mr.nii").write_bytes(b"m" * 20)
    (root / "p1" / "xr.dcm").write_bytes(b"r" * 30)
    return root, {"ct": root / "p1" / "ct", "mr": root / "p1" / "mr.nii", "xray": root / "p1" / "xr.dcm"}


def _keys(spec, sources, root, **kw):
    return {n: entry_key(spec, n, sources, root=root, **kw) for n in spec.names}


def test_touching_a_file_changes_exactly_the_affected_keys(tmp_path):
    spec = _spec()
    root, src = _cohort(tmp_path)
    before = _keys(spec, src, root)
    assert before == _keys(spec, src, root) and len(set(before.values())) == 3
    st = (src["xray"]).stat()
    os.utime(src["xray"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = _keys(spec, src, root)
    assert [n for n in spec.names if before[n] != after[n]] == ["xray"]
    # a slice of the reference CT changes: the CT and the MR (resampled onto the CT grid) change
    f = src["ct"] / "1.dcm"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = _keys(spec, src, root)
    assert [n for n in spec.names if after[n] != again[n]] == ["ct", "mr"]
    # the MR changes: only the MR
    src["mr"].write_bytes(b"m" * 21)
    last = _keys(spec, src, root)
    assert [n for n in spec.names if again[n] != last[n]] == ["mr"]


def test_changing_a_spec_section_changes_exactly_the_affected_keys(tmp_path):
    root, src = _cohort(tmp_path)
    spec = _spec()
    base = _keys(spec, src, root)
    spec2 = _spec()
    spec2.modalities[1].intensity = {"method": "zscore"}
    k2 = _keys(spec2, src, root)
    assert [n for n in spec.names if base[n] != k2[n]] == ["mr"]
    spec3 = _spec()
    spec3.modalities[0].shape = (10, 10, 10)  # the reference grid: CT and MR
    k3 = _keys(spec3, src, root)
    assert [n for n in spec.names if base[n] != k3[n]] == ["ct", "mr"]
    spec5 = _spec()
    spec5.modalities[2].required = True  # does not change the array
    assert _keys(spec5, src, root) == base
    spec4 = _spec()
    spec4.labels = LabelSpec(classes=["a", "b", "c"], column="dx")  # labels never enter a key
    assert _keys(spec4, src, root) == base


def test_keys_are_relative_to_the_root_and_pins_replace_stat(tmp_path):
    spec = _spec()
    root, src = _cohort(tmp_path)
    k = _keys(spec, src, root)
    moved = tmp_path / "moved"
    os.rename(root, moved)
    src2 = {n: moved / p.relative_to(root) for n, p in src.items()}
    assert _keys(spec, src2, moved) == k  # mtimes kept by rename
    pins = {"mr": "f" * 64}
    kp = _keys(spec, src2, moved, sha256=pins)
    src2["mr"].write_bytes(b"other")
    assert _keys(spec, src2, moved, sha256=pins)["mr"] == kp["mr"]
    # a missing source is never a constant fingerprint (issue 13, item 9): each call is a miss
    gone = [fingerprint_source(moved / "nope", root=moved) for _ in range(2)]
    assert gone[0]["path"] == "nope" and gone[0]["files"] == "unavailable" and gone[0]["reason"] == "ENOENT"
    assert gone[0] != gone[1]
    assert fingerprint_source(None) is None


# ---------------------------------------------------------------- verify and prune
def test_verify_and_prune(tmp_path):
    cache = PreprocessCache(tmp_path)
    keys = [f"{i:02x}" + "0" * 62 for i in range(4)]
    for i, k in enumerate(keys):
        cache.store(k, _array(i), patient_id=f"p{i}", modality="ct")
    assert cache.verify().ok == 4
    npy = _npy_of(cache, keys[1])
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF
    npy.write_bytes(bytes(data))
    rep = cache.verify()
    assert (rep.entries, rep.ok) == (4, 3)
    assert rep.problems[0]["key"] == keys[1] and rep.problems[0]["patient_id"] == "p1"
    # debris: a stale temp file, and a young one a concurrent writer may still commit
    stale = cache.sidecar_path(keys[0]).parent / ".tmp-stale.npy"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    young = cache.sidecar_path(keys[0]).parent / ".tmp-young.npy"
    young.write_bytes(b"x")
    rep = cache.prune(keep={keys[0], keys[1]})
    assert rep.ok == 2 and set(cache.keys()) == {keys[0], keys[1]}
    assert not stale.exists() and young.exists()
    rep = cache.verify(remove=True)
    assert rep.removed == 2 and not rep.failed and list(cache.keys()) == [keys[0]]
    # (files actually removed: the sidecar and the array file it names)


# ---------------------------------------------------------------- atomicity, concurrency
WRITER = textwrap.dedent("""
    import sys, numpy as np
    from medmulti.data.cache import PreprocessCache
    cache = PreprocessCache(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        key = f"{i % 8:02x}" + "e" * 62
        a = np.full((64, 64, 32, 1), float(i), np.float32)   # 512 KiB: kills land mid-write
        cache.store(key, a, patient_id=f"p{i % 8}", modality="ct", meta={"i": i})
        i += 1
""")


def test_sigkill_while_writing_leaves_no_broken_entry_and_resumes(tmp_path):
    root = tmp_path / "cache"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.2, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cache = PreprocessCache(root)
    rep = cache.verify()
    assert rep.entries >= 1 and rep.ok == rep.entries and not rep.problems
    for key in cache.keys():
        got = cache.load(key)
        # array and sidecar come from the same store() call
        assert np.all(got.array == got.meta["i"])
    cache.prune(grace_s=0)
    assert not [p for p in root.rglob(".tmp-*")]
    cache.store("ff" + "e" * 62, np.ones((2, 1), np.float32))  # a rerun writes on
    assert cache.verify().ok == rep.entries + 1


def test_concurrent_threads_writing_and_reading_one_key(tmp_path):
    cache = PreprocessCache(tmp_path)
    errors = []

    def work(t):
        try:
            for i in range(15):
                cache.store(KEY, np.full((32, 32, 8, 1), float(t * 100 + i), np.float32), meta={"v": t * 100 + i})
                got = PreprocessCache(tmp_path, verify_reads="always").load(KEY)
                if got is not None and not np.all(got.array == got.meta["v"]):
                    errors.append("mixed entry")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert PreprocessCache(tmp_path).verify().ok == 1


def test_orphan_temporary_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from medmulti.data.cache import PreprocessCache

    cache = PreprocessCache(tmp_path / "c")
    sub = cache.root / "ab"
    sub.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = sub / f".tmp-{dead_pid}-xyz.npy"
    live = sub / f".tmp-{os.getppid()}-abc.npy"  # a running process (our parent)
    orphan.write_bytes(b"partial")
    live.write_bytes(b"in progress")
    assert cache.remove_orphan_temps() == 1
    assert not orphan.exists() and live.exists()
