"""PHI canary study: 0 canaries anywhere medmulti writes, logs, warns or raises.

The cohort (``medmulti_testing.canary``) carries a unique canary in every PS3.15
Annex E attribute, in private tags and sequences, in NIfTI descrip/aux_file/
intent_name/db_name and a comment extension, plus a UID value invalid for its VR
that makes pydicom warn. Every stage runs with all loggers at DEBUG (pydicom's
too) into a file handler (so forked worker processes write there as well),
warnings recorded, and stdout/stderr captured at the file-descriptor level.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
from medmulti_testing.canary import find_canaries, make_canary_cohort, scan_tree

from medmulti.errors import MedmultiError

LOGGERS = ("", "medmulti", "pydicom", "nibabel", "keras", "tensorflow", "PIL", "matplotlib")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_canary_cohort(tmp_path_factory.mktemp("canary") / "cohort", n_patients=6, ct_slices=10)


class Capture:
    """Everything a stage emits: log records (file handler), warnings, errors, reports."""

    def __init__(self, folder: Path):
        self.log_file = folder / "all.log"
        self.texts: list[tuple[str, str]] = []
        self.warned: list[str] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def add_error(self, where: str, exc: BaseException) -> None:
        chain = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=True))
        self.add(where + " (traceback with chain)", chain)
        self.add(where + " (repr/args/context)", repr(exc) + repr(exc.args) + repr(getattr(exc, "__dict__", {})))
        if isinstance(exc, MedmultiError):
            self.add(where + " (pickled)", repr(pickle.loads(pickle.dumps(exc)).__dict__))

    def leaks(self, canaries, capfd=None) -> dict[str, list[str]]:
        found = {}
        for where, text in self.texts:
            hit = find_canaries(text, canaries)
            if hit:
                found[where] = hit
        for i, w in enumerate(self.warned):
            hit = find_canaries(w, canaries)
            if hit:
                found[f"warning {i}: {w[:200]}"] = hit
        if self.log_file.exists():
            hit = find_canaries(self.log_file.read_bytes(), canaries)
            if hit:
                lines = [ln for ln in self.log_file.read_text("utf-8", "replace").splitlines()
                         if find_canaries(ln, canaries)]
                found["log records: " + " | ".join(lines[:3])[:600]] = hit
        if capfd is not None:
            out, err = capfd.readouterr()
            for name, text in (("stdout", out), ("stderr", err)):
                hit = find_canaries(text, canaries)
                if hit:
                    lines = [ln for ln in text.splitlines() if find_canaries(ln, canaries)]
                    found[f"{name}: " + " | ".join(lines[:3])[:600]] = hit
        return found


@pytest.fixture
def capture(tmp_path):
    cap = Capture(tmp_path)
    handler = logging.FileHandler(cap.log_file, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        yield cap
    cap.warned = [f"{w.category.__name__}: {w.message}" for w in recorded]
    root.removeHandler(handler)
    handler.close()
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _sources(cohort, pid):
    return {"ct": cohort.root / pid / "ct", "mr": cohort.root / pid / "mr.nii.gz", "xray": cohort.root / pid / "xray.dcm"}


def test_the_cohort_is_full_of_canaries(cohort):
    """The oracle: pydicom/nibabel see the canaries, and pydicom warns about the invalid UID."""
    import nibabel as nib
    import pydicom

    pid = cohort.patient_ids[0]
    ds = pydicom.dcmread(cohort.root / pid / "xray.dcm")
    assert find_canaries(str(ds.PatientName) + ds.PatientID + ds.AccessionNumber + ds.InstitutionName,
                         cohort.canaries)
    assert len(cohort.canaries) > 100
    hdr = nib.load(str(cohort.root / pid / "mr.nii.gz")).header
    assert find_canaries(hdr["descrip"].tobytes() + hdr["aux_file"].tobytes(), cohort.canaries)
    assert find_canaries(hdr.extensions[0].get_content(), cohort.canaries)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _ = ds.InstanceCreatorUID
    assert any(find_canaries(str(x.message), cohort.canaries) for x in w)
    # the readers still accept the files
    from medmulti.io import read_image

    for path in _sources(cohort, pid).values():
        assert np.isfinite(read_image(path).array).all()


def test_read_and_inspect(cohort, capture, capfd):
    from medmulti.io import inspect_source, read_image

    for pid in cohort.patient_ids:
        for name, path in _sources(cohort, pid).items():
            img = read_image(path)
            capture.add(f"{pid}/{name} Image", repr(img) + json.dumps(img.meta, default=str))
            info = inspect_source(path, deep=True)
            capture.add(f"{pid}/{name} SourceInfo", repr(info) + repr(info.warnings))
            digests = [d for d in info.digests.values() if d]
            capture.add(f"{pid}/{name} digests are not raw values", " ".join(digests))
    assert capture.leaks(cohort.canaries, capfd) == {}


def test_preprocess(cohort, capture, capfd):
    from medmulti import StudySpec
    from medmulti.study.preprocess import preprocess_study

    spec = StudySpec.from_yaml(cohort.spec)
    for pid in cohort.patient_ids[:3]:
        out = preprocess_study(_sources(cohort, pid), spec, patient_id=pid)
        for name, pre in out.items():
            capture.add(f"{pid}/{name} Preprocessed.meta", json.dumps(pre.meta, default=str) + repr(pre))
    assert capture.leaks(cohort.canaries, capfd) == {}


def _faulty_copy(cohort, dest: Path) -> Path:
    """A copy with a truncated CT slice, a missing slice, another patient's X-ray and a damaged MR."""
    shutil.copytree(cohort.root, dest)
    p = cohort.patient_ids
    slice0 = sorted((dest / p[0] / "ct").iterdir())[3]
    slice0.write_bytes(slice0.read_bytes()[:-300])
    sorted((dest / p[1] / "ct").iterdir())[4].unlink()
    shutil.copyfile(dest / p[3] / "xray.dcm", dest / p[2] / "xray.dcm")
    mr = dest / p[4] / "mr.nii.gz"
    mr.write_bytes(mr.read_bytes()[: mr.stat().st_size // 2])
    return dest


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "failing"])
def test_validate_reports(cohort, capture, capfd, tmp_path, faulty):
    from medmulti.manifest import validate_manifest

    root = _faulty_copy(cohort, tmp_path / "cohort") if faulty else cohort.root
    for deep in (False, True):
        report = validate_manifest(root / "manifest.csv", cohort.spec, workers=1, deep=deep, progress=False)
        assert report.ok is (not faulty), report.summary()
        capture.add(f"summary deep={deep}", report.summary())
        capture.add(f"problems deep={deep}", repr(report.problems) + json.dumps([p.to_dict() for p in report.problems]))
        report.to_json(tmp_path / f"report{deep}.json")
        report.to_html(tmp_path / f"report{deep}.html")
    if faulty:
        checks = {p.check for p in report.problems}
        assert len(checks) >= 3, checks
    assert scan_tree(tmp_path, cohort.canaries) == {} if not faulty else \
        {k: v for k, v in scan_tree(tmp_path, cohort.canaries).items() if k.startswith("report")} == {}
    assert capture.leaks(cohort.canaries, capfd) == {}


