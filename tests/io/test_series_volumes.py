"""Classic single-frame DICOM series holding several volumes (4D) in one SeriesInstanceUID.

Multi-echo MR (EchoNumbers), dynamic series (TemporalPositionIdentifier), diffusion
(DiffusionBValue), multi-phase CT (AcquisitionNumber) and trigger-time series are
written with ``synth.write_dicom_series`` into one folder under the same
SeriesInstanceUID, files interleaved by name and shuffled within each volume. Each
volume read with ``volume=k`` is checked against SimpleITK's ImageSeriesReader given
exactly that volume's files, sorted by their position along the slice normal as
pydicom reads them (the oracle); ``inspect_source``, ``list_series`` and a manifest's
``<modality>_volume`` column must agree with it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_helpers import oblique_direction

from medmulti import SeriesGeometryError, UnsupportedDataError, preprocess_study, read_image
from medmulti.cli import main
from medmulti.examples import synth
from medmulti.image import Image
from medmulti.io import inspect_source, list_series
from medmulti.io.dicom_series import VOLUME_KEYS
from medmulti.manifest import check_row, load_manifest, validate_manifest
from medmulti.spec import LabelSpec, ModalitySpec, StudySpec


def _ascending(direction: np.ndarray) -> np.ndarray:
    """The direction with its slice axis along row x column (the slice order SimpleITK keeps)."""
    d = np.array(direction, float)
    d[:, 0] = np.cross(d[:, 2], d[:, 1])
    return d


MR_AFFINE = synth.affine_from_geometry((2.5, 0.9, 0.8), (10.0, -20.0, 30.0), _ascending(oblique_direction()))
CT_AFFINE = synth.affine_from_geometry((3.0, 1.5, 1.5), (-40.0, -30.0, -100.0))


def _write_volumes(folder: Path, volumes: list[np.ndarray], keyword: str, values: list, *, affines=None,
                   modality: str = "MR", seed: int = 0, extra: dict | None = None) -> list[list[Path]]:
    """Write each volume as single-frame files of ONE series; volume ``k`` carries ``keyword = values[k]``.

    Returns the files of each volume (in the order written)."""
    rng = np.random.default_rng(seed)
    uids = {"series_uid": synth.new_uid(), "study_uid": synth.new_uid(), "frame_of_reference_uid": synth.new_uid()}
    out = []
    for k, (vol, value) in enumerate(zip(volumes, values)):
        affine = MR_AFFINE if affines is None else affines[k]
        out.append(synth.write_dicom_series(
            vol, folder, affine=affine, modality=modality, order=rng.permutation(len(vol)),
            filename=f"IM{{index:04d}}_{k}.dcm", extra={keyword: value, **(extra or {})}, **uids,
            rescale_intercept=0.0 if modality == "MR" else -1024.0,
        ))
    return out


def _sorted_by_position(files: list[Path]) -> list[Path]:
    """The files in ascending position along the slice normal, as pydicom reads their headers."""
    def key(f: Path) -> float:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        return float(np.array([float(v) for v in ds.ImagePositionPatient]) @ np.cross(iop[:3], iop[3:]))
    return sorted(files, key=key)


def _sitk(files: list[Path], modality: str = "MR") -> Image:
    """SimpleITK's ImageSeriesReader given exactly these files, sorted by position (the oracle)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in _sorted_by_position(files)])
    return Image.from_sitk(reader.Execute(), modality=modality)


def _assert_same(img: Image, ref: Image) -> None:
    assert img.shape == ref.shape
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(img.spacing, ref.spacing, rtol=1e-6)


def _values(rng, shape) -> np.ndarray:
    return rng.integers(0, 3000, size=shape).astype(np.float64)


