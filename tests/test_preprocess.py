"""preprocess_study: a CT DICOM series and an MR NIfTI in another orientation/FOV come out aligned."""

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medmulti import RegistrationError, SpecError, StudySpec, UnsupportedDataError
from medmulti.examples.synth import affine_from_geometry, write_dicom_series, write_nifti
from medmulti.geometry import apply_affine, rigid_matrix
from medmulti.image import Image
from medmulti.intensity import apply_window
from medmulti.study.preprocess import Preprocessed, preprocess_study

CENTER = np.array([0.0, 0.0, 0.0])
MARKER = np.array([6.0, -8.0, 10.0])  # LPS mm; a voxel centre of the 2 mm study grid centred on CENTER


def _structures(points, ct: bool):
    """Analytic phantom at LPS points: body, two organs (contrast differs CT vs MR) and a bright blob."""
    p = np.asarray(points, dtype=np.float64)

    def ellipsoid(c, r):
        d = np.sqrt((((p - c) / r) ** 2).sum(-1))
        return 1.0 / (1.0 + np.exp(10.0 * (d - 1.0)))

    body = ellipsoid((0, 0, 0), (38, 44, 34))
    organ_a = ellipsoid((-14, 12, -6), (10, 14, 8))
    organ_b = ellipsoid((16, 10, -10), (8, 6, 12))
    blob = np.exp(-(((p - MARKER) ** 2).sum(-1)) / (2 * 3.0**2))
    if ct:
        return -1000 + 1040 * body + 60 * organ_a - 80 * organ_b + 1200 * blob
    return 100 * body + 150 * organ_a + 40 * organ_b + 500 * blob


def _render(affine, shape, ct, transform=np.eye(4)):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = apply_affine(np.linalg.inv(transform), apply_affine(affine, idx))
    return _structures(world, ct).astype(np.float32)


def _spec(register="none", windows=("bone", "brain"), **mr):
    return StudySpec.from_dict({
        "labels": {"column": "dx", "classes": ["a", "b"]},
        "modalities": [
            {"name": "ct", "kind": "ct", "spacing_mm": [2, 2, 2], "shape": [40, 44, 42],
             "intensity": {"windows": list(windows)}},
            {"name": "mr", "kind": "mr", "register": register,
             **{"intensity": {"percentiles": [0.0, 100.0]}, **mr}},  # no saturation: the blob stays the peak
            {"name": "xray", "kind": "xray", "shape": [32, 32], "required": False},
        ],
    })


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    # CT: axial DICOM series, 1.5 x 1.2 x 1.2 mm, field of view around the body
    ct_aff = affine_from_geometry((2.5, 1.6, 1.6), (-51.2, -57.6, -45.0))
    ct_files = write_dicom_series(np.rint(_render(ct_aff, (37, 72, 64), ct=True)), root / "ct", affine=ct_aff)
    # MR: sagittal NIfTI (array axes z, y, x -> R, I, A), other spacing, shifted field of view
    sag = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
    mr_aff = affine_from_geometry((2.0, 1.8, 2.2), (40.0, 55.0, 50.0), direction=sag)
    mr_path = write_nifti(_render(mr_aff, (42, 62, 52), ct=False), root / "mr.nii.gz", affine=mr_aff)
    return {"ct_files": ct_files, "ct_dir": root / "ct", "mr_path": mr_path, "root": root}


def _read(study):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(study["ct_dir"])))
    ct = Image.from_sitk(reader.Execute(), "CT")
    mr = Image.from_nifti(nib.load(str(study["mr_path"])), "MR")
    return ct, mr


def _peak(p: Preprocessed, channel=0):
    return np.unravel_index(np.argmax(p.array[..., channel]), p.array.shape[:-1])


def _centroid_mm(p: Preprocessed, channel=0):
    """World position (mm) of the bright blob: intensity-weighted centre of the voxels above half its peak."""
    a = p.array[..., channel]
    peak = np.array(_peak(p, channel))
    lo = np.maximum(peak - 4, 0)
    box = a[lo[0]:peak[0] + 5, lo[1]:peak[1] + 5, lo[2]:peak[2] + 5]
    w = np.where(box > box.min() + 0.5 * (box.max() - box.min()), box, 0.0)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in box.shape], indexing="ij"), -1).reshape(-1, 3) + lo
    return apply_affine(p.affine, (idx * w.reshape(-1, 1)).sum(0) / w.sum())


