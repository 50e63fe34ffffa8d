"""``<modality>_series`` / ``<modality>_volume`` manifest columns, on a generated cohort.

P2's CT folder holds two CT series sharing SeriesNumber 2 (files interleaved by name);
P3's MR is a 4D NIfTI. Without the columns validation reports both; with them it
passes, and what is read is what SimpleITK's ImageSeriesReader gives for that
series' files and what nibabel gives for that volume (the oracles).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medmulti import ManifestError, UnsafePathError, preprocess_study, read_image
from medmulti.cli import main
from medmulti.examples import synth
from medmulti.image import Image
from medmulti.io import SourceRef
from medmulti.io.source_ref import parse_series_choice
from medmulti.manifest import check_row, load_manifest, validate_manifest
from medmulti.manifest.schema import parse_series_cell
from medmulti.spec import LabelSpec, ModalitySpec, StudySpec

COLS = ["patient_id", "split", "diagnosis", "ct", "mr"]
N_A, N_B, N_VOLUMES = 8, 6, 3


def _spec() -> StudySpec:
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, spacing_mm=(4.0, 4.0, 4.0), shape=(8, 8, 8),
                         intensity={"windows": [[40, 400], [400, 1800]]}),
            ModalitySpec(name="mr", kind="mr", register="none", required=False),
        ],
        labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]),
        name="selection",
    )


def _ct(rng, folder: Path, n: int, **kw) -> list[Path]:
    vol = rng.integers(-1000, 1500, size=(n, 16, 16)).astype(np.float64)
    return synth.write_dicom_series(vol, folder, **kw)


def _mr(rng, shape=(10, 16, 16)) -> np.ndarray:
    return rng.uniform(0, 1000, size=shape)


MR_AFFINE = synth.affine_from_geometry((3.0, 2.0, 2.0), (-2.0, -1.0, -3.0))


def _write_4d(path: Path, volumes: list[np.ndarray]) -> Path:
    """A 4D NIfTI whose volume k is ``volumes[k]`` ((z, y, x), LPS affine MR_AFFINE)."""
    three = [Image(v.astype(np.float32), MR_AFFINE, (3.0, 2.0, 2.0), "MR").to_nifti() for v in volumes]
    data = np.stack([np.asanyarray(t.dataobj) for t in three], axis=-1)
    img = nib.Nifti1Image(data, three[0].affine)
    img.set_qform(three[0].affine, code=1)
    img.set_sform(three[0].affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """root, the files of P2's two CT series (a, b), their SeriesInstanceUIDs and the spec."""
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("selection")
    for pid in ("P1", "P3"):
        _ct(rng, root / pid / "ct", N_A, patient={"PatientID": pid},
            affine=synth.affine_from_geometry((3.0, 1.5, 1.5), (0.0, 0.0, 0.0)))
    synth.write_nifti(_mr(rng), root / "P1" / "mr.nii.gz", affine=MR_AFFINE)
    synth.write_nifti(_mr(rng), root / "P2" / "mr.nii.gz", affine=MR_AFFINE)
    _write_4d(root / "P3" / "mr4d.nii.gz", [_mr(rng) for _ in range(N_VOLUMES)])
    study = synth.new_uid()
    same = {"patient": {"PatientID": "P2"}, "study_uid": study, "series_number": 2}
    files_a = _ct(rng, root / "P2" / "ct", N_A, filename="IM{index:04d}_a.dcm", **same,
                  affine=synth.affine_from_geometry((3.0, 1.5, 1.5), (0.0, 0.0, 0.0)))
    files_b = _ct(rng, root / "P2" / "ct", N_B, filename="IM{index:04d}_b.dcm", **same,
                  affine=synth.affine_from_geometry((4.0, 1.4, 1.4), (2.0, 3.0, -4.0)))
    uids = {k: str(pydicom.dcmread(f[0], stop_before_pixels=True).SeriesInstanceUID)
            for k, f in (("a", files_a), ("b", files_b))}
    spec_path = root / "spec.yaml"
    _spec().to_yaml(spec_path)
    return {"root": root, "files": {"a": files_a, "b": files_b}, "uids": uids, "spec": spec_path}


