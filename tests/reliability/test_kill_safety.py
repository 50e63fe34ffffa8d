"""Nothing lost: SIGKILLed cache builds, a full disk, damaged and hostile cache files.

A ``medmulti preprocess`` subprocess is SIGKILLed at 20 moments: 16 chosen
deterministically among its file-system commit operations (fsync / replace /
rename; see :mod:`medmulti_testing.killpoint`), which includes every phase of an
entry write (between payload write and rename, between payload publication and
sidecar commit, before the folder fsync), and 4 at seeded random times from
outside. After each kill ``medmulti cache verify`` finds 0 broken entries; a
plain rerun completes; no temporary file is left; and the final cache is
byte-identical to a clean run's (sidecars compared without their
``created_utc`` timestamp). That the rerun also leaves no temporary file is
checked separately (test_no_temporary_file_left_after_kill_and_rerun; it was an
expected failure until the cache removed killed writers' temporary files, b9d0f29).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from medmulti_testing.snapshot import cache_snapshot

KILLS_AT_OPS = 16
KILLS_AT_RANDOM_TIMES = 4


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medmulti.examples.cohort import make_sample_cohort

    return make_sample_cohort(tmp_path_factory.mktemp("kill") / "cohort", n_patients=3, faults=False,
                              progress=False, overwrite=True, ct_slices=8)


def _cli(*args: str, killpoint: int | None = None, **kw) -> subprocess.CompletedProcess:
    prefix = [sys.executable, "-m", "medmulti_testing.killpoint", str(killpoint)] if killpoint is not None \
        else [sys.executable, "-m", "medmulti.cli"]
    return subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=300, **kw)


def _preprocess_args(cohort, cache: Path) -> list[str]:
    return ["preprocess", str(cohort.manifest), "--spec", str(cohort.spec), "--cache", str(cache),
            "--workers", "1", "--no-progress"]


def _temps(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob(".tmp*"))


def _verify(cache: Path) -> dict:
    out = cache.parent / f"{cache.name}-verify.json"
    proc = _cli("cache", "verify", str(cache), "--json", str(out), "--no-progress")
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return json.loads(out.read_text())


def _after_kill(cohort, cache: Path, reference: dict, label) -> int:
    """The checks after one kill; returns the number of entries the killed run had committed."""
    from medmulti import StudySpec
    from medmulti.data.cache import PreprocessCache
    from medmulti.data.cache_fill import preprocess_manifest

    report = PreprocessCache(cache).verify() if cache.exists() else None
    assert report is None or report.problems == [], (label, report)
    committed = 0 if report is None else report.entries
    summary = preprocess_manifest(cohort.manifest, StudySpec.from_yaml(cohort.spec), cache, workers=1,
                                  progress=False)  # a plain rerun, no cleanup
    assert not getattr(summary, "failed", []), (label, summary)
    assert cache_snapshot(cache) == reference, label
    return committed


def test_sigkill_at_twenty_moments(cohort, tmp_path):
    clean = tmp_path / "clean"
    t_run = time.perf_counter()
    done = _cli(*_preprocess_args(cohort, clean), killpoint=0)
    t_run = time.perf_counter() - t_run
    assert done.returncode == 0, done.stderr[-2000:]
    total_ops = int(done.stderr.rsplit("killpoint-ops=", 1)[1].split()[0])
    assert total_ops >= 3 * 4  # 3 patients x 3 modalities, several ops each
    reference = cache_snapshot(clean)
    assert any(k.endswith(".npy") for k in reference)
    assert _verify(clean)["problems"] == []  # the CLI agrees with the in-process verify

    rng = random.Random(8)
    points = sorted(rng.sample(range(1, total_ops + 1), min(KILLS_AT_OPS, total_ops)))
    outcomes = []
    for n in points:
        cache = tmp_path / f"op{n}"
        proc = _cli(*_preprocess_args(cohort, cache), killpoint=n)
        assert proc.returncode == -signal.SIGKILL, (n, proc.returncode, proc.stderr[-1500:])
        if n == points[len(points) // 2]:
            assert _verify(cache)["problems"] == []  # `medmulti cache verify` itself, once mid-way
        outcomes.append(("op", n, _after_kill(cohort, cache, reference, ("op", n))))
    landed = 0
    for k in range(4 * KILLS_AT_RANDOM_TIMES):  # random moments, from outside, the whole process group
        if landed == KILLS_AT_RANDOM_TIMES:
            break
        cache = tmp_path / f"time{k}"
        child = subprocess.Popen([sys.executable, "-m", "medmulti.cli", *_preprocess_args(cohort, cache)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.1, 0.5) * t_run)
        if child.poll() is None:  # still running: kill it (a run that already ended is not a kill)
            os.killpg(child.pid, signal.SIGKILL)
            landed += 1
        child.wait(timeout=60)
        outcomes.append(("time", k, _after_kill(cohort, cache, reference, ("time", k))))
    assert KILLS_AT_OPS + landed >= 20, (landed, outcomes)
    # the kills landed all over the run: before any commit, mid-way, and after some entries
    committed = [c for _, _, c in outcomes]
    assert min(committed) == 0 and max(committed) > 0, outcomes


def test_no_temporary_file_left_after_kill_and_rerun(cohort, tmp_path):
    """Killed between a payload's write and its rename, then rerun: no temporary file remains."""
    clean = tmp_path / "clean"
    assert _cli(*_preprocess_args(cohort, clean)).returncode == 0
    cache = tmp_path / "killed"
    proc = _cli(*_preprocess_args(cohort, cache), killpoint=1)  # the first fsync: a payload's temp file
    assert proc.returncode == -signal.SIGKILL
    assert _temps(cache), "the kill did not land between write and rename"
    assert _cli(*_preprocess_args(cohort, cache)).returncode == 0
    assert _temps(cache) == []