def test_marker_lands_on_the_same_voxel_in_ct_and_mr(study):
    ct, mr = _read(study)
    assert ct.meta == {} and mr.affine[:3, :3][0, 0] < 0  # sanity: the MR is not axial LPS
    out = preprocess_study({"ct": ct, "mr": mr}, _spec("none"), patient_id="p1")
    assert list(out) == ["ct", "mr"]
    c, m = out["ct"], out["mr"]
    assert c.array.shape == (40, 44, 42, 2) and m.array.shape == (40, 44, 42, 1)
    assert c.array.dtype == np.float32 and m.array.dtype == np.float32
    np.testing.assert_array_equal(c.affine, m.affine)
    expected = tuple(int(v) for v in np.rint(Image(np.zeros((1, 1, 1)), c.affine, c.spacing, "CT")
                                              .world_to_index(MARKER)))
    assert _peak(c) == expected and _peak(m) == expected
    assert m.meta["source_orientation"] != c.meta["source_orientation"]
    assert m.meta["registration"] is None and m.meta["alignment"] == "register: none"
    json.dumps(c.meta), json.dumps(m.meta)


def test_ct_channels_are_the_windows_of_the_resampled_hu(study):
    ct, _ = _read(study)
    out = preprocess_study({"ct": ct}, _spec(windows=("bone", [40, 400])))["ct"]
    from medmulti.geometry import Grid, resample_to

    hu = resample_to(ct, Grid(out.array.shape[:3], out.affine)).array
    np.testing.assert_array_equal(out.array[..., 0], apply_window(hu, 400, 1800))
    np.testing.assert_array_equal(out.array[..., 1], apply_window(hu, 40, 400))
    # outside the CT's field of view: air, so 0 in every window
    assert out.array[0, 0, 0].tolist() == [0.0, 0.0] and 0.0 <= out.array.min() and out.array.max() <= 1.0


def test_rigid_registration_corrects_a_wrong_mr_header(study, tmp_path):
    ct, mr = _read(study)
    # the MR's header is off by a known rigid motion: the anatomy sits at truth(p) instead of p
    truth = rigid_matrix(np.radians([5.0, -3.0, 6.0]), (6.0, -4.0, 5.0))
    moved = Image(_render(mr.affine, mr.shape, ct=False, transform=truth), mr.affine, mr.spacing, "MR")
    spec = _spec("rigid")
    plain = preprocess_study({"ct": ct, "mr": moved}, _spec("none"))
    out = preprocess_study({"ct": ct, "mr": moved}, spec)
    assert np.linalg.norm(_centroid_mm(plain["mr"]) - _centroid_mm(plain["ct"])) > 5.0  # the header is really off
    assert np.linalg.norm(_centroid_mm(out["mr"]) - _centroid_mm(out["ct"])) < 1.0
    reg = out["mr"].meta["registration"]
    found = np.array(reg["matrix"])
    err = apply_affine(found, MARKER) - apply_affine(truth, MARKER)
    assert np.linalg.norm(err) < 1.0
    json.dumps(out["mr"].meta)


def test_auto_registers_a_nifti_mr_against_a_dicom_ct(study):
    ct, mr = _read(study)
    mr.meta["source"] = "nifti"
    out = preprocess_study({"ct": ct, "mr": mr}, _spec("auto"))
    assert out["mr"].meta["registration"] is not None
    assert out["mr"].meta["alignment"].startswith("NIfTI")
    # already aligned: registration must not break it
    assert np.linalg.norm(_centroid_mm(out["mr"]) - _centroid_mm(out["ct"])) < 1.0
    # DICOM-like images: the frame-of-reference digests decide
    ct_for = ct.copy(meta={"frame_of_reference": "abc"})
    out = preprocess_study({"ct": ct_for, "mr": mr.copy(meta={"frame_of_reference": "abc"})}, _spec("auto"))
    assert out["mr"].meta["registration"] is None and out["mr"].meta["alignment"] == "same frame of reference"
    out = preprocess_study({"ct": ct_for, "mr": mr.copy(meta={"frame_of_reference": "xyz"})}, _spec("auto"))
    assert out["mr"].meta["registration"] is not None
    assert out["mr"].meta["alignment"] == "frames of reference differ"
    out = preprocess_study({"ct": ct, "mr": mr.copy(meta={})}, _spec("auto"))  # no digests, no NIfTI
    assert out["mr"].meta["registration"] is None