def _rows(ct_series: str = "", mr_volume: str = "") -> list[dict]:
    return [
        {"patient_id": "P1", "split": "train", "diagnosis": "healthy", "ct": "P1/ct", "mr": "P1/mr.nii.gz"},
        {"patient_id": "P2", "split": "train", "diagnosis": "disease", "ct": "P2/ct", "mr": "P2/mr.nii.gz",
         "ct_series": ct_series},
        {"patient_id": "P3", "split": "train", "diagnosis": "healthy", "ct": "P3/ct", "mr": "P3/mr4d.nii.gz",
         "mr_volume": mr_volume},
    ]


def _write(root: Path, rows: list[dict], name: str = "manifest.csv", extra: tuple = ()) -> Path:
    cols = COLS + [c for r in rows for c in r if c not in COLS] + list(extra)
    cols = list(dict.fromkeys(cols))
    path = root / name
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def _errors(report) -> set[tuple]:
    return {(p.patient_id, p.modality, p.check) for p in report.problems if p.severity == "error"}


def _texts(problems) -> str:
    return json.dumps([p.to_dict() for p in problems])


def _sitk_series(files) -> Image:
    """SimpleITK's ImageSeriesReader given exactly that series' files (the oracle)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    folder = str(Path(files[0]).parent)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
    assert len(reader.GetFileNames()) == len(files)
    return Image.from_sitk(reader.Execute(), modality="CT")


def _nibabel_volume(path: Path, k: int) -> Image:
    """Volume ``k`` of a 4D NIfTI as nibabel reads it (the oracle)."""
    return Image.from_nifti(nib.four_to_three(nib.load(str(path)))[k], modality="MR")


# -- without the columns -----------------------------------------------------------------


def test_without_the_columns_validation_reports_both_inputs(cohort):
    manifest = _write(cohort["root"], _rows(), "plain.csv")
    report = validate_manifest(manifest, cohort["spec"], workers=1, progress=False)
    assert _errors(report) == {("P2", "ct", "series_geometry"), ("P3", "mr", "unsupported_data")}
    by = {p.patient_id: p for p in report.errors}
    assert "ct_series" in by["P2"].hint and "IM0000_a.dcm" in by["P2"].message and "IM0000_b.dcm" in by["P2"].message
    assert "mr_volume" in by["P3"].hint and f"{N_VOLUMES} volumes" in by["P3"].message
    text = _texts(report.problems)
    assert not any(uid in text for uid in cohort["uids"].values())
    # the CLI: exit 1
    assert main(["validate", str(manifest), "--spec", str(cohort["spec"]), "--workers", "1", "--no-progress"]) == 1


# -- with the columns --------------------------------------------------------------------


def _choices(cohort) -> dict[str, str]:
    b = cohort["files"]["b"]
    return {
        "file": b[2].name,  # relative to the ct folder
        "dot_file": f"./{b[0].name}",
        "inside_dotdot": f"../ct/{b[1].name}",  # '..' that stays inside the manifest folder
        "subpath_backslash": f"..\\ct\\{b[3].name}",
        "uid": cohort["uids"]["b"],
    }


@pytest.mark.parametrize("how", ["file", "dot_file", "inside_dotdot", "subpath_backslash", "uid"])
def test_with_the_columns_validation_passes_and_inspects_the_chosen_ones(cohort, how):
    ct_series = _choices(cohort)[how]
    manifest = _write(cohort["root"], _rows(ct_series, "1"), f"with_{how}.csv")
    spec = _spec()
    report = validate_manifest(manifest, spec, workers=1, progress=False)
    assert report.ok, report.lines()
    assert not any(uid in _texts(report.problems) for uid in cohort["uids"].values())
    rows = {r.patient_id: r for r in load_manifest(manifest, spec)}
    ref = rows["P2"].sources["ct"]
    assert isinstance(ref, SourceRef) and ref.path == (cohort["root"] / "P2" / "ct").resolve()
    assert rows["P2"].series == {"ct": ct_series} and rows["P3"].volume == {"mr": "1"}
    assert isinstance(rows["P1"].sources["ct"], Path)  # no choice: a plain path as before
    oracle = _sitk_series(cohort["files"]["b"])
    res = check_row(rows["P2"], spec)
    assert res.sources["ct"].n_files == N_B and res.sources["ct"].shape == oracle.shape
    np.testing.assert_allclose(res.sources["ct"].affine, oracle.affine, atol=1e-4)
    info = check_row(rows["P3"], spec).sources["mr"]
    assert info.shape == _nibabel_volume(cohort["root"] / "P3" / "mr4d.nii.gz", 1).shape
    # the other series is counted, in the column's words
    notes = [p.message for p in res.problems if p.check == "reader_warning"]
    assert notes == ["1 other image series ignored (ct_series given)"]


def test_the_cli_with_the_columns_and_worker_processes(cohort, tmp_path):
    manifest = _write(cohort["root"], _rows(cohort["files"]["b"][0].name, "2"), "cli.csv")
    out = tmp_path / "p.json"
    html = tmp_path / "r.html"
    rc = main(["validate", str(manifest), "--spec", str(cohort["spec"]), "--workers", "2", "--no-progress",
               "--json", str(out), "--html", str(html), "--deep"])
    assert rc == 0
    assert [p for p in json.loads(out.read_text()) if p["severity"] == "error"] == []
    assert html.read_text().count("data:image/png;base64,") == 3  # a thumbnail per patient, chosen inputs


def test_a_choice_is_what_gets_read(cohort):
    """read_image through the row's SourceRef equals the oracles; the other choice differs."""
    manifest = _write(cohort["root"], _rows(cohort["files"]["a"][0].name, "2"), "read.csv")
    rows = {r.patient_id: r for r in load_manifest(manifest, _spec())}
    ref = rows["P2"].sources["ct"]
    img = read_image(ref.path, **ref.read_kwargs())
    oracle = _sitk_series(cohort["files"]["a"])
    np.testing.assert_array_equal(img.array, oracle.array)
    np.testing.assert_allclose(img.affine, oracle.affine, atol=1e-4)
    mr = rows["P3"].sources["mr"]
    got = read_image(mr.path, **mr.read_kwargs())
    want = _nibabel_volume(mr.path, 2)
    np.testing.assert_allclose(got.array, want.array, rtol=1e-6)
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-5)
    assert not np.allclose(got.array, _nibabel_volume(mr.path, 1).array)


