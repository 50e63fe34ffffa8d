"""Hostile and shared caches (issue 13, items 1, 9, 12, 15 (errno), 17).

Nothing under the cache folder is trusted: a symlink named like a shard, a
sidecar naming ``../`` or an absolute path, a FIFO, a stray ``notakey.json``.
prune, verify and load never follow a link out of the cache and never act on a
path a sidecar names outside its own folder. A fingerprint that cannot be taken
is a miss, never a constant. Entries honour the umask; an unreadable cache is a
``CacheError`` (exit 1, one line); removals that did not happen are not reported.

The CLI runs in a subprocess as a user would. Tests run as root, which ignores
file permissions: where a permission or a read-only disk matters, the child
process gets a small patch of ``os`` (``EACCES``/``EROFS``/``ENOSPC``) before
``medmulti.cli.main`` runs; the umask is real.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import medmulti
from medmulti.data.cache import PreprocessCache
from medmulti.data.cache_key import entry_key, fingerprint_source
from medmulti.errors import CacheError
from medmulti.spec import StudySpec

OLD = time.time() - 3600  # older than prune's ten-minute grace


def _key(i: int, shard: str = "ab") -> str:
    return shard + f"{i:062x}"


def _victims(folder: Path, n: int = 3) -> list[Path]:
    """Old files outside the cache that nothing may delete."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"thesis{i}.tex"
        p.write_text("precious")
        os.utime(p, (OLD, OLD))
        out.append(p)
    return out


