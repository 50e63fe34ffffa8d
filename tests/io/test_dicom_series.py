"""DICOM series folders: generated series with known geometry, SimpleITK as oracle,
and pydicom's real multi-patient ``dicomdirtests`` tree."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from io_helpers import dicomdir_root, sitk_series
from pydicom.pixels import apply_modality_lut

from medmulti import CorruptFileError, MissingFileError, SeriesGeometryError, read_image
from medmulti.examples import synth
from medmulti.io import inspect_source


def _expected_order(affine: np.ndarray, n: int) -> np.ndarray:
    """Slice order along row x column (the reader's normal), from the writer's affine."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row, col = affine[:3, 2] / spacing[2], affine[:3, 1] / spacing[1]
    d = (affine[:3, 3][None, :] + np.arange(n)[:, None] * affine[:3, 0][None, :]) @ np.cross(row, col)
    return np.argsort(d)


def test_long_shuffled_series_equals_simpleitk_and_written_volume(long_series):
    folder, vol, affine = long_series
    img = read_image(folder)
    ref = sitk_series(folder)
    assert img.shape == vol.shape == ref.shape
    np.testing.assert_array_equal(img.array, ref.array.astype(np.float32))
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    np.testing.assert_array_equal(img.array, vol[_expected_order(affine, len(vol))].astype(np.float32))
    assert img.meta["n_files"] == 120 and img.modality == "CT"
    json.dumps(img.meta)


def test_oblique_series_geometry_equals_simpleitk(tmp_path, volume_hu, oblique_affine):
    rng = np.random.default_rng(1)
    synth.write_dicom_series(volume_hu, tmp_path, affine=oblique_affine, order=rng.permutation(len(volume_hu)))
    img = read_image(tmp_path)
    ref = sitk_series(tmp_path)
    np.testing.assert_array_equal(img.array, ref.array.astype(np.float32))
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(img.spacing, ref.spacing, atol=1e-5)
    # and the world position of every voxel matches the writer's geometry
    order = _expected_order(oblique_affine, len(volume_hu))
    k = np.arange(len(order))
    np.testing.assert_allclose(img.index_to_world(np.c_[k, 0 * k, 0 * k]), oblique_affine[:3, 3] + order[:, None] * oblique_affine[:3, 0], atol=1e-4)


def test_per_slice_rescale_matches_pydicom(tmp_path, volume_hu):
    paths = []
    for k, (slope, intercept) in enumerate([(1.0, -1024.0), (0.5, -1000.0), (2.0, -2048.0)] * 4):
        paths.append(
            synth.write_dicom_slice(
                volume_hu[k], tmp_path / f"s{k:02d}.dcm", position=(0.0, 0.0, 2.0 * k), row_direction=(1, 0, 0),
                column_direction=(0, 1, 0), pixel_spacing=(0.5, 0.5), slice_thickness=2.0, rescale_slope=slope,
                rescale_intercept=intercept, series_uid="1.2.3.4.5", study_uid="1.2.3.4", frame_of_reference_uid="1.2.3.6",
                instance_number=k + 1,
            )
        )
    img = read_image(tmp_path)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        np.testing.assert_allclose(img.array[k], apply_modality_lut(ds.pixel_array, ds), rtol=0, atol=1e-3)
    assert img.meta["rescale"] == {"per_slice": True}


def test_missing_slice_is_a_gap(tmp_path, volume_hu):
    order = [k for k in range(len(volume_hu)) if k != 5]
    synth.write_dicom_series(volume_hu, tmp_path, order=order)
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    assert "missing" in str(info.value) and info.value.keyword == "ImagePositionPatient"
    assert "IM0004.dcm" in str(info.value) and "IM0005.dcm" in str(info.value)  # the neighbours of the gap
    with pytest.raises(SeriesGeometryError):
        inspect_source(tmp_path)


def test_duplicate_slice(tmp_path, volume_hu):
    synth.write_dicom_series(volume_hu, tmp_path, order=list(range(len(volume_hu))) + [3])
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    assert "duplicate" in str(info.value)


def test_non_uniform_spacing(tmp_path, volume_hu):
    zs = [0.0, 2.0, 4.0, 6.0, 8.6, 10.6, 12.6]
    for k, z in enumerate(zs):
        synth.write_dicom_slice(volume_hu[k], tmp_path / f"{k}.dcm", position=(0, 0, z), row_direction=(1, 0, 0),
                                column_direction=(0, 1, 0), pixel_spacing=(1, 1), slice_thickness=2.0, series_uid="1.2.3.9")
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    assert "non-uniform" in str(info.value)


def test_gantry_tilt_refused(tmp_path, volume_hu):
    # axial slices whose positions drift in y: a sheared (tilted-gantry) stack
    for k in range(6):
        synth.write_dicom_slice(volume_hu[k], tmp_path / f"{k}.dcm", position=(0, 0.5 * k, 2.0 * k), row_direction=(1, 0, 0),
                                column_direction=(0, 1, 0), pixel_spacing=(1, 1), slice_thickness=2.0, series_uid="1.2.3.10",
                                extra={"GantryDetectorTilt": 14.0})
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    assert "gantry tilt" in str(info.value)


def test_mixed_orientation_localizer(tmp_path, volume_hu):
    synth.write_dicom_series(volume_hu, tmp_path, series_uid="1.2.3.11")
    synth.write_dicom_slice(volume_hu[0], tmp_path / "scout.dcm", position=(0, 0, 0), row_direction=(0, 1, 0),
                            column_direction=(0, 0, -1), pixel_spacing=(1, 1), slice_thickness=1.0, series_uid="1.2.3.11")
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    assert "orientation" in str(info.value) and info.value.keyword == "ImageOrientationPatient"


def test_differing_rows_and_spacing(tmp_path, volume_hu):
    a, b = tmp_path / "rows", tmp_path / "spacing"
    synth.write_dicom_series(volume_hu, a, series_uid="1.2.3.12")
    synth.write_dicom_slice(volume_hu[0, :10], a / "odd.dcm", position=(0, 0, 50), row_direction=(1, 0, 0),
                            column_direction=(0, 1, 0), pixel_spacing=(1, 1), slice_thickness=1.0, series_uid="1.2.3.12")
    with pytest.raises(SeriesGeometryError) as info:
        read_image(a)
    assert info.value.keyword == "Rows"
    synth.write_dicom_series(volume_hu, b, series_uid="1.2.3.13")
    synth.write_dicom_slice(volume_hu[0], b / "odd.dcm", position=(0, 0, 12), row_direction=(1, 0, 0),
                            column_direction=(0, 1, 0), pixel_spacing=(0.9, 0.9), slice_thickness=1.0, series_uid="1.2.3.13")
    with pytest.raises(SeriesGeometryError) as info:
        read_image(b)
    assert info.value.keyword == "PixelSpacing"


def test_two_series_listed_and_chosen(tmp_path, volume_hu):
    synth.write_dicom_series(volume_hu[:5], tmp_path / "a", series_number=3)
    synth.write_dicom_series(volume_hu[:7], tmp_path / "b", series_number=4, modality="MR")
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path)
    text = str(info.value)
    assert "series 3 (CT, 5 file(s)" in text and "series 4 (MR, 7 file(s)" in text
    assert read_image(tmp_path, series=4).shape == (7, *volume_hu.shape[1:])
    assert read_image(tmp_path, series=3).modality == "CT"
    with pytest.raises(SeriesGeometryError):
        read_image(tmp_path, series=9)
    assert inspect_source(tmp_path, series=4).n_files == 7