def test_errors_and_their_chains(cohort, capture, capfd, tmp_path):
    """Every error the damaged canary files raise, with its whole chain, pickled too."""
    from medmulti.io import inspect_source, read_image

    root = _faulty_copy(cohort, tmp_path / "cohort")
    p = cohort.patient_ids
    broken = [root / p[0] / "ct", sorted((root / p[0] / "ct").iterdir())[3], root / p[1] / "ct",
              root / p[4] / "mr.nii.gz"]
    junk = root / "junk.dcm"
    data = (root / p[5] / "xray.dcm").read_bytes()
    junk.write_bytes(data[:1500] + b"\xff" * 64 + data[1564:])
    broken.append(junk)
    raised = 0
    for path in broken:
        for fn in (read_image, lambda x: inspect_source(x, deep=True)):
            try:
                fn(path)
            except MedmultiError as exc:
                raised += 1
                capture.add_error(str(path), exc)
    assert raised >= 8
    assert capture.leaks(cohort.canaries, capfd) == {}


def _iterate(seq) -> int:
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    n = 0
    adapter = PyDatasetAdapter(seq, shuffle=False)
    for batch in adapter.get_numpy_iterator():
        n += 1
    return n


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_sequence_and_cache(cohort, capture, capfd, tmp_path, processes):
    from medmulti import StudySpec
    from medmulti.data.sequence import PatientSequence
    from medmulti.manifest import load_manifest

    spec = StudySpec.from_yaml(cohort.spec)
    manifest = load_manifest(cohort.manifest, spec)
    cache = tmp_path / "cache"
    seq = PatientSequence(manifest, spec, "train", batch_size=1, cache_dir=cache, workers=2,
                          use_multiprocessing=processes)
    assert _iterate(seq) == len(seq) > 0
    assert _iterate(seq) == len(seq)  # second pass reads the cache
    capture.add("sequence repr", repr(seq) + repr(seq.patient_ids) + repr(seq.skipped))
    files = [f for f in cache.rglob("*") if f.is_file()]
    assert files, "the cache stayed empty"
    assert scan_tree(cache, cohort.canaries) == {}
    assert capture.leaks(cohort.canaries, capfd) == {}