def test_mr_normalisation_and_own_grid(study):
    ct, mr = _read(study)
    out = preprocess_study({"ct": ct, "mr": mr}, _spec("none", spacing_mm=[4, 4, 4],
                                                       intensity={"method": "zscore"}))
    m = out["mr"]
    assert m.array.shape[:3] == (20, 22, 21) and m.spacing == pytest.approx((4.0, 4.0, 4.0))
    np.testing.assert_allclose(m.meta["grid"]["affine"][0][3], out["ct"].affine[0, 3] + 1.0, atol=1e-6)  # same centre: (21-1)*4/2 vs (42-1)*2/2
    assert m.array.min() < 0 < m.array.max()
    p = preprocess_study({"ct": ct, "mr": mr}, _spec("none", intensity={"percentiles": [2, 98]}), only=["mr"])
    assert list(p) == ["mr"]
    from medmulti.geometry import Grid, resample_to

    values = resample_to(mr, Grid(p["mr"].array.shape[:3], p["mr"].affine)).array
    lo, hi = np.percentile(mr.array, [2, 98])  # percentiles of the source voxels, not of the padded grid
    np.testing.assert_allclose(p["mr"].array[..., 0], np.clip((values - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_missing_reference_falls_back_to_the_mr_grid(study):
    _, mr = _read(study)
    out = preprocess_study({"ct": None, "mr": mr}, _spec("none"))
    assert list(out) == ["mr"] and out["mr"].meta["reference"] == "mr"
    assert out["mr"].meta["source_orientation"] != "SPL" and out["mr"].array.shape[:3] == (62, 52, 42)


def test_xray_is_normalised_resized_with_aspect_and_padded():
    img = np.tile(np.linspace(0, 4000, 60, dtype=np.float32), (120, 1))
    xr = Image(img, None, (0.2, 0.2), "DX", {"window": [{"center": 2000.0, "width": 2000.0}],
                                            "photometric": "MONOCHROME2"})
    out = preprocess_study({"xray": xr}, _spec())["xray"]
    assert out.array.shape == (32, 32, 1) and out.affine is None
    assert out.meta["resize"] == {"scale": pytest.approx(32 / 120), "offset": [0, 8], "resized": [32, 16]}
    assert out.meta["voi"] == "window" and out.spacing == pytest.approx((0.75, 0.75))
    assert out.array[:, :8].max() == 0.0 and out.array[:, 8:24].max() == 1.0


def test_errors_name_the_modality_and_patient(study):
    ct, mr = _read(study)
    with pytest.raises(SpecError, match="pet"):
        preprocess_study({"pet": ct}, _spec())
    with pytest.raises(SpecError):
        preprocess_study({"ct": ct}, _spec(), only=["pet"])
    flat = Image(np.zeros((8, 8)), None, (1.0, 1.0), "DX")
    with pytest.raises(UnsupportedDataError) as info:
        preprocess_study({"ct": flat}, _spec(), patient_id="p7")
    assert info.value.modality == "ct" and info.value.patient_id == "p7"
    far = mr.copy(affine=mr.affine @ np.array([[1, 0, 0, 400.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    with pytest.raises(RegistrationError) as info:
        preprocess_study({"ct": ct, "mr": far}, _spec("rigid"), patient_id="p7")
    assert info.value.modality == "mr" and info.value.patient_id == "p7"


def test_paths_go_through_the_reader(study):
    io = pytest.importorskip("medmulti.io")
    if not hasattr(io, "read_image"):
        pytest.skip("medmulti.io.read_image not available yet")
    out = preprocess_study({"ct": study["ct_dir"], "mr": study["mr_path"]}, _spec("none"))
    ct, mr = _read(study)
    ref = preprocess_study({"ct": ct, "mr": mr}, _spec("none"))
    np.testing.assert_allclose(out["ct"].array, ref["ct"].array, atol=1e-5)
    np.testing.assert_allclose(out["mr"].array, ref["mr"].array, atol=1e-5)


def test_crop_body_centres_the_grid_on_the_body_not_the_field_of_view():
    # a 20 mm ball of water at LPS (30, -20, 10) in a large air-filled field of view centred at 0
    aff = affine_from_geometry((2.0, 2.0, 2.0), (-59.0, -59.0, -59.0))
    idx = np.stack(np.meshgrid(*[np.arange(60)] * 3, indexing="ij"), -1)
    world = apply_affine(aff, idx)
    hu = np.where(np.linalg.norm(world - [30.0, -20.0, 10.0], axis=-1) < 20, 0.0, -1000.0).astype(np.float32)
    ct = Image(hu, aff, (2.0, 2.0, 2.0), "CT")
    spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]}, "modalities": [
        {"name": "ct", "kind": "ct", "shape": [24, 24, 24], "crop": "body", "intensity": {"windows": [[0, 100]]}}]})
    out = preprocess_study({"ct": ct}, spec)["ct"]
    center = apply_affine(out.affine, [11.5, 11.5, 11.5])
    np.testing.assert_allclose(center, [30.0, -20.0, 10.0], atol=2.1)  # within one voxel
    assert out.array[..., 0].mean() > 0.14  # the whole ball (30 % of the box, 0.505 in this window) is inside
    centred = preprocess_study({"ct": ct}, StudySpec.from_dict({**spec.to_dict(), "modalities": [
        {**spec.modalities[0].to_dict(), "crop": "center"}]}))["ct"]
    np.testing.assert_allclose(apply_affine(centred.affine, [11.5, 11.5, 11.5]), [0.0, 0.0, 0.0], atol=1e-6)


def test_zscore_over_every_voxel_and_final_clip(study):
    ct, mr = _read(study)
    out = preprocess_study({"ct": ct, "mr": mr}, _spec("none", intensity={
        "method": "zscore", "zscore_foreground": False, "clip": [-1.0, 2.0]}), only=["mr"])["mr"].array
    assert out.min() == -1.0 and out.max() == 2.0
    raw = preprocess_study({"ct": ct, "mr": mr}, _spec("none", intensity={
        "method": "zscore", "zscore_foreground": False}), only=["mr"])["mr"].array
    assert abs(float(raw.mean())) < 1e-3 and float(raw.std()) == pytest.approx(1.0, abs=1e-3)


def test_a_volume_given_for_an_xray_is_refused():
    vol = Image(np.zeros((3, 8, 8)), np.eye(4), (1.0, 1.0, 1.0), "DX")
    with pytest.raises(UnsupportedDataError) as info:
        preprocess_study({"xray": vol}, _spec(), patient_id="p9")
    assert info.value.modality == "xray"
    one = Image(np.arange(64.0).reshape(1, 8, 8), np.eye(4), (1.0, 0.5, 0.5), "DX")
    out = preprocess_study({"xray": one}, _spec())["xray"]
    assert out.array.shape == (32, 32, 1) and out.meta["voi"] == "none"


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_xray_file_matches_pydicom_voi_then_display_inversion(tmp_path, photometric):
    io = pytest.importorskip("medmulti.io")
    if not hasattr(io, "read_image"):
        pytest.skip("medmulti.io.read_image not available yet")
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from medmulti.examples.synth import write_dicom_xray

    rng = np.random.default_rng(3)
    stored = rng.integers(0, 4096, (60, 80))
    path = write_dicom_xray(stored, tmp_path / "cxr.dcm", modality="DX", photometric=photometric,
                            window=(1800.0, 2500.0))
    spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]},
                                "modalities": [{"name": "xray", "kind": "xray", "shape": [60, 80]}]})
    out = preprocess_study({"xray": path}, spec)["xray"]
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds)
    expected = apply_voi_lut(values, ds) / (2**ds.BitsStored - 1)  # pydicom's output range is [0, 4095]
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected  # brighter = more attenuation
    assert out.meta["voi"] == "window" and out.meta["resize"]["scale"] == 1.0
    np.testing.assert_allclose(out.array[..., 0], expected, atol=1e-5)


def test_auto_reads_frames_of_reference_from_dicom_paths(study, tmp_path):
    io = pytest.importorskip("medmulti.io")
    if not hasattr(io, "inspect_source"):
        pytest.skip("medmulti.io.inspect_source not available yet")
    import pydicom

    ct_for = pydicom.dcmread(study["ct_files"][0], stop_before_pixels=True).FrameOfReferenceUID
    _, mr = _read(study)
    same = write_dicom_series(mr.array, tmp_path / "mr_same", affine=mr.affine, modality="MR",
                              rescale_intercept=0.0, frame_of_reference_uid=ct_for)
    other = write_dicom_series(mr.array, tmp_path / "mr_other", affine=mr.affine, modality="MR",
                               rescale_intercept=0.0)
    assert same and other
    out = preprocess_study({"ct": study["ct_dir"], "mr": tmp_path / "mr_same"}, _spec("auto"))
    assert out["mr"].meta["alignment"] == "same frame of reference" and out["mr"].meta["registration"] is None
    out = preprocess_study({"ct": study["ct_dir"], "mr": tmp_path / "mr_other"}, _spec("auto"))
    assert out["mr"].meta["alignment"] == "frames of reference differ"
    assert out["mr"].meta["registration"] is not None