def _cli(args: list[str], cwd: Path, *, patch: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``medmulti ARGS`` in a child; ``patch`` is Python run first (to simulate EACCES/EROFS as root)."""
    code = textwrap.dedent(patch) + textwrap.dedent(f"""
        import sys
        from medmulti.cli import main
        sys.exit(main({args!r}))
    """)
    cmd = [sys.executable, "-c", code] if patch else [sys.executable, "-m", "medmulti.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return medmulti.make_sample_cohort(tmp_path_factory.mktemp("cohort"), n_patients=4, seed=0, faults=False,
                                       progress=False)


def _filled(tmp_path: Path, n: int = 3) -> tuple[PreprocessCache, list[str]]:
    cache = PreprocessCache(tmp_path / "CACHE")
    keys = [_key(i) for i in range(n)]
    for i, k in enumerate(keys):
        cache.store(k, np.full((4, 4, 1), float(i), np.float32), patient_id=f"p{i}", modality="ct")
    return cache, keys


def _array_file(cache: PreprocessCache, key: str) -> Path:
    return cache.sidecar_path(key).parent / json.loads(cache.sidecar_path(key).read_text())["file"]


# ------------------------------------------------------------------ item 1: prune/verify/load stay inside
@pytest.mark.parametrize("action", [["prune"], ["prune", "--dry-run"], ["verify"], ["verify", "--remove"]])
def test_symlinks_named_like_shards_or_entries_are_never_followed(tmp_path, action):
    cache, keys = _filled(tmp_path)
    docs = _victims(tmp_path / "docs")
    root = cache.root
    os.symlink(tmp_path / "docs", root / "zz")  # the example
    os.symlink(tmp_path / "docs", root / "cd")  # a hex name: looks exactly like a shard
    os.symlink(docs[0], root / "ab" / "thesis0.tex")  # links inside a real shard
    os.symlink(tmp_path / "docs", root / "ab" / "linkdir")
    os.symlink(tmp_path / "docs", root / "records")
    # a sidecar replaced by a link to a file outside (named like a sidecar)
    outside_side = tmp_path / "docs" / f"{keys[2]}.json"
    outside_side.write_text(cache.sidecar_path(keys[2]).read_text())
    os.utime(outside_side, (OLD, OLD))
    cache.sidecar_path(keys[2]).unlink()
    os.symlink(outside_side, cache.sidecar_path(keys[2]))
    for p in [*root.iterdir(), *(root / "ab").iterdir()]:
        os.utime(p, (OLD, OLD), follow_symlinks=False)
    proc = _cli(["cache", *action[:1], str(root), *action[1:], *(["--no-progress"] if action[0] == "verify" else [])],
                tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    assert all(p.read_text() == "precious" for p in docs)
    assert outside_side.exists()
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == sorted([*(p.name for p in docs),
                                                                             outside_side.name])
    if action == ["prune"]:  # the links themselves are debris of the cache
        assert not (root / "ab" / "thesis0.tex").is_symlink()
    assert PreprocessCache(root).load(keys[0]) is not None  # a good entry survives all of it


@pytest.mark.parametrize("name", ["{outside}/victim.npy", "../../docs/victim.npy", "{outside}/{key}-deadbeef.npy",
                                  "/../{outside}/{key}-deadbeef.npy"])
def test_prune_never_unlinks_what_a_sidecar_names(tmp_path, cohort, name):
    cache, keys = _filled(tmp_path)  # none of these keys is used by the cohort's manifest
    docs = tmp_path / "docs"
    docs.mkdir()
    victim = docs / ("victim.npy" if "victim" in name else f"{keys[0]}-deadbeef.npy")
    victim.write_bytes(b"precious")
    os.utime(victim, (OLD, OLD))
    side = cache.sidecar_path(keys[0])
    info = json.loads(side.read_text())
    info["file"] = name.format(outside=docs, key=keys[0])
    side.write_text(json.dumps(info))
    assert _cli(["cache", "prune", str(cache.root)], tmp_path).returncode == 0
    assert victim.read_bytes() == b"precious" and not side.exists()  # the bad entry goes, nothing else
    side.write_text(json.dumps(info))
    proc = _cli(["cache", "prune", str(cache.root), "--manifest", str(cohort.manifest), "--spec", str(cohort.spec)],
                tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == b"precious"
    assert not any(cache.root.glob("ab/*.json"))  # the entries not kept by the manifest are gone


def test_load_and_verify_never_act_outside_the_entry(tmp_path):
    cache, keys = _filled(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    victim = docs / f"{keys[0]}-deadbeef.npy"  # a name the old prefix check accepted
    victim.write_bytes(b"precious")
    neighbour = _array_file(cache, keys[1])
    for key, target in ((keys[0], str(victim)), (keys[2], f"../ab/{neighbour.name}")):
        side = cache.sidecar_path(key)
        info = json.loads(side.read_text())
        info["file"] = target
        side.write_text(json.dumps(info))
    assert cache.load(keys[0]) is None and cache.load(keys[2]) is None  # corrupt: a miss
    assert victim.read_bytes() == b"precious"
    assert cache.load(keys[1]) is not None
    # a symlinked array file is not read through, and removing the entry removes only the link
    target = docs / "real.npy"
    np.save(target, np.full((4, 4, 1), 1.0, np.float32))
    cache.store(keys[0], np.full((4, 4, 1), 1.0, np.float32))
    arr = _array_file(cache, keys[0])
    arr.unlink()
    os.symlink(target, arr)
    assert cache.load(keys[0]) is None
    assert target.exists() and not arr.is_symlink()
    # a symlinked shard: a typed error, nothing followed, nothing written outside
    shard = cache.root / "ef"
    os.symlink(docs, shard)
    with pytest.raises(CacheError, match="symbolic link"):
        cache.load(_key(1, "ef"))
    with pytest.raises(CacheError, match="symbolic link"):
        cache.store(_key(1, "ef"), np.ones((2, 1), np.float32))
    assert sorted(p.name for p in docs.iterdir()) == sorted([victim.name, "real.npy"])
    rep = cache.verify(remove=True)
    assert any(p["key"] == "ef" for p in rep.problems)
    assert not shard.is_symlink() and docs.is_dir()


@pytest.mark.parametrize("which", ["sidecar", "array"])
def test_a_fifo_in_the_cache_never_blocks(tmp_path, which):
    cache, keys = _filled(tmp_path)
    p = cache.sidecar_path(keys[0]) if which == "sidecar" else _array_file(cache, keys[0])
    p.unlink()
    os.mkfifo(p)
    proc = _cli(["cache", "verify", str(cache.root), "--no-progress"], tmp_path, timeout=60)
    assert proc.returncode == 1 and "regular file" in proc.stdout
    assert cache.load(keys[0]) is None  # a miss, at once
    assert cache.load(keys[1]) is not None


# ------------------------------------------------------------------ item 9: fingerprints never a constant
def _ct_folder(cohort) -> Path:
    return cohort.root / cohort.patient_ids[0] / "ct"


def _make_hazard(folder: Path, hazard: str, monkeypatch) -> None:
    if hazard == "dangling_symlink":
        os.symlink(folder / "gone.dcm", folder / "zz.dcm")
    elif hazard == "symlink_loop":
        os.symlink("loop.dcm", folder / "loop.dcm")
    elif hazard == "dir_symlink_loop":
        os.symlink("..", folder / "up")
        os.symlink(".", folder / "self")
    elif hazard == "unreadable_subfolder":
        sub = folder / "private"
        sub.mkdir()
        (sub / "x.dcm").write_bytes(b"x")
        sub.chmod(0)
        real = os.scandir

        def scandir(path="."):  # root ignores the mode: refuse as the kernel would for a user
            if os.fspath(path) == os.fspath(sub):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.parametrize("hazard", ["dangling_symlink", "symlink_loop", "dir_symlink_loop", "unreadable_subfolder"])
def test_a_changed_slice_changes_the_key_despite_a_bad_entry_in_the_folder(tmp_path, cohort, hazard, monkeypatch):
    import shutil

    root = tmp_path / "cohort"
    shutil.copytree(cohort.root, root, symlinks=True)
    spec = StudySpec.from_yaml(root / "spec.yaml")
    folder = root / cohort.patient_ids[0] / "ct"
    _make_hazard(folder, hazard, monkeypatch)
    sources = {"ct": folder}
    doc = fingerprint_source(folder, root=root)
    assert isinstance(doc["files"], list), doc  # still the real listing, not a constant
    assert len([f for f in doc["files"] if f[0].startswith("IM")]) == len(list(folder.glob("IM*.dcm")))
    before = entry_key(spec, "ct", sources, root=root)
    assert entry_key(spec, "ct", sources, root=root) == before  # stable: still cacheable
    slice_ = sorted(folder.glob("IM*.dcm"))[3]
    st = slice_.stat()
    os.utime(slice_, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert entry_key(spec, "ct", sources, root=root) != before
    if hazard == "unreadable_subfolder":
        (folder / "private").chmod(0o755)


def test_a_source_that_cannot_be_fingerprinted_is_a_miss_every_time(tmp_path, cohort):
    import shutil

    root = tmp_path / "cohort"
    shutil.copytree(cohort.root, root, symlinks=True)
    spec = StudySpec.from_yaml(root / "spec.yaml")
    folder = root / cohort.patient_ids[0] / "ct"
    outside = tmp_path / "outside.dcm"
    shutil.copy(next(folder.glob("IM*.dcm")), outside)
    os.symlink(outside, folder / "zz_out.dcm")  # leads outside the data root: not stat'ed, a miss
    for src in (folder, root / "nope" / "ct", root / "dangling.nii"):
        if src.name == "dangling.nii":
            os.symlink(root / "gone.nii", src)
        keys = {entry_key(spec, "ct", {"ct": src}, root=root) for _ in range(3)}
        assert len(keys) == 3, src
        assert fingerprint_source(src, root=root)["files"] == "unavailable"


def test_preprocess_does_not_serve_a_stale_entry_after_a_dangling_symlink(tmp_path, cohort):
    import shutil

    root = tmp_path / "cohort"
    shutil.copytree(cohort.root, root, symlinks=True)
    run = ["preprocess", "manifest.csv", "--spec", "spec.yaml", "--cache", "C", "--workers", "1", "--no-progress",
           "--json", "out.json"]
    assert _cli(run, root).returncode == 0
    folder = root / cohort.patient_ids[0] / "ct"
    os.symlink(folder / "gone.dcm", folder / "zz.dcm")
    _cli(run, root)
    slice_ = sorted(folder.glob("IM*.dcm"))[3]
    st = slice_.stat()
    os.utime(slice_, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _cli(run, root)
    summary = json.loads((root / "out.json").read_text())
    # the changed CT is read again (computed, or refused by its reader), never "already cached"
    failed_ct = [f for f in summary["failures"] if f["patient_id"] == cohort.patient_ids[0] and f["modality"] == "ct"]
    assert summary["computed"] >= 1 or failed_ct, summary
    assert summary["cached"] <= 3 * len(cohort.patient_ids) - 2, summary


# ------------------------------------------------------------------ item 12: shared caches
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_entries_honour_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        cache = PreprocessCache(tmp_path / "c")
        key = _key(1)
        cache.store(key, np.ones((3, 1), np.float32))
        cache.put_record("checks", key, {"ok": True})
    finally:
        os.umask(old)
    files = [cache.sidecar_path(key), _array_file(cache, key), cache.root / "records" / "checks" / f"{key}.json"]
    assert [stat.S_IMODE(p.stat().st_mode) for p in files] == [file_mode] * 3
    assert stat.S_IMODE(cache.sidecar_path(key).parent.stat().st_mode) == dir_mode


# the child sees EACCES on everything under the cache (root would ignore a chmod)
_DENY = """
import errno, os
_CACHE = os.path.realpath({cache!r})
_open, _listdir = os.open, os.listdir
def _deny(path):
    return isinstance(path, int) or os.path.realpath(os.fspath(path)).startswith(_CACHE)
def _o(path, flags, mode=0o777, *, dir_fd=None):
    if dir_fd is not None or _deny(path) and os.fspath(path) != _CACHE:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return _open(path, flags, mode, dir_fd=dir_fd)
def _l(path="."):
    if _deny(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return _listdir(path)
os.open, os.listdir = _o, _l
"""


@pytest.mark.parametrize("action", [["verify", "--no-progress"], ["verify", "--remove", "--no-progress"], ["prune"]])
def test_an_unreadable_cache_is_a_cache_error_exit_1(tmp_path, action):
    cache, _ = _filled(tmp_path)
    if os.geteuid() != 0:  # a real permission error where the kernel enforces it
        for p in [cache.root, *cache.root.iterdir()]:
            p.chmod(0)
        patch = ""
    else:
        patch = _DENY.format(cache=str(cache.root))
    try:
        proc = _cli(["cache", action[0], str(cache.root), *action[1:]], tmp_path, patch=patch)
    finally:
        for p in [cache.root, *cache.root.iterdir()]:
            p.chmod(0o755)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "CacheError" in proc.stderr and "permission denied" in proc.stderr
    assert "0 entries, 0 ok, 0 bad" not in proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_unreadable_entry_is_a_cache_error_in_process(tmp_path, monkeypatch):
    cache, keys = _filled(tmp_path)
    real = os.open

    def deny(path, flags, mode=0o777, *, dir_fd=None):
        if str(path).endswith(".json") or str(path).endswith(".npy"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", deny)
    PreprocessCache(cache.root)  # another user's folder: opening the cache is fine
    with pytest.raises(CacheError) as info:
        PreprocessCache(cache.root).load(keys[0])
    assert info.value.errno == errno.EACCES and "permission denied" in str(info.value)
    with pytest.raises(CacheError):
        cache.verify()
    monkeypatch.undo()
    assert all(p.exists() for k in keys for p in (cache.sidecar_path(k), _array_file(cache, k)))


# ------------------------------------------------------------------ item 17: read-only caches, stray files
_READ_ONLY = """
import errno, os
def _ro(*a, **k):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
os.unlink = os.remove = _ro
"""


def test_verify_remove_and_prune_on_a_read_only_cache_report_no_removal(tmp_path):
    cache, keys = _filled(tmp_path)
    arr = _array_file(cache, keys[1])
    data = bytearray(arr.read_bytes())
    data[-1] ^= 0xFF
    arr.write_bytes(bytes(data))
    debris = cache.root / "ab" / ".tmp-stale.npy"
    debris.write_bytes(b"x")
    os.utime(debris, (OLD, OLD))
    proc = _cli(["cache", "verify", str(cache.root), "--remove", "--no-progress", "--json", "v.json"], tmp_path,
                patch=_READ_ONLY)
    assert proc.returncode == 1
    assert "removed" not in proc.stdout and "could not remove 2 files (read-only file system)" in proc.stdout
    rep = json.loads((tmp_path / "v.json").read_text())
    assert rep["removed"] == 0 and len(rep["failed"]) == 2
    proc = _cli(["cache", "prune", str(cache.root), "--json", "p.json"], tmp_path, patch=_READ_ONLY)
    assert proc.returncode == 1 and "removed 0 files" in proc.stdout and "could not remove 1 files" in proc.stderr
    assert json.loads((tmp_path / "p.json").read_text())["removed"] == 0
    assert arr.exists() and debris.exists() and cache.sidecar_path(keys[1]).exists()


@pytest.mark.parametrize("stray", ["ab/notakey.json", "ab/ABCD.json", f"ab/{_key(1, 'cd')}.json", "ab/x.npy",
                                   "list", "dir"])
def test_verify_survives_stray_files(tmp_path, stray):
    cache, keys = _filled(tmp_path)
    if stray == "list":  # valid JSON that is not an object, as a sidecar
        cache.sidecar_path(keys[0]).write_text("[]")
    elif stray == "dir":  # a folder named like a sidecar
        cache.sidecar_path(keys[0]).unlink()
        cache.sidecar_path(keys[0]).mkdir()
    else:
        (cache.root / stray).write_text("{}")
    proc = _cli(["cache", "verify", str(cache.root), "--no-progress"], tmp_path)
    assert proc.returncode == (1 if stray in ("list", "dir") else 0), (proc.stdout, proc.stderr)
    proc = _cli(["cache", "verify", str(cache.root), "--remove", "--no-progress"], tmp_path)
    assert proc.returncode in (0, 1)
    # what --remove removed is gone; a folder is never removed (it stays reported)
    assert _cli(["cache", "verify", str(cache.root), "--no-progress"], tmp_path).returncode == (stray == "dir")


# ------------------------------------------------------------------ item 15 (part): CacheError keeps errno
@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_a_full_disk_says_no_space_left_and_keeps_errno(tmp_path, monkeypatch, where):
    cache = PreprocessCache(tmp_path / "c")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, where, full)
    with pytest.raises(CacheError) as info:
        cache.store(_key(1), np.ones((64, 1), np.float32), patient_id="p1", modality="ct")
    monkeypatch.undo()
    err = info.value
    assert err.errno == errno.ENOSPC and "no space left on device" in str(err).lower()
    assert err.patient_id == "p1" and err.modality == "ct"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is CacheError and again.errno == errno.ENOSPC and str(again) == str(err)
    assert not [p for p in cache.root.rglob("*") if p.is_file()]  # no temp file left behind
    cache.store(_key(1), np.ones((64, 1), np.float32))  # space again: it works
    assert cache.load(_key(1)) is not None