def test_enospc_publishes_nothing(cohort, tmp_path, monkeypatch):
    """A full disk during an entry write raises CacheError and publishes no file."""
    import errno

    from medmulti.data.cache import PreprocessCache
    from medmulti.errors import CacheError

    cache = PreprocessCache(tmp_path / "c")
    key = "ab" + "0" * 62
    real_fsync = os.fsync
    for fail_at in (1, 2):  # the payload's fsync, then the sidecar's
        calls = [0]

        def full_disk(fd, _fail_at=fail_at):
            calls[0] += 1
            if calls[0] == _fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_disk)
        with pytest.raises(CacheError):
            cache.store(key, np.ones((4, 4, 1), np.float32), patient_id="P1", modality="ct")
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert cache.load(key) is None
        assert key not in cache
        assert _temps(tmp_path / "c") == []
        published = [p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.suffix == ".json"]
        assert published == []
        assert cache.verify().problems == []


def _one_entry(cohort, tmp_path):
    from medmulti import StudySpec
    from medmulti.data.cache import PreprocessCache
    from medmulti.data.cache_fill import preprocess_manifest

    spec = StudySpec.from_yaml(cohort.spec)
    root = tmp_path / "cache"
    preprocess_manifest(cohort.manifest, spec, root, workers=1, progress=False)
    cache = PreprocessCache(root)
    key = sorted(cache.keys())[0]
    info = json.loads(cache.sidecar_path(key).read_text())
    return spec, cache, key, cache.sidecar_path(key).parent / info["file"]


def test_flipped_payload_byte_is_detected_and_recomputed(cohort, tmp_path, caplog):
    from medmulti import StudySpec  # noqa: F401
    from medmulti.data.cache_fill import preprocess_manifest

    spec, cache, key, payload = _one_entry(cohort, tmp_path)
    good = cache.load(key).array.copy()
    data = bytearray(payload.read_bytes())
    data[-7] ^= 0x10  # inside the float payload, after the .npy header
    payload.write_bytes(bytes(data))
    from medmulti.data.cache import PreprocessCache

    fresh = PreprocessCache(cache.root)  # a new process would see it the same way
    with caplog.at_level("WARNING", logger="medmulti"):
        assert fresh.load(key) is None
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    summary = preprocess_manifest(cohort.manifest, spec, cache.root, workers=1, progress=False)
    assert summary is not None
    again = PreprocessCache(cache.root).load(key)
    assert again is not None and np.array_equal(again.array, good)


def test_pickled_npy_is_refused(cohort, tmp_path):
    """An object-dtype (pickled) payload is never unpickled: no code runs, the entry is a miss."""
    from medmulti.data.cache import PreprocessCache

    spec, cache, key, payload = _one_entry(cohort, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    with open(payload, "wb") as fh:
        np.lib.format.write_array(fh, arr, allow_pickle=True)
    assert PreprocessCache(cache.root).load(key) is None
    assert not marker.exists()


def test_errors_survive_pickling():
    import pickle

    import medmulti.errors as E

    for name in E.__all__:
        cls = getattr(E, name)
        if not isinstance(cls, type):  # the check-name table and its lookup
            continue
        kwargs = {"path": "P1/ct/IM0001.dcm", "modality": "ct", "patient_id": "P1", "keyword": "Rows",
                  "hint": "fix it"}
        if issubclass(cls, E.ManifestError):
            err = cls("bad cell", row=3, column="ct", **kwargs)
        else:
            err = cls("bad thing", **kwargs)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls
        assert str(back) == str(err) and back.args == err.args
        assert back.context() == err.context()
        if isinstance(err, E.ManifestError):
            assert (back.row, back.column) == (3, "ct")
        assert isinstance(back, E.MedmultiError)


def test_corrupt_file_in_a_process_worker_reaches_the_parent(tmp_path):
    """A slice corrupted after the sequence was built fails in a worker process; the parent
    gets the same typed error, promptly (10 s), with no hang."""
    import shutil
    import threading

    from medmulti import StudySpec
    from medmulti.data.sequence import PatientSequence
    from medmulti.errors import CorruptFileError, MedmultiError
    from medmulti.examples.cohort import make_sample_cohort
    from medmulti.manifest import load_manifest

    c = make_sample_cohort(tmp_path / "cohort", n_patients=3, faults=False, progress=False, overwrite=True,
                           ct_slices=8)
    spec = StudySpec.from_yaml(c.spec)
    manifest = load_manifest(c.manifest, spec)
    train = [r for r in manifest.rows if r.split == "train"]
    seq = PatientSequence(manifest, spec, "train", batch_size=1, workers=2, use_multiprocessing=True)
    victim = sorted(Path(train[0].sources["ct"]).iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:-200])  # after validation: only a worker can meet it
    result: dict = {}

    def consume():
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        try:
            for _ in PyDatasetAdapter(seq, shuffle=False).get_numpy_iterator():
                pass
            result["outcome"] = "no error"
        except BaseException as exc:  # noqa: BLE001
            result["outcome"] = exc

    t = threading.Thread(target=consume, daemon=True)
    start = time.perf_counter()
    t.start()
    t.join(timeout=10 + 30)  # 30 s for the worker pool to start on a loaded 2-core CI machine
    elapsed = time.perf_counter() - start
    assert not t.is_alive(), "the parent hangs after a worker failed"
    exc = result["outcome"]
    assert isinstance(exc, CorruptFileError), repr(exc)
    assert isinstance(exc, MedmultiError) and exc.patient_id == train[0].key
    assert victim.name in str(exc)
    shutil.rmtree(tmp_path / "cohort")
    print(f"typed error reached the parent after {elapsed:.1f} s")
