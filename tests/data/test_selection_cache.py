"""A series or volume chosen in the manifest reaches the cache key, preprocess_manifest and
PatientSequence; rows without a choice keep exactly their keys.

The cohort: P2's CT folder holds two CT series sharing SeriesNumber 2; P3's MR is a 4D
NIfTI. Arrays are compared with ``preprocess_study`` of the image SimpleITK's
ImageSeriesReader reads from that series' files, and of the volume nibabel reads.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medmulti import SeriesGeometryError
from medmulti.cli import main
from medmulti.data.cache import PreprocessCache
from medmulti.data.cache_fill import preprocess_manifest
from medmulti.data.cache_key import entry_key, entry_keys, fingerprint_source
from medmulti.examples import synth
from medmulti.image import Image
from medmulti.io import SourceRef
from medmulti.manifest import load_manifest
from medmulti.spec import LabelSpec, ModalitySpec, StudySpec
from medmulti.study.preprocess import preprocess_study

MR_AFFINE = synth.affine_from_geometry((3.0, 2.0, 2.0), (-2.0, -1.0, -3.0))
COLS = ["patient_id", "split", "diagnosis", "ct", "mr", "ct_series", "mr_volume"]


def _spec() -> StudySpec:
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, spacing_mm=(4.0, 4.0, 4.0), shape=(8, 8, 8),
                         intensity={"windows": [[40, 400], [400, 1800]]}),
            ModalitySpec(name="mr", kind="mr", register="none"),
        ],
        labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]),
        name="selection-cache",
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("selcache")

    def ct(folder, n, spacing, origin, **kw):
        vol = rng.integers(-1000, 1500, size=(n, 16, 16)).astype(np.float64)
        return synth.write_dicom_series(vol, folder, affine=synth.affine_from_geometry(spacing, origin), **kw)

    def mr():
        return rng.uniform(0, 1000, size=(10, 16, 16))

    for pid in ("P1", "P3"):
        ct(root / pid / "ct", 8, (3.0, 1.5, 1.5), (0.0, 0.0, 0.0), patient={"PatientID": pid})
    for pid in ("P1", "P2"):
        synth.write_nifti(mr(), root / pid / "mr.nii.gz", affine=MR_AFFINE)
    three = [Image(mr().astype(np.float32), MR_AFFINE, (3.0, 2.0, 2.0), "MR").to_nifti() for _ in range(3)]
    img4 = nib.Nifti1Image(np.stack([np.asanyarray(t.dataobj) for t in three], axis=-1), three[0].affine)
    img4.set_qform(three[0].affine, code=1)
    img4.set_sform(three[0].affine, code=1)
    nib.save(img4, str(root / "P3" / "mr4d.nii.gz"))
    same = {"patient": {"PatientID": "P2"}, "study_uid": synth.new_uid(), "series_number": 2}
    files = {
        "a": ct(root / "P2" / "ct", 8, (3.0, 1.5, 1.5), (0.0, 0.0, 0.0), filename="IM{index:04d}_a.dcm", **same),
        "b": ct(root / "P2" / "ct", 6, (4.0, 1.4, 1.4), (2.0, 3.0, -4.0), filename="IM{index:04d}_b.dcm", **same),
    }
    rows = [
        {"patient_id": "P1", "split": "train", "diagnosis": "healthy", "ct": "P1/ct", "mr": "P1/mr.nii.gz"},
        {"patient_id": "P2", "split": "train", "diagnosis": "disease", "ct": "P2/ct", "mr": "P2/mr.nii.gz"},
        {"patient_id": "P3", "split": "train", "diagnosis": "healthy", "ct": "P3/ct", "mr": "P3/mr4d.nii.gz"},
    ]

    def write(name, ct_series="", mr_volume="", cols=COLS):
        path = root / name
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                cells = dict(r, ct_series=ct_series if r["patient_id"] == "P2" else "",
                             mr_volume=mr_volume if r["patient_id"] == "P3" else "")
                w.writerow({c: cells.get(c, "") for c in cols})
        return path

    spec_path = root / "spec.yaml"
    _spec().to_yaml(spec_path)
    return {
        "root": root,
        "files": files,
        "spec": spec_path,
        "plain": write("plain.csv", cols=COLS[:5]),
        "b1": write("b1.csv", files["b"][1].name, "1"),
        "a0": write("a0.csv", files["a"][0].name, "0"),
    }


def _rows(manifest) -> dict:
    m = load_manifest(manifest, _spec(), strict=False)
    return {r.patient_id: r for r in m.rows}, m.root


def _sitk_series(files) -> Image:
    """SimpleITK's ImageSeriesReader given exactly that series' files (the oracle)."""
    import SimpleITK as sitk

    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(Path(files[0]).parent), uid))
    assert len(reader.GetFileNames()) == len(files)
    return Image.from_sitk(reader.Execute(), modality="CT")


def _nib_volume(path, k) -> Image:
    return Image.from_nifti(nib.four_to_three(nib.load(str(path)))[k], modality="MR")


def _key(rows, root, pid, name):
    row = rows[pid]
    return entry_key(_spec(), name, row.sources, root=root, sha256=row.sha256)


# -- keys ------------------------------------------------------------------------------------


def test_rows_without_a_choice_keep_exactly_their_keys(cohort):
    spec = _spec()
    root = cohort["root"]
    plain_paths = {"P1": {"ct": root / "P1" / "ct", "mr": root / "P1" / "mr.nii.gz"},
                   "P3": {"ct": root / "P3" / "ct", "mr": root / "P3" / "mr4d.nii.gz"}}
    for manifest in ("plain", "b1", "a0"):
        rows, mroot = _rows(cohort[manifest])
        for n in ("ct", "mr"):
            # P1 never chooses: the key of its plain paths, whatever the manifest's columns
            assert _key(rows, mroot, "P1", n) == entry_key(spec, n, plain_paths["P1"], root=root)
        # P3's CT is the reference: an MR volume choice does not touch its key
        assert _key(rows, mroot, "P3", "ct") == entry_key(spec, "ct", plain_paths["P3"], root=root)
    # a SourceRef choosing nothing keys as the plain path
    refs = {n: SourceRef(p) for n, p in plain_paths["P1"].items()}
    assert (entry_keys(spec, ["ct", "mr"], refs, root=root)
            == entry_keys(spec, ["ct", "mr"], plain_paths["P1"], root=root))
    assert fingerprint_source(refs["ct"], root=root) == fingerprint_source(plain_paths["P1"]["ct"], root=root)


def test_two_choices_in_one_folder_get_two_keys(cohort):
    plain, proot = _rows(cohort["plain"])
    b1, broot = _rows(cohort["b1"])
    a0, aroot = _rows(cohort["a0"])
    for name in ("ct", "mr"):  # P2's MR lies on the grid of the chosen CT: its key follows
        keys = {_key(plain, proot, "P2", name), _key(b1, broot, "P2", name), _key(a0, aroot, "P2", name)}
        assert len(keys) == 3, name
    assert _key(b1, broot, "P3", "mr") != _key(a0, aroot, "P3", "mr") != _key(plain, proot, "P3", "mr")
    # the same file choice written two ways (absolute, relative to the folder) is one key
    folder = cohort["root"] / "P2" / "ct"
    name = cohort["files"]["b"][1].name
    spec = _spec()
    k_abs = entry_key(spec, "ct", {"ct": SourceRef(folder, series=folder / name)}, root=cohort["root"])
    k_rel = entry_key(spec, "ct", {"ct": SourceRef(folder, series=Path(name))}, root=cohort["root"])
    assert k_abs == k_rel == _key(b1, broot, "P2", "ct")


def test_the_key_document_holds_no_uid(cohort):
    folder = cohort["root"] / "P2" / "ct"
    uid = str(pydicom.dcmread(cohort["files"]["b"][0], stop_before_pixels=True).SeriesInstanceUID)
    doc = fingerprint_source(SourceRef(folder, series=uid, volume=None), root=cohort["root"])
    assert uid not in repr(doc) and doc["series"][0] == "uid"
    assert fingerprint_source(SourceRef(folder, series=2), root=cohort["root"])["series"] == ["number", 2]
    doc = fingerprint_source(SourceRef(folder, series=folder / "IM0001_b.dcm"), root=cohort["root"])
    assert doc["series"] == ["file", "IM0001_b.dcm"] and doc["path"] == "P2/ct"
    assert fingerprint_source(SourceRef(cohort["root"] / "P3" / "mr4d.nii.gz", volume=2))["volume"] == 2
    keys = {entry_key(_spec(), "ct", {"ct": SourceRef(folder, series=uid)}),
            entry_key(_spec(), "ct", {"ct": SourceRef(folder, series=uid + "1")})}
    assert len(keys) == 2


# -- preprocessing, the sequence, prune -------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle(cohort):
    """preprocess_study of the oracle images for P2 (series b) and P3 (volume 1)."""
    spec = _spec()
    root = cohort["root"]
    p2 = preprocess_study({"ct": _sitk_series(cohort["files"]["b"]), "mr": root / "P2" / "mr.nii.gz"}, spec)
    p3 = preprocess_study({"ct": root / "P3" / "ct", "mr": _nib_volume(root / "P3" / "mr4d.nii.gz", 1)}, spec)
    return {"P2": p2, "P3": p3}


@pytest.fixture(scope="module")
def filled(cohort, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("selcache_cache")
    summary = preprocess_manifest(cohort["b1"], _spec(), cache_dir, workers=0, progress=False)
    assert summary.ok, summary.summary()
    assert (summary.computed, summary.cached) == (6, 0)
    return cache_dir


def test_preprocess_manifest_caches_the_chosen_arrays(cohort, oracle, filled):
    rows, root = _rows(cohort["b1"])
    cache = PreprocessCache(filled)
    for pid, name in (("P2", "ct"), ("P2", "mr"), ("P3", "mr"), ("P3", "ct")):
        got = cache.load(_key(rows, root, pid, name))
        assert got is not None, (pid, name)
        np.testing.assert_allclose(got.array, oracle[pid][name].array, atol=1e-5, err_msg=f"{pid} {name}")
    again = preprocess_manifest(cohort["b1"], _spec(), filled, workers=0, progress=False)
    assert (again.computed, again.cached) == (0, 6)
    # in worker processes too (the rows and their SourceRefs travel by pickle)
    fresh = preprocess_manifest(cohort["b1"], _spec(), filled.parent / "spawned", workers=2, progress=False)
    assert fresh.ok and fresh.computed == 6
    np.testing.assert_array_equal(PreprocessCache(filled.parent / "spawned").load(_key(rows, root, "P2", "ct")).array,
                                  cache.load(_key(rows, root, "P2", "ct")).array)


def test_the_sequence_serves_the_chosen_arrays_from_the_cache(cohort, oracle, filled, monkeypatch):
    from medmulti.data.sequence import PatientSequence
    from medmulti.study import preprocess as pre_module

    def refuse(*args, **kwargs):
        raise AssertionError("preprocess_study called: the sequence missed the cache")

    monkeypatch.setattr(pre_module, "preprocess_study", refuse)
    seq = PatientSequence(cohort["b1"], _spec(), "train", batch_size=3, shuffle=False, cache_dir=filled,
                          progress=False)
    assert sorted(seq.patient_ids) == ["P1", "P2", "P3"] and not seq.skipped
    x, _ = seq[0]
    for pid, name in (("P2", "ct"), ("P2", "mr"), ("P3", "mr")):
        j = seq.patient_ids.index(pid)
        np.testing.assert_allclose(x[name][j], oracle[pid][name].array, atol=1e-5)
        np.testing.assert_allclose(seq.get_patient(pid)[name], oracle[pid][name].array, atol=1e-5)


def test_the_sequence_without_a_cache(cohort, oracle):
    from medmulti.data.sequence import PatientSequence

    seq = PatientSequence(cohort["b1"], _spec(), "train", batch_size=1, shuffle=False, progress=False)
    np.testing.assert_allclose(seq.get_patient("P2")["ct"], oracle["P2"]["ct"].array, atol=1e-5)
    np.testing.assert_allclose(seq.get_patient("P3")["mr"], oracle["P3"]["mr"].array, atol=1e-5)


def test_without_the_columns_the_sequence_refuses_or_skips_them(cohort):
    from medmulti.data.sequence import PatientSequence

    with pytest.raises(SeriesGeometryError) as info:
        PatientSequence(cohort["plain"], _spec(), "train", progress=False)
    assert info.value.patient_id == "P2" and info.value.modality == "ct" and "ct_series" in info.value.hint
    seq = PatientSequence(cohort["plain"], _spec(), "train", on_corrupt="skip", progress=False)
    assert seq.patient_ids == ["P1"]
    assert {(s[0], s[1], s[2].split(":")[0]) for s in seq.skipped} == {
        ("P2", "ct", "series_geometry"), ("P3", "mr", "unsupported_data")}


def test_prune_keeps_the_entries_of_the_choices(cohort, filled, tmp_path, capsys):
    import shutil

    cache = tmp_path / "c"
    shutil.copytree(filled, cache)
    n = len(list(PreprocessCache(cache).keys()))
    assert main(["cache", "prune", str(cache), "--manifest", str(cohort["b1"]), "--spec", str(cohort["spec"])]) == 0
    assert len(list(PreprocessCache(cache).keys())) == n == 6
    # the manifest without the columns uses only the entries of P1 and of P3's CT
    assert main(["cache", "prune", str(cache), "--manifest", str(cohort["plain"]), "--spec", str(cohort["spec"])]) == 0
    rows, root = _rows(cohort["plain"])
    assert set(PreprocessCache(cache).keys()) == {_key(rows, root, "P1", "ct"), _key(rows, root, "P1", "mr"),
                                                  _key(rows, root, "P3", "ct")}