def test_preprocess_study_of_the_row_equals_preprocess_study_of_the_oracle_images(cohort):
    spec = _spec()
    b = cohort["files"]["b"]
    manifest = _write(cohort["root"], _rows(b[0].name, "1"), "pre.csv")
    row = next(r for r in load_manifest(manifest, spec) if r.patient_id == "P2")
    row3 = next(r for r in load_manifest(manifest, spec) if r.patient_id == "P3")
    oracle_ct = _sitk_series(b)
    raw = read_image(cohort["root"] / "P2" / "ct", series=b[0].name)
    np.testing.assert_array_equal(raw.array, oracle_ct.array)
    got = preprocess_study({"ct": row.sources["ct"], "mr": row.sources["mr"]}, spec, patient_id="P2")
    want = preprocess_study({"ct": oracle_ct, "mr": row.sources["mr"]}, spec)
    np.testing.assert_allclose(got["ct"].array, want["ct"].array, atol=1e-6)
    np.testing.assert_allclose(got["ct"].affine, want["ct"].affine, atol=1e-6)
    # P3: the chosen MR volume, on the CT grid
    mr_oracle = _nibabel_volume(cohort["root"] / "P3" / "mr4d.nii.gz", 1)
    got3 = preprocess_study(dict(row3.sources), spec, patient_id="P3")
    want3 = preprocess_study({"ct": row3.sources["ct"], "mr": mr_oracle}, spec)
    np.testing.assert_allclose(got3["mr"].array, want3["mr"].array, atol=1e-5)
    assert got3["mr"].meta["source_shape"] == list(mr_oracle.shape)


# -- choices that cannot be used -----------------------------------------------------------