def test_non_image_and_non_dicom_files_ignored(tmp_path, volume_hu):
    from io_helpers import bundled

    synth.write_dicom_series(volume_hu, tmp_path)
    shutil.copy(bundled("test-SR.dcm"), tmp_path / "report")
    shutil.copy(bundled("rtplan.dcm"), tmp_path / "plan.dcm")
    (tmp_path / "README.txt").write_text("notes")
    img = read_image(tmp_path)
    assert img.shape == volume_hu.shape
    assert any("non-image" in w for w in img.meta["warnings"])


def test_truncated_slice_in_series(tmp_path, volume_hu):
    paths = synth.write_dicom_series(volume_hu, tmp_path)
    data = paths[4].read_bytes()
    paths[4].write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptFileError) as info:
        read_image(tmp_path)
    assert "IM0004.dcm" in str(info.value)
    with pytest.raises(CorruptFileError):  # header-level check: declared pixel length vs file size
        inspect_source(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(MissingFileError):
        read_image(tmp_path)


def test_multiframe_file_alone_and_in_folder(tmp_path, volume_hu, oblique_affine):
    path = synth.write_dicom_multiframe(volume_hu, tmp_path / "mf" / "enhanced.dcm", affine=oblique_affine)
    synth.write_dicom_series(volume_hu, tmp_path / "single", affine=oblique_affine)
    ref = read_image(tmp_path / "single")  # the same volume as single-frame files, checked against SimpleITK above
    for src in (path, tmp_path / "mf"):
        img = read_image(src)
        np.testing.assert_array_equal(img.array, ref.array)
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    info = inspect_source(path)
    assert info.shape == ref.shape
    np.testing.assert_allclose(info.affine, ref.affine, atol=1e-5)


def test_compressed_series_equals_uncompressed(tmp_path):
    from pydicom.uid import JPEG2000Lossless, RLELossless

    vol = np.random.default_rng(3).integers(-1000, 2000, size=(6, 64, 64)).astype(np.float64)
    paths = synth.write_dicom_series(vol, tmp_path / "raw")
    ref = read_image(tmp_path / "raw")
    for uid, sub, workers in ((JPEG2000Lossless, "j2k", 2), (RLELossless, "rle", None), (JPEG2000Lossless, "j2k1", 1)):
        (tmp_path / sub).mkdir()
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.compress(uid, encoding_plugin="pylibjpeg" if uid == JPEG2000Lossless else "")
            ds.save_as(tmp_path / sub / p.name)
        img = read_image(tmp_path / sub, workers=workers)
        np.testing.assert_array_equal(img.array, ref.array)
        assert img.meta["compressed"] is True


# -- pydicom's real multi-patient tree -------------------------------------------------
# Found from the headers (ImagePositionPatient / ImageOrientationPatient / SeriesInstanceUID):
#   77654033/CR1..CR3  one MONOCHROME1 CR each                  -> 2D images
#   77654033/CT2       z = -99.48, 103.02, 104.27, 105.52 mm    -> gap (~161 missing slices)
#   98892001/CT2N      two LOCALIZERs, sagittal + coronal       -> mixed orientations
#   98892001/CT5N      5 axial slices 2.5 mm apart, z descending in file order -> assembles
#   98892003/MR700     7 radial projection images, 7 orientations -> mixed orientations
#   98892003/MR1, MR2  several series sharing one SeriesNumber  -> several series listed
DICOMDIR_CASES = {
    "77654033/CR1": None,
    "77654033/CT2": ("missing", "ImagePositionPatient"),
    "98892001/CT2N": ("mixed orientations", "ImageOrientationPatient"),
    "98892001/CT5N": None,
    "98892003/MR700": ("mixed orientations", "ImageOrientationPatient"),
    "98892003/MR1": ("3 image series", "SeriesInstanceUID"),
    "98892003/MR2": ("3 image series", "SeriesInstanceUID"),
}


@pytest.mark.parametrize("sub", sorted(DICOMDIR_CASES))
def test_dicomdirtests_folders(sub):
    folder = dicomdir_root() / sub
    expected = DICOMDIR_CASES[sub]
    if expected is None:
        img = read_image(folder)
        if img.ndim == 3:
            ref = sitk_series(folder)
            np.testing.assert_array_equal(img.array, ref.array.astype(np.float32))
            np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
            ds = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
            z = sorted(float(d.ImagePositionPatient[2]) for d in ds)
            assert img.origin[2] == pytest.approx(z[0])  # ascending along the normal (+z here)
        return
    text, keyword = expected
    with pytest.raises(SeriesGeometryError) as info:
        read_image(folder)
    assert text in str(info.value) and info.value.keyword == keyword
    with pytest.raises(SeriesGeometryError):
        inspect_source(folder)


def test_dicomdir_tree_with_image_objects_stripped_of_pixels():
    # TINY_ALPHA holds a DICOMDIR and CT Image Storage objects stripped of their
    # PixelData: image objects without pixels are damaged, not "non-image"
    with pytest.raises(CorruptFileError) as info:
        read_image(dicomdir_root() / "TINY_ALPHA")
    assert info.value.keyword == "PixelData"


def test_real_enhanced_mr_geometry_equals_nibabel(tmp_path):
    """nibabel's Philips enhanced MR (176 frames with per-frame functional groups);
    nibabel's MultiframeWrapper is the geometry oracle (its slice axis runs the other way)."""
    import gzip
    import os
    import warnings

    import nibabel.nicom
    from nibabel.nicom import dicomwrappers

    src = os.path.join(os.path.dirname(nibabel.nicom.__file__), "tests", "data", "philips_mprage.dcm.gz")
    path = tmp_path / "enhanced_mr"
    path.write_bytes(gzip.open(src).read())
    img = read_image(path)
    assert img.shape == (176, 256, 256) and img.modality == "MR"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_file(str(path))
        nib_affine = wrapper.affine  # (row, column, frame) -> LPS
    n = img.shape[0]
    idx = np.array([[0, 0, 0], [10, 20, 30], [n - 1, 255, 255], [n // 2, 128, 3]])
    ours = img.index_to_world(idx)
    theirs = (nib_affine @ np.c_[idx[:, 1], idx[:, 2], n - 1 - idx[:, 0], np.ones(len(idx))].T).T[:, :3]
    np.testing.assert_allclose(ours, theirs, atol=0.01)
    # ascending along the normal row x column
    d = img.index_to_world(np.c_[np.arange(n), np.zeros(n), np.zeros(n)]) @ np.cross(img.direction[:, 2], img.direction[:, 1])
    assert np.all(np.diff(d) > 0)


def test_stray_file_sharing_a_series_number_is_named_in_the_hint(tmp_path):
    import numpy as np

    import medmulti as mm
    from medmulti.examples.synth import write_dicom_series

    vol = np.zeros((6, 8, 8), np.float32)
    write_dicom_series(vol, tmp_path, series_number=1)
    write_dicom_series(vol[:1], tmp_path / "stray", series_number=1, filename="STRAY{index}.dcm")
    with pytest.raises(mm.SeriesGeometryError) as info:
        mm.read_image(tmp_path)
    assert "STRAY0" in info.value.hint and "SeriesNumber" in info.value.hint
