"""Hostile data folders: symlinks leading out of a series folder, FIFOs and other special files.

Issue 13, items 2 and 4. The manifest's own cells are covered by
``test_hostile_paths.py``; here the manifest is clean and the attack sits *inside*
the data: a CT slice replaced by a symlink to a file elsewhere, a symlinked folder
in a series folder, a link loop, a dangling link, a named pipe (FIFO) or a socket
where an image should be. Every case must give a typed error (``UnsafePathError``,
``UnsupportedDataError``, ``MissingFileError``) naming the patient, the modality
and the file, never block, and never open, list or stat anything outside.

The CLI is run as users run it (a subprocess, with a timeout so a hang fails the
test instead of hanging it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medmulti
from medmulti.errors import MissingFileError, UnsafePathError, UnsupportedDataError
from medmulti.io import inspect_source
from medmulti.io.series_list import list_series

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or sys.platform == "win32",
                                reason="POSIX symlinks and FIFOs")

CLI_TIMEOUT_S = 120
SLICE = "IM0003.dcm"


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small generated cohort (4 patients, 8 CT slices each), never modified."""
    out = tmp_path_factory.mktemp("cohort") / "c"
    medmulti.make_sample_cohort(out, n_patients=4, seed=0, faults=False, progress=False, ct_slices=8)
    return out