def test_a_series_number_shared_by_both_is_a_problem_named_by_its_column(cohort):
    report = validate_manifest(_write(cohort["root"], _rows("2", "0"), "num.csv"), _spec(), workers=1,
                               progress=False)
    assert _errors(report) == {("P2", "ct", "series_geometry")}
    p = report.errors[0]
    assert p.message.startswith("the series given in column ct_series: several image series with number 2")
    assert "ct_series" in p.hint


@pytest.mark.parametrize("cell", ["1.2.826.0.1.999999.1", "nothere.dcm", "P1/ct/IM0000.dcm"])
def test_a_series_naming_nothing_in_the_folder_is_not_echoed(cohort, cell):
    report = validate_manifest(_write(cohort["root"], _rows(cell, "0"), "none.csv"), _spec(), workers=1,
                               progress=False)
    assert _errors(report) == {("P2", "ct", "series_geometry")}
    p = report.errors[0]
    assert "column ct_series" in p.message and "ct_series" in p.hint
    text = _texts(report.problems)
    assert cell not in text and str(cohort["root"]) not in text
    assert not any(uid in text for uid in cohort["uids"].values())


def test_volume_out_of_range_or_for_a_3d_file(cohort):
    rows = _rows(cohort["files"]["a"][0].name, str(N_VOLUMES))
    rows[0]["mr_volume"] = "1"  # P1's MR is 3D
    report = validate_manifest(_write(cohort["root"], rows, "vol.csv"), _spec(), workers=1, progress=False)
    assert _errors(report) == {("P1", "mr", "unsupported_data"), ("P3", "mr", "unsupported_data")}
    by = {p.patient_id: p for p in report.errors}
    assert "mr_volume" in by["P1"].message and "3D" in by["P1"].message
    assert f"mr_volume {N_VOLUMES} is out of range for {N_VOLUMES} volumes" in by["P3"].message
    assert all("mr_volume" in p.hint for p in report.errors)


@pytest.mark.parametrize("cell", ["abc", "-1", "1.5", "1e3", "two"])
def test_a_bad_volume_cell(cohort, cell):
    manifest = _write(cohort["root"], _rows("", cell), "badvol.csv")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, _spec())
    err = info.value
    assert err.row == 4 and err.column == "mr_volume" and err.patient_id == "P3" and err.hint
    assert "non-negative integer" in str(err)
    lenient = load_manifest(manifest, _spec(), strict=False)
    assert [(p.patient_id, p.modality, p.check) for p in lenient.problems] == [("P3", "mr", "bad_volume")]
    assert lenient.rows[2].sources["mr"] is None  # not read at all
    report = validate_manifest(manifest, _spec(), workers=1, progress=False)
    assert ("P3", "mr", "bad_volume") in _errors(report)
    assert ("P3", "mr", "unsupported_data") not in _errors(report)


@pytest.mark.parametrize("cell", ["2", "+2", "2.0", " 2 "])
def test_volume_spellings(cohort, cell):
    rows = load_manifest(_write(cohort["root"], _rows("", cell), "spell.csv"), _spec(), strict=False).rows
    assert rows[2].sources["mr"].volume == 2


def test_unsafe_series_paths_are_refused_like_path_cells(cohort, tmp_path):
    outside = synth.write_dicom_series(np.zeros((1, 4, 4)), tmp_path / "outside")[0]
    for cell, why in ((str(outside), "absolute path"), ("../../../outside/IM0000.dcm", "outside the manifest folder"),
                      ("%2e%2e/%2e%2e/x.dcm", "percent-encoded")):
        manifest = _write(cohort["root"], _rows(cell, "0"), "unsafe.csv")
        with pytest.raises(UnsafePathError) as info:
            load_manifest(manifest, _spec())
        assert info.value.column == "ct_series" and info.value.modality == "ct" and info.value.row == 3
        assert why in str(info.value)
        report = validate_manifest(manifest, _spec(), workers=1, progress=False)
        assert _errors(report) == {("P2", "ct", "unsafe_path")}
        p = report.errors[0]
        assert "the file given in column ct_series" in p.message and p.path == "P2/ct"
    # an explicit data root that contains it makes the absolute path acceptable (then: not in the folder)
    manifest = _write(cohort["root"], _rows(str(outside), "0"), "unsafe.csv")
    row = load_manifest(manifest, _spec(), data_root="/").rows[1]
    assert row.sources["ct"].series == outside.resolve()