@pytest.fixture(scope="module")
def echoes(tmp_path_factory):
    """3 echoes x 8 oblique MR slices; EchoNumbers written 10, 1, 2 (so volume order is 1, 2, 10)."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("echoes")
    vols = [_values(rng, (8, 10, 12)) for _ in range(3)]
    files = _write_volumes(folder, vols, "EchoNumbers", [10, 1, 2], extra={"AcquisitionNumber": 1})
    order = [1, 2, 0]  # written volume index of volume 0, 1, 2 (ascending EchoNumbers)
    return {"folder": folder, "volumes": [vols[i] for i in order], "files": [files[i] for i in order]}


def test_without_volume_the_series_is_refused_with_counts_only(echoes):
    for call in (read_image, inspect_source):
        with pytest.raises(UnsupportedDataError) as info:
            call(echoes["folder"])
        err = info.value
        assert err.keyword == "EchoNumbers"
        assert "this series holds 3 volumes (by EchoNumbers: 3 values; 8 slices each)" in err.message
        assert "volume=0..2" in err.hint and "<modality>_volume" in err.hint
    uid = str(pydicom.dcmread(echoes["files"][0][0], stop_before_pixels=True).SeriesInstanceUID)
    assert uid not in str(err) and "10" not in err.message


def test_each_echo_equals_simpleitk_reading_its_files(echoes):
    for k in range(3):
        img = read_image(echoes["folder"], volume=k)
        ref = _sitk(echoes["files"][k])
        _assert_same(img, ref)
        np.testing.assert_array_equal(img.array, echoes["volumes"][k].astype(np.float32))
        assert img.meta["volume"] == k and img.meta["n_volumes"] == 3 and img.meta["volume_key"] == "EchoNumbers"
        assert img.meta["n_files"] == 8
        info = inspect_source(echoes["folder"], volume=k)
        assert info.shape == img.shape and info.n_files == 8
        np.testing.assert_allclose(info.spacing, img.spacing)
        np.testing.assert_allclose(info.affine, img.affine)
        assert info.files == [Path(p) for p in _sorted_by_position(echoes["files"][k])]


def test_volume_out_of_range(echoes):
    for call in (read_image, inspect_source):
        for bad in (3, -1):
            with pytest.raises(UnsupportedDataError) as info:
                call(echoes["folder"], volume=bad)
            assert f"volume={bad} is out of range for 3 volumes" in info.value.message
            assert "0 to 2" in info.value.hint


def test_list_series_and_info(echoes, capsys):
    (s,) = list_series(echoes["folder"])
    assert (s.n_volumes, s.volume_key, s.readable, s.problem) == (3, "EchoNumbers", True, None)
    assert s.n_files == 24
    for k in range(s.n_volumes):  # readable: each volume reads with the listed series choice
        assert read_image(echoes["folder"], series=s.select, volume=k).shape == (8, 10, 12)
    assert main(["info", str(echoes["folder"]), "--volume", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["series"][0]["n_volumes"] == 3 and data["image"]["shape"] == [8, 10, 12]
    assert data["image"]["n_files"] == 8
    assert main(["info", str(echoes["folder"])]) == 1  # a 4D series without --volume, as a 4D NIfTI
    captured = capsys.readouterr()
    assert "3 by EchoNumbers" in captured.out and "--volume 0..2" in captured.out
    assert "UnsupportedDataError" in captured.err


def test_dynamic_series_by_temporal_position(tmp_path):
    """4 time points; every file also carries EchoNumbers 1 and one AcquisitionNumber (single values: skipped)."""
    rng = np.random.default_rng(5)
    vols = [_values(rng, (5, 6, 7)) for _ in range(4)]
    files = _write_volumes(tmp_path, vols, "TemporalPositionIdentifier", [3, 1, 4, 2],
                           extra={"EchoNumbers": 1, "AcquisitionNumber": 7}, seed=1)
    with pytest.raises(UnsupportedDataError) as info:
        read_image(tmp_path)
    assert info.value.keyword == "TemporalPositionIdentifier" and "4 volumes" in info.value.message
    for k, written in enumerate([1, 3, 0, 2]):  # ascending TemporalPositionIdentifier
        img = read_image(tmp_path, volume=k)
        _assert_same(img, _sitk(files[written]))
        np.testing.assert_array_equal(img.array, vols[written].astype(np.float32))


def test_two_phase_ct_by_acquisition_number_with_different_extents(tmp_path):
    """Phase 2 covers fewer slices, overlapping phase 1: volumes differ in slice count because the data do."""
    rng = np.random.default_rng(8)
    arterial = rng.integers(-1000, 2000, size=(6, 8, 8)).astype(np.float64)
    venous = rng.integers(-1000, 2000, size=(10, 8, 8)).astype(np.float64)
    shifted = CT_AFFINE.copy()
    shifted[:3, 3] += 2 * CT_AFFINE[:3, 0]  # starts two slices higher
    files = _write_volumes(tmp_path, [venous, arterial], "AcquisitionNumber", [2, 1], affines=[CT_AFFINE, shifted],
                           modality="CT", seed=2)
    with pytest.raises(UnsupportedDataError) as info:
        inspect_source(tmp_path)
    assert "2 volumes (by AcquisitionNumber: 2 values; slices per volume differ: 6, 10)" in info.value.message
    for k, (written, vol) in enumerate(((1, arterial), (0, venous))):
        img = read_image(tmp_path, volume=k)
        _assert_same(img, _sitk(files[written], "CT"))
        np.testing.assert_array_equal(img.array, vol.astype(np.float32))
        assert img.modality == "CT" and img.meta["volume_key"] == "AcquisitionNumber"
        info = inspect_source(tmp_path, volume=k, deep=True)
        assert info.shape == img.shape
        np.testing.assert_allclose(info.affine, img.affine)


@pytest.mark.parametrize("keyword", VOLUME_KEYS)
def test_each_key_splits_and_orders_numerically(tmp_path, keyword):
    rng = np.random.default_rng(len(keyword))
    vols = [_values(rng, (3, 5, 6)) for _ in range(3)]
    values = {"DiffusionBValue": [1313.5, 0.0, 777.25], "TriggerTime": [120.5, 7.25, 60.0]}.get(keyword, [12, 3, 7])
    files = _write_volumes(tmp_path, vols, keyword, values, seed=3)
    with pytest.raises(UnsupportedDataError) as info:
        read_image(tmp_path)
    assert info.value.keyword == keyword
    shown = f"{info.value.message} {info.value.hint}"
    assert not any(str(v) in shown for v in values if v not in (0.0, 3, 7))  # values are never shown
    for k, written in enumerate(np.argsort(values)):
        img = read_image(tmp_path, volume=k)
        _assert_same(img, _sitk(files[written]))
        assert img.meta["volume_key"] == keyword


def test_a_single_position_time_series(tmp_path):
    """One slice position, five trigger times: five one-slice volumes (2D + t)."""
    rng = np.random.default_rng(4)
    vols = [_values(rng, (1, 6, 6)) for _ in range(5)]
    files = _write_volumes(tmp_path, vols, "TriggerTime", [0.0, 40.0, 80.0, 120.0, 160.0], seed=4)
    with pytest.raises(UnsupportedDataError) as info:
        read_image(tmp_path)
    assert "5 volumes (by TriggerTime: 5 values; 1 slice each)" in info.value.message
    img = read_image(tmp_path, volume=3)
    _assert_same(img, _sitk(files[3]))


def test_repeats_no_key_separates_stay_duplicates(tmp_path):
    """Two echoes, plus a second echo-1 file at a position echo 1 already has."""
    rng = np.random.default_rng(6)
    vols = [_values(rng, (4, 6, 6)) for _ in range(2)]
    _write_volumes(tmp_path, vols, "EchoNumbers", [1, 2], seed=5)
    synth.write_dicom_series(vols[0][:1], tmp_path / "extra", affine=MR_AFFINE, modality="MR",
                             series_uid=str(pydicom.dcmread(next(tmp_path.glob("IM0000_0.dcm"))).SeriesInstanceUID),
                             extra={"EchoNumbers": 1}, rescale_intercept=0.0)
    for call in (read_image, inspect_source):
        with pytest.raises(SeriesGeometryError) as info:
            call(tmp_path)
        err = info.value
        assert "duplicate slice position" in err.message and err.keyword == "ImagePositionPatient"
        assert all(kw in err.hint for kw in VOLUME_KEYS) and "none of them separated" in err.hint
        with pytest.raises(SeriesGeometryError):
            call(tmp_path, volume=0)
    (s,) = list_series(tmp_path)
    assert not s.readable and s.problem.startswith("SeriesGeometryError: duplicate") and s.n_volumes == 1


def test_a_per_slice_acquisition_number_is_not_a_volume_index(tmp_path):
    """Each file its own AcquisitionNumber and one slice repeated: a duplicate, not 5 one-slice volumes."""
    rng = np.random.default_rng(9)
    vol = _values(rng, (4, 6, 6))
    uid = synth.new_uid()
    for n, k in enumerate([0, 1, 2, 3, 2]):
        synth.write_dicom_series(vol[k:k + 1], tmp_path, affine=synth.affine_from_geometry(
            (2.0, 1.0, 1.0), (0.0, 0.0, 2.0 * k)), series_uid=uid, filename=f"S{n}.dcm",
            extra={"AcquisitionNumber": n + 1})
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    assert "duplicate slice position" in info.value.message


def test_a_gap_in_one_volume_only_affects_that_volume(tmp_path):
    rng = np.random.default_rng(10)
    vols = [_values(rng, (6, 6, 6)) for _ in range(2)]
    files = _write_volumes(tmp_path, vols, "EchoNumbers", [1, 2], seed=6)
    gone = _sorted_by_position(files[1])[3]
    gone.unlink()
    _assert_same(read_image(tmp_path, volume=0), _sitk(files[0]))
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path, volume=1)
    assert info.value.message.startswith("volume 1 of 2 (by EchoNumbers): missing slice")
    with pytest.raises(UnsupportedDataError):  # without volume= still the count of volumes
        inspect_source(tmp_path)
    (s,) = list_series(tmp_path)
    assert (s.n_volumes, s.readable) == (2, False) and s.problem.startswith("SeriesGeometryError: volume 1 of 2")


def test_volume_is_still_refused_for_a_series_without_repeats(tmp_path):
    synth.write_dicom_series(np.zeros((3, 4, 4)), tmp_path, extra={"EchoNumbers": 1})
    for call in (read_image, inspect_source):
        with pytest.raises(UnsupportedDataError) as info:
            call(tmp_path, volume=0)
        assert "holds one volume" in info.value.message
    assert read_image(tmp_path).shape == (3, 4, 4)
    (s,) = list_series(tmp_path)
    assert (s.n_volumes, s.volume_key, s.readable) == (1, None, True)


# -- a manifest's <modality>_volume column -------------------------------------------------


def _spec() -> StudySpec:
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, spacing_mm=(4.0, 4.0, 4.0), shape=(8, 8, 8),
                         intensity={"windows": [[40, 400]]}),
            ModalitySpec(name="mr", kind="mr", register="none", required=False),
        ],
        labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]),
        name="series-volumes",
    )


def _manifest(root: Path, name: str, **cells: str) -> Path:
    row = {"patient_id": "P1", "split": "train", "diagnosis": "disease", "ct": "P1/ct", "mr": "P1/mr", **cells}
    path = root / name
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    rng = np.random.default_rng(12)
    root = tmp_path_factory.mktemp("volumes_cohort")
    phases = [rng.integers(-1000, 1500, size=(8, 16, 16)).astype(np.float64) for _ in range(2)]
    ct = _write_volumes(root / "P1" / "ct", phases, "AcquisitionNumber", [1, 2], affines=[CT_AFFINE] * 2,
                        modality="CT", seed=7, extra={"PatientID": "P1"})
    mr_vols = [_values(rng, (6, 10, 12)) for _ in range(3)]
    mr = _write_volumes(root / "P1" / "mr", mr_vols, "EchoNumbers", [1, 2, 3], seed=8, extra={"PatientID": "P1"})
    _spec().to_yaml(root / "spec.yaml")
    return {"root": root, "ct": ct, "mr": mr}


def test_manifest_without_the_column_reports_the_volumes(cohort):
    report = validate_manifest(_manifest(cohort["root"], "plain.csv"), _spec(), workers=1, progress=False)
    errors = {p.modality: p for p in report.problems if p.severity == "error"}
    assert {(m, p.check) for m, p in errors.items()} == {("ct", "unsupported_data"), ("mr", "unsupported_data")}
    assert "2 volumes (by AcquisitionNumber" in errors["ct"].message and "ct_volume" in errors["ct"].hint
    assert "3 volumes (by EchoNumbers" in errors["mr"].message and "mr_volume" in errors["mr"].hint


def test_manifest_with_the_column_validates_and_preprocesses_the_chosen_volume(cohort):
    spec = _spec()
    manifest = _manifest(cohort["root"], "chosen.csv", ct_volume="1", mr_volume="2")
    report = validate_manifest(manifest, spec, workers=1, progress=False)
    # the volumes are chosen and read; the generated MR lies outside the CT's field of view and the
    # spec does not register it, which validation reports (the oracle below: it preprocesses to zeros)
    assert [(p.modality, p.check) for p in report.errors] == [("mr", "no_overlap")], report.lines()
    (row,) = load_manifest(manifest, spec)
    oracle_ct, oracle_mr = _sitk(cohort["ct"][1], "CT"), _sitk(cohort["mr"][2])
    res = check_row(row, spec)
    assert res.sources["ct"].shape == oracle_ct.shape and res.sources["ct"].n_files == 8
    np.testing.assert_allclose(res.sources["ct"].affine, oracle_ct.affine, atol=1e-4)
    assert res.sources["mr"].shape == oracle_mr.shape
    got = preprocess_study(dict(row.sources), spec, patient_id="P1")
    want = preprocess_study({"ct": oracle_ct, "mr": oracle_mr}, spec)
    for name in ("ct", "mr"):
        np.testing.assert_allclose(got[name].array, want[name].array, atol=1e-5)
        np.testing.assert_allclose(got[name].affine, want[name].affine, atol=1e-6)
    assert not want["mr"].array.any()  # no overlap: SimpleITK's volume resamples to nothing
    out_of_range = _manifest(cohort["root"], "range.csv", ct_volume="2", mr_volume="0")
    report = validate_manifest(out_of_range, spec, workers=1, progress=False)
    (p,) = [p for p in report.problems if p.severity == "error"]
    assert (p.modality, p.check) == ("ct", "unsupported_data") and "ct_volume 2 is out of range for 2 volumes" in p.message