@pytest.fixture
def cohort(pristine, tmp_path) -> tuple[Path, Path]:
    """A fresh copy (tmp/c) and a sibling folder outside it (tmp/outside) holding real images."""
    root = tmp_path / "c"
    shutil.copytree(pristine, root, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging) when a call blocks, e.g. on opening a FIFO."""
    def boom(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "medmulti.cli", *args], cwd=cwd, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"medmulti {args[0]} hung for more than {CLI_TIMEOUT_S} s")


def _validate(root: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    res = _cli("validate", "c/manifest.csv", "--spec", "c/spec.yaml", "--workers", "1", "--no-progress",
               "--json", "problems.json", cwd=root.parent)
    problems = json.loads((root.parent / "problems.json").read_text()) if res.returncode in (0, 1) else []
    return res, problems


def _no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-2000:]


def _errors(problems: list[dict]) -> list[dict]:
    return [p for p in problems if p["severity"] == "error"]


# -- the attacks (each returns what the report must name) -------------------------------


def link_slice_out(root: Path, outside: Path) -> tuple[str, str, str]:
    """A CT slice moved out of the cohort and replaced by a symlink to it."""
    ct = root / "SYN0001" / "ct"
    shutil.move(ct / SLICE, outside / SLICE)
    (ct / SLICE).symlink_to(outside / SLICE)
    return "SYN0001", "ct", f"SYN0001/ct/{SLICE}"


def link_slice_relative_out(root: Path, outside: Path) -> tuple[str, str, str]:
    """The same with a relative ``../../..`` target."""
    ct = root / "SYN0002" / "ct"
    shutil.move(ct / SLICE, outside / SLICE)
    (ct / SLICE).symlink_to(Path("..") / ".." / ".." / "outside" / SLICE)
    return "SYN0002", "ct", f"SYN0002/ct/{SLICE}"


def link_dir_out(root: Path, outside: Path) -> tuple[str, str, str]:
    """A symlinked folder inside a series folder, pointing at a folder of slices elsewhere."""
    shutil.copytree(root / "SYN0004" / "ct", outside / "more")
    (root / "SYN0003" / "ct" / "more").symlink_to(outside / "more", target_is_directory=True)
    return "SYN0003", "ct", "SYN0003/ct/more"


def link_chain_out(root: Path, outside: Path) -> tuple[str, str, str]:
    """A link to an in-root link that points out (the chain is followed, lexically)."""
    ct = root / "SYN0004" / "ct"
    shutil.move(ct / SLICE, outside / SLICE)
    (root / "hop").symlink_to(outside / SLICE)
    (ct / SLICE).symlink_to(root / "hop")
    return "SYN0004", "ct", f"SYN0004/ct/{SLICE}"


ESCAPES = {f.__name__: f for f in (link_slice_out, link_slice_relative_out, link_dir_out, link_chain_out)}


# -- item 2: symlinks leading out of a series folder ----------------------------------


@pytest.mark.parametrize("attack", sorted(ESCAPES))
def test_read_image_refuses_a_link_out_of_the_series_folder(cohort, attack):
    root, outside = cohort
    pid, modality, rel = ESCAPES[attack](root, outside)
    with pytest.raises(UnsafePathError) as info:
        medmulti.read_image(root / pid / modality)
    assert info.value.path == Path(rel).relative_to(f"{pid}/{modality}").as_posix()
    assert str(outside) not in str(info.value)
    with pytest.raises(UnsafePathError):
        inspect_source(root / pid / modality)


def test_validate_cli_reports_links_out_as_unsafe_path(cohort):
    root, outside = cohort
    expected = {(pid, mod, rel) for pid, mod, rel in (f(root, outside) for f in ESCAPES.values())}
    res, problems = _validate(root)
    _no_traceback(res)
    assert res.returncode == 1, res.stdout + res.stderr
    found = {(p["patient_id"], p["modality"], p["path"]) for p in _errors(problems) if p["check"] == "unsafe_path"}
    assert found == expected, problems
    assert "result: OK" not in res.stdout
    assert str(outside) not in res.stdout + res.stderr


def test_preprocess_cli_refuses_a_link_out(cohort):
    """Not read, not cached: the patient fails with the typed error, the others are cached."""
    root, outside = cohort
    link_slice_out(root, outside)
    res = _cli("preprocess", "c/manifest.csv", "--spec", "c/spec.yaml", "--cache", "cache", "--workers", "1",
               "--no-progress", cwd=root.parent)
    _no_traceback(res)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "SYN0001" in ln]
    assert any("UnsafePathError" in ln and SLICE in ln for ln in lines), res.stdout + res.stderr
    assert "1 failed" in res.stdout + res.stderr


def test_nothing_outside_is_opened_listed_or_stated(cohort, monkeypatch):
    """An audit hook (open, listdir, scandir) and stat/lstat/readlink spies see no outside path."""
    from medmulti.manifest import validate_manifest

    root, outside = cohort
    for f in ESCAPES.values():
        f(root, outside)
    assert any(outside.iterdir())
    with contextlib.suppress(Exception):  # warm lazy imports outside the record
        validate_manifest(root / "manifest.csv", root / "spec.yaml", workers=1, progress=False)
    with _record(monkeypatch) as events:
        report = validate_manifest(root / "manifest.csv", root / "spec.yaml", workers=1, progress=False)
        for pid in ("SYN0001", "SYN0002", "SYN0003", "SYN0004"):
            with pytest.raises(UnsafePathError):
                medmulti.read_image(root / pid / "ct")
    assert any(SLICE in p for _, p in events), "the recorder saw nothing: it is not wired"
    out = str(outside)
    bad = [(e, p) for e, p in events if os.path.normpath(p) == out or os.path.normpath(p).startswith(out + os.sep)]
    assert not bad, bad[:5]
    assert not report.ok


def test_a_link_inside_an_explicit_root_is_followed(cohort):
    """The manifest rule, for series folders: a link whose target stays inside ``root`` is read.

    By default the root is the series folder itself; ``root=`` (or ``SourceRef(root=...)``)
    widens it, e.g. to the manifest folder for a git-annex/DataLad tree.
    """
    root, _ = cohort
    ct = root / "SYN0001" / "ct"
    want = medmulti.read_image(ct)
    store = root / "store"
    store.mkdir()
    shutil.move(ct / SLICE, store / SLICE)
    (ct / SLICE).symlink_to(Path("..") / ".." / "store" / SLICE)
    with pytest.raises(UnsafePathError):
        medmulti.read_image(ct)  # outside the series folder: refused by default
    got = medmulti.read_image(ct, root=root)
    np.testing.assert_array_equal(got.array, want.array)
    ref = medmulti.SourceRef(ct, root=root)
    np.testing.assert_array_equal(medmulti.read_image(ref).array, want.array)
    assert inspect_source(ref).n_files == want.shape[0]
    with pytest.raises(UnsafePathError):
        medmulti.read_image(ct, root=root / "SYN0002")  # the folder is outside that root


def test_link_loop_and_dangling_link_are_typed(cohort):
    root, _ = cohort
    ct = root / "SYN0001" / "ct"
    (ct / "loop_a").symlink_to(ct / "loop_b")
    (ct / "loop_b").symlink_to(ct / "loop_a")
    with deadline(30), pytest.raises(UnsafePathError, match="loop"):
        medmulti.read_image(ct)
    (ct / "loop_a").unlink()
    (ct / "loop_b").unlink()
    (ct / SLICE).unlink()
    (ct / SLICE).symlink_to(ct / "gone.dcm")
    with pytest.raises(MissingFileError, match="dangling") as info:
        medmulti.read_image(ct)
    assert info.value.path == SLICE


def test_sha256_pin_does_not_follow_a_link_out(cohort):
    """``<modality>_sha256`` of a folder hashes what the readers list, never an outside file."""
    from medmulti.manifest.checks import sha256_of

    root, outside = cohort
    ct = root / "SYN0001" / "ct"
    before = sha256_of(ct)
    link_slice_out(root, outside)
    with pytest.raises(UnsafePathError):
        sha256_of(ct)
    (ct / SLICE).unlink()
    shutil.copy(outside / SLICE, ct / SLICE)
    assert sha256_of(ct) == before


# -- item 4: FIFOs, sockets and other special files -------------------------------------


def _fifo_for(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_validate_cli_refuses_a_fifo_named_by_the_manifest(cohort):
    root, _ = cohort
    _fifo_for(root / "SYN0002" / "mr.nii.gz")
    res, problems = _validate(root)
    _no_traceback(res)
    assert res.returncode == 1
    errors = _errors(problems)
    assert [(p["patient_id"], p["modality"], p["path"], p["check"]) for p in errors] == [
        ("SYN0002", "mr", "SYN0002/mr.nii.gz", "unsupported_data")]
    assert "named pipe" in errors[0]["message"]


def test_validate_cli_refuses_a_fifo_inside_a_series_folder(cohort):
    root, _ = cohort
    _fifo_for(root / "SYN0003" / "ct" / SLICE)
    res, problems = _validate(root)
    _no_traceback(res)
    assert res.returncode == 1
    assert [(p["patient_id"], p["modality"], p["path"], p["check"]) for p in _errors(problems)] == [
        ("SYN0003", "ct", f"SYN0003/ct/{SLICE}", "unsupported_data")]


def test_preprocess_cli_refuses_a_fifo(cohort):
    root, _ = cohort
    _fifo_for(root / "SYN0001" / "xray.dcm")
    res = _cli("preprocess", "c/manifest.csv", "--spec", "c/spec.yaml", "--cache", "cache", "--workers", "1",
               "--no-progress", cwd=root.parent)
    _no_traceback(res)
    assert res.returncode == 1
    text = res.stdout + res.stderr
    assert any("SYN0001" in ln and "UnsupportedDataError" in ln and "named pipe" in ln for ln in text.splitlines())


@pytest.mark.parametrize("where", ["file", "in_series"])
def test_info_cli_refuses_a_fifo_in_one_line(cohort, where):
    root, _ = cohort
    target = root / "SYN0001" / ("mr.nii.gz" if where == "file" else f"ct/{SLICE}")
    _fifo_for(target)
    arg = "c/SYN0001/mr.nii.gz" if where == "file" else "c/SYN0001/ct"
    res = _cli("info", arg, cwd=root.parent)
    _no_traceback(res)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "UnsupportedDataError" in lines[0] and "named pipe" in lines[0], res.stderr


def test_readers_refuse_special_files_without_blocking(tmp_path):
    """detect_format, read_image, inspect_source, read_header, read_nifti_header: refused before any open."""
    from medmulti.io.detect import detect_format
    from medmulti.io.dicom_header import read_header
    from medmulti.io.limits import DEFAULT_LIMITS

    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.dcm"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(sock_path))
        for special, kind in ((fifo, "named pipe"), (sock_path, "socket"), (Path("/dev/null"), "character device")):
            with deadline(20):
                with pytest.raises(UnsupportedDataError, match=kind):
                    medmulti.read_image(special)
                with pytest.raises(UnsupportedDataError, match=kind):
                    inspect_source(special, modality="mr")
                with pytest.raises(UnsupportedDataError, match=kind):
                    detect_format(special)
                with pytest.raises(UnsupportedDataError, match=kind):
                    read_header(special, limits=DEFAULT_LIMITS)
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_special_file_in_a_series_folder_is_refused(cohort, kind):
    root, _ = cohort
    ct = root / "SYN0001" / "ct"
    name = "zz_special"
    sock = None
    if kind == "fifo":
        os.mkfifo(ct / name)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.fspath(ct / name))
    try:
        assert not stat.S_ISREG(os.lstat(ct / name).st_mode)
        with deadline(20), pytest.raises(UnsupportedDataError) as info:
            medmulti.read_image(ct)
        assert info.value.path == name
        with deadline(20), pytest.raises(UnsupportedDataError):
            list_series(ct)
    finally:
        if sock is not None:
            sock.close()


def test_a_link_to_a_fifo_inside_the_folder_is_refused(cohort):
    root, _ = cohort
    ct = root / "SYN0001" / "ct"
    os.mkfifo(root / "pipe")
    (ct / SLICE).unlink()
    (ct / SLICE).symlink_to(root / "pipe")
    with deadline(20), pytest.raises(UnsupportedDataError, match="named pipe"):
        medmulti.read_image(ct, root=root)


# -- the recorder ------------------------------------------------------------------------

from fs_recorder import record_fs as _record  # noqa: E402