def test_a_choice_for_an_empty_path(cohort):
    rows = _rows("", "0")
    rows[0]["mr"] = ""
    rows[0]["mr_series"] = "3"
    rows[0]["mr_volume"] = "0"
    manifest = _write(cohort["root"], rows, "empty.csv")
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, _spec())
    assert info.value.column in ("mr_volume", "mr_series") and info.value.row == 2
    lenient = load_manifest(manifest, _spec(), strict=False)
    assert {(p.patient_id, p.check) for p in lenient.problems} == {("P1", "bad_volume"), ("P1", "bad_series")}
    assert lenient.rows[0].sources["mr"] is None


def test_series_given_for_a_file(cohort):
    rows = _rows(cohort["files"]["b"][0].name, "0")
    rows[0]["mr_series"] = "3"  # P1's MR is a NIfTI file
    report = validate_manifest(_write(cohort["root"], rows, "file.csv"), _spec(), workers=1, progress=False)
    assert _errors(report) == {("P1", "mr", "unsupported_data")}
    p = report.errors[0]
    assert p.message == "mr_series chooses among the series of a folder, but the mr path is a file"
    assert "mr_series" in p.hint


def test_columns_are_known_and_optional(cohort):
    # present and empty on every row: rows load exactly as without the columns
    plain = load_manifest(_write(cohort["root"], _rows()[:1], "one.csv"), _spec())
    empty = load_manifest(_write(cohort["root"], _rows()[:1], "one_cols.csv",
                                 extra=("ct_series", "ct_volume", "mr_series", "mr_volume")), _spec())
    assert plain.rows[0].sources == empty.rows[0].sources
    assert empty.rows[0].series == {} and empty.rows[0].volume == {}
    with pytest.raises(ManifestError) as info:  # a column for a modality the spec does not have
        load_manifest(_write(cohort["root"], _rows()[:1], "unknown.csv", extra=("pet_series",)), _spec())
    assert info.value.column == "pet_series"


@pytest.mark.parametrize("cell", ["5", " 05 ", "1.2.3", "1.2.3.", "a.dcm", "sub/1.2", "1e5", "./7"])
def test_series_cells_read_as_read_image_reads_series(cell):
    assert parse_series_cell(cell)[0] == parse_series_choice(cell)[0]


def test_source_ref_is_accepted_where_a_path_is(cohort):
    from medmulti.io import inspect_source

    folder = cohort["root"] / "P2" / "ct"
    b = cohort["files"]["b"]
    ref = SourceRef(folder, series=b[0].name)
    assert inspect_source(ref).files == inspect_source(folder, series=b[0].name).files
    assert inspect_source(ref, series=cohort["files"]["a"][0].name).n_files == N_A  # an explicit argument wins
    assert Path(ref) == folder and str(ref) == str(folder)
    assert SourceRef(folder, series=" 2").series == 2 and SourceRef(folder, series=np.int64(2)).series == 2
    assert SourceRef.coerce(folder) == SourceRef(folder) and not SourceRef(folder).selects
    with pytest.raises(TypeError):
        SourceRef(folder, series=2.0)
    with pytest.raises(TypeError):
        SourceRef(folder, volume="1")


def test_source_ref_repr_hides_a_uid(cohort):
    uid = cohort["uids"]["b"]
    ref = SourceRef(cohort["root"] / "P2" / "ct", series=uid, volume=None)
    assert uid not in repr(ref) and "SeriesInstanceUID" in repr(ref)
    assert "series=2" in repr(SourceRef("x", series="2"))
    manifest = _write(cohort["root"], _rows(uid, "1"), "repr.csv")
    row = load_manifest(manifest, _spec()).rows[1]
    assert row.series == {"ct": uid} and uid not in repr(row)
