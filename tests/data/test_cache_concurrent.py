"""Several writers on one cache folder at once, as on shared storage (NFS, a parallel file
system) where many workers on many machines fill one cache: no broken, duplicate or
half-written entry, ``medmulti cache verify`` clean, and no writer's files removed as debris
by another machine."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys

import numpy as np

from medmulti.cli import main
from medmulti.data import cache as cache_module
from medmulti.data.cache import PreprocessCache

SHARED = 6  # keys both writers store, several times each
OWN = 5  # keys only one writer stores
ROUNDS = 4
SHAPE = (8, 48, 48, 1)  # 72 kB per entry: long enough writes to overlap


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def array_of(name: str, variant: int = 0) -> np.ndarray:
    seed = int(key_of(f"{name}/{variant}")[:8], 16)
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def writer(root: str, who: str, barrier, variant_of_shared: int) -> None:
    """One writer process: its own cache handle, the shared keys over and over, then its own keys."""
    cache = PreprocessCache(root)
    barrier.wait()  # both start together
    for _ in range(ROUNDS):
        for i in range(SHARED):
            name = f"shared-{i}"
            cache.store(key_of(name), array_of(name, variant_of_shared), patient_id=f"S{i}", modality="ct")
    for i in range(OWN):
        name = f"{who}-{i}"
        cache.store(key_of(name), array_of(name), patient_id=f"{who}{i}", modality="mr")


def run_writers(root, variants=(0, 0)) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=writer, args=(str(root), who, barrier, v)) for who, v in zip("AB", variants)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]


def files_of(root) -> dict[str, list[str]]:
    """Every file under the cache's ``ab`` folders, by the key its name starts with."""
    out: dict[str, list[str]] = {}
    for shard in root.iterdir():
        if shard.is_dir() and len(shard.name) == 2:
            for f in shard.iterdir():
                out.setdefault(f.name[:64] if not f.name.startswith(".tmp-") else "tmp", []).append(f.name)
    return out


def test_two_processes_filling_one_cache_leave_one_intact_entry_per_key(tmp_path, capsys):
    root = tmp_path / "cache"
    PreprocessCache(root)
    run_writers(root)
    names = [f"shared-{i}" for i in range(SHARED)] + [f"{w}-{i}" for w in "AB" for i in range(OWN)]
    files = files_of(root)
    assert "tmp" not in files  # no temporary file left behind
    assert sorted(files) == sorted(key_of(n) for n in names)
    for name in names:  # one sidecar and one array file per key: nothing duplicated
        key = key_of(name)
        assert sorted(f.rsplit(".", 1)[1] for f in files[key]) == ["json", "npy"]
        entry = PreprocessCache(root).load(key)
        np.testing.assert_array_equal(entry.array, array_of(name))
    report = PreprocessCache(root).verify()
    assert (report.entries, report.ok, report.problems) == (len(names), len(names), [])
    assert main(["cache", "verify", str(root), "--no-progress"]) == 0
    assert "0 bad" in capsys.readouterr().out


def test_writers_that_disagree_on_a_key_leave_a_consistent_entry_and_prunable_debris(tmp_path):
    # two writers computing different arrays for one key (a preprocessing that is not
    # deterministic): the sidecar names one writer's array, whole; the other array is an
    # unreferenced file that prune removes
    root = tmp_path / "cache"
    PreprocessCache(root)
    run_writers(root, variants=(1, 2))
    cache = PreprocessCache(root)
    report = cache.verify()
    assert report.problems == [] and report.ok == report.entries == SHARED + 2 * OWN
    for i in range(SHARED):
        name = f"shared-{i}"
        got = cache.load(key_of(name)).array
        assert any(np.array_equal(got, array_of(name, v)) for v in (1, 2))
    pruned = cache.prune(grace_s=0)
    assert pruned.ok == SHARED + 2 * OWN
    for key, names in files_of(root).items():
        assert len([n for n in names if n.endswith(".npy")]) == 1, key
    assert cache.verify().problems == []


def test_a_temporary_file_of_a_writer_on_another_machine_is_not_removed_as_debris(tmp_path):
    cache = PreprocessCache(tmp_path / "cache")
    shard = cache.root / "ab"
    shard.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)  # a process that no longer runs here
    fd, mine = cache_module._Dir(shard, None).create_temp(".npy")
    os.close(fd)
    own_dead = mine.replace(f"{os.getpid()}.", f"{pid}.", 1)  # this machine's name format, a dead writer
    os.rename(shard / mine, shard / own_dead)
    tag = own_dead.split("-", 2)[1].split(".", 1)[1]
    other_tag = format((int(tag, 16) + 1) % 16**8, "08x")
    other = own_dead.replace(f".{tag}-", f".{other_tag}-", 1)  # the same PID, on another machine
    (shard / other).write_bytes(b"being written")
    assert cache.remove_orphan_temps() == 1
    assert sorted(p.name for p in shard.iterdir()) == [other]  # the other machine's writer keeps its file
    assert cache.prune(grace_s=3600).removed == 0
    assert cache.prune(grace_s=0).removed == 1  # once stale, prune removes it like any debris


def test_temporary_names_without_a_machine_tag_are_judged_by_their_pid_as_before():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    assert cache_module._writer_is_dead(f".tmp-{pid}-abc.npy")  # written by an older medmulti here
    assert not cache_module._writer_is_dead(f".tmp-{os.getppid()}-abc.npy")  # a live process
    assert not cache_module._writer_is_dead(".tmp-stale.npy")  # no PID: left to prune's grace period