def test_cache_keys_not_derived_from_phi(cohort, tmp_path):
    """A copy whose PHI bytes all differ (same lengths, same mtimes) has the same cache keys."""
    import os

    from medmulti import StudySpec
    from medmulti.data.cache_key import entry_key
    from medmulti.manifest import load_manifest

    other = tmp_path / "other"
    shutil.copytree(cohort.root, other)  # copy2: mtimes kept
    changed = 0
    for f in sorted(other.rglob("*.dcm")):
        st = f.stat()
        data = f.read_bytes()
        new = data.replace(b"QZX", b"ABC").replace(b"31415926535897932384", b"27182818284590452353")
        new = new.replace(b"1873", b"1999")
        changed += new != data
        f.write_bytes(new)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changed > 0
    spec = StudySpec.from_yaml(cohort.spec)
    keys = []
    for root in (cohort.root, other):
        m = load_manifest(root / "manifest.csv", spec)
        keys.append([entry_key(spec, name, r.sources, root=m.root, sha256=r.sha256) for r in m.rows
                     for name in spec.names])
    assert keys[0] == keys[1]
    assert not any(find_canaries(k, cohort.canaries) for k in keys[0])


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATING = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.utime", "os.truncate",
             "os.link", "os.symlink", "shutil.rmtree", "shutil.copyfile", "shutil.copytree", "shutil.move"}
_WRITES: list | None = None


def _write_audit(event, args):
    if _WRITES is None:
        return
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
            (isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            _WRITES.append((event, os.fsdecode(path)))
    elif event in _MUTATING:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)):
                _WRITES.append((event, os.fsdecode(a)))


sys.addaudithook(_write_audit)


def _fingerprint(root: Path) -> dict[str, tuple]:
    import hashlib

    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_mode,
                                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_every_command_on_a_read_only_canary_cohort(cohort, capture, capfd, tmp_path):
    """Every command (CLI at -vv, in process) on a read-only copy: no canary anywhere, no source byte
    written (file hashes, modes and mtimes unchanged; no write-mode open or mutating call under it)."""
    import stat

    global _WRITES
    from medmulti.cli import main

    src = tmp_path / "readonly"
    shutil.copytree(cohort.root, src)
    for p in sorted(src.rglob("*"), reverse=True) + [src]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = _fingerprint(src)
    out = tmp_path / "out"
    out.mkdir()
    pid = cohort.patient_ids[0]
    m, spec = str(src / "manifest.csv"), str(src / "spec.yaml")
    run = out / "run"
    commands = [
        ["validate", m, "--spec", spec, "--deep", "--workers", "1", "--json", str(out / "v.json"),
         "--html", str(out / "v.html"), "--no-progress"],
        ["inspect", f"ct={src / pid / 'ct'}", f"mr={src / pid / 'mr.nii.gz'}", f"xray={src / pid / 'xray.dcm'}",
         "--spec", spec, "--out", str(out / "study.png"), "--patient-id", pid],
        ["preprocess", m, "--spec", spec, "--cache", str(out / "cache"), "--workers", "1", "--no-progress",
         "--json", str(out / "pre.json")],
        ["cache", "verify", str(out / "cache"), "--json", str(out / "verify.json"), "--no-progress"],
        ["train", m, "--spec", spec, "--out", str(run), "--cache", str(out / "cache"), "--epochs", "1",
         "--batch-size", "2", "--width", "2", "--depth", "1", "--patience", "0", "--no-progress"],
        ["evaluate", str(run), "--split", "val", "--no-progress", "--json"],
        ["predict", str(run), m, "--out", str(out / "pred.csv"), "--no-progress"],
        ["info", str(src / pid / "ct"), "--values"],
        ["info", str(src / pid / "xray.dcm"), "--json"],
    ]
    codes = {}
    _WRITES = []
    try:
        for k, argv in enumerate(commands):
            codes[f"{k}:{argv[0]}"] = main(["-vv", *argv])
    finally:
        writes, _WRITES = _WRITES, None
    assert all(code == 0 for code in codes.values()), codes
    assert (run / "model.keras").exists() or any(run.rglob("*.keras"))
    inside = [(e, p) for e, p in writes if os.path.realpath(p).startswith(os.path.realpath(src) + os.sep)
              or os.path.realpath(p) == os.path.realpath(src)]
    assert inside == []
    assert any(os.path.realpath(p).startswith(os.path.realpath(out)) for _, p in writes), "write recorder broken"
    assert _fingerprint(src) == before
    import keras  # the trained model loads in safe mode

    assert keras.saving.load_model(next(run.rglob("*.keras")), safe_mode=True) is not None
    assert scan_tree(out, cohort.canaries) == {}
    assert capture.leaks(cohort.canaries, capfd) == {}
