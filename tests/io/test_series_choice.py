"""Choosing among series that share a SeriesNumber: ``series=`` by file path or by
SeriesInstanceUID, checked against SimpleITK's ImageSeriesReader given that series'
files (``GetGDCMSeriesFileNames(folder, seriesUID)``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_helpers import dicomdir_root, oblique_direction

from medmulti import SeriesGeometryError, UnsupportedDataError, read_image
from medmulti.examples import synth
from medmulti.image import Image
from medmulti.io import inspect_source


def _sitk(folder, uid: str) -> Image:
    """SimpleITK's reading of the series ``uid`` in ``folder`` (the oracle)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    return Image.from_sitk(reader.Execute())


def _assert_same(img: Image, ref: Image) -> None:
    assert img.shape == ref.shape
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)


@pytest.fixture(scope="module")
def shared_number(tmp_path_factory):
    """One flat folder: a CT series (6 slices, axial) and an MR series (4 slices, oblique),
    both SeriesNumber 5, files interleaved by name."""
    rng = np.random.default_rng(21)
    folder = tmp_path_factory.mktemp("shared")
    ct = rng.integers(-1000, 2000, size=(6, 10, 12)).astype(np.float64)
    mr = rng.integers(0, 3000, size=(4, 10, 12)).astype(np.float64)
    ct_files = synth.write_dicom_series(ct, folder, series_number=5, filename="IM{index:04d}_a.dcm",
                                        affine=synth.affine_from_geometry((2.0, 0.7, 0.7), (0.0, -50.0, 20.0)))
    direction = oblique_direction()
    direction[:, 0] = np.cross(direction[:, 2], direction[:, 1])
    mr_files = synth.write_dicom_series(mr, folder, series_number=5, modality="MR", filename="IM{index:04d}_b.dcm",
                                        affine=synth.affine_from_geometry((3.0, 0.9, 0.8), (5.0, 5.0, 5.0), direction),
                                        rescale_intercept=0.0)
    uids = {name: str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
            for name, files in (("ct", ct_files), ("mr", mr_files))}
    return folder, {"ct": ct_files, "mr": mr_files}, uids


def test_simpleitk_sees_two_series(shared_number):
    import SimpleITK as sitk

    folder, _, uids = shared_number
    assert set(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))) == set(uids.values())


def test_error_lists_an_example_file_per_series_and_no_uid(shared_number):
    folder, files, uids = shared_number
    for kwargs in ({}, {"series": 5}, {"series": "5"}):
        with pytest.raises(SeriesGeometryError) as info:
            read_image(folder, **kwargs)
        text = str(info.value)
        for uid in uids.values():
            assert uid not in text
        # an example file of each series, relative to the folder, and how to choose by path
        assert "'IM0000_a.dcm'" in text and "'IM0000_b.dcm'" in text
        assert "series=<path of one of its files>" in info.value.hint
    with pytest.raises(SeriesGeometryError):
        inspect_source(folder, series=5)


@pytest.mark.parametrize("which", ["ct", "mr"])
def test_choose_by_file_path_and_by_uid_equals_simpleitk(shared_number, which, monkeypatch):
    folder, files, uids = shared_number
    ref = _sitk(folder, uids[which])
    some_file = files[which][2]
    choices = [
        some_file.name,  # relative to the folder
        some_file,  # absolute PathLike
        str(some_file),  # absolute str
        uids[which],  # SeriesInstanceUID
    ]
    for choice in choices:
        img = read_image(folder, series=choice)
        _assert_same(img, ref)
        assert img.modality == which.upper()
        assert "1 other image series ignored (series= given)" in img.meta["warnings"]
    monkeypatch.chdir(folder.parent)  # relative to the working directory
    _assert_same(read_image(folder, series=os.path.join(folder.name, some_file.name)), ref)
    info = inspect_source(folder, series=some_file.name)
    assert info.n_files == len(files[which]) and info.shape == ref.shape


def test_a_link_to_a_file_of_the_series(shared_number, tmp_path):
    folder, files, uids = shared_number
    link = tmp_path / "pointer.dcm"
    try:
        link.symlink_to(files["mr"][0])
    except OSError:
        pytest.skip("symbolic links not available")
    _assert_same(read_image(folder, series=link), _sitk(folder, uids["mr"]))


def test_unknown_uid_file_or_non_image(shared_number, tmp_path):
    folder, files, uids = shared_number
    with pytest.raises(SeriesGeometryError) as info:
        read_image(folder, series="1.2.3.4.5")
    assert info.value.keyword == "SeriesInstanceUID" and "IM0000_a.dcm" in str(info.value)
    assert not any(uid in str(info.value) for uid in uids.values())
    with pytest.raises(SeriesGeometryError) as info:
        read_image(folder, series="nothere.dcm")
    assert "'nothere.dcm': no such file" in info.value.message
    outside = tmp_path / "outside.dcm"
    synth.write_dicom_series(np.zeros((1, 4, 4)), tmp_path, filename="outside.dcm")
    with pytest.raises(SeriesGeometryError) as info:
        read_image(folder, series=outside)
    assert "not one of this folder's DICOM image files" in info.value.message
    with pytest.raises(TypeError):
        read_image(folder, series=5.0)
    with pytest.raises(TypeError):
        read_image(folder, series=True)


def test_series_number_still_chooses(tmp_path):
    vol = np.random.default_rng(1).integers(-100, 100, size=(3, 5, 6)).astype(np.float64)
    synth.write_dicom_series(vol, tmp_path / "a", series_number=3)
    synth.write_dicom_series(vol[:2], tmp_path / "b", series_number=14)
    for choice in (14, np.int64(14), "14", " 14 "):
        assert read_image(tmp_path, series=choice).shape == (2, 5, 6)
    with pytest.raises(SeriesGeometryError) as info:
        read_image(tmp_path, series=15)
    assert info.value.keyword == "SeriesNumber"
    with pytest.raises(UnsupportedDataError) as info:  # series= chooses within folders only
        read_image(tmp_path / "a" / "IM0000.dcm", series=3)
    assert "folder" in info.value.message


def test_a_file_named_like_a_uid(tmp_path):
    vol = np.zeros((2, 4, 4))
    synth.write_dicom_series(vol, tmp_path, series_number=1, filename="1.2.826.{index}")
    synth.write_dicom_series(vol[:1], tmp_path, series_number=1, filename="other{index}.dcm")
    assert read_image(tmp_path, series="1.2.826.1").shape == (2, 4, 4)  # no such UID: taken as a file name


def test_real_bundled_series_sharing_a_number():
    """pydicom's dicomdirtests/77654033 holds a CR and a CT series both numbered 2."""
    folder = dicomdir_root() / "77654033"
    with pytest.raises(SeriesGeometryError) as info:
        read_image(folder, series=2)
    assert "'CT2/17106'" in str(info.value) and "'CR2/6247'" in str(info.value)
    uid = str(pydicom.dcmread(folder / "CT2" / "17106", stop_before_pixels=True).SeriesInstanceUID)
    assert uid not in str(info.value)
    # the CT series is chosen (by a file or its UID) and then refused for its own reason: its 4 slices
    # are far apart (SimpleITK only warns about it)
    for choice in ("CT2/17136", uid):
        with pytest.raises(SeriesGeometryError) as info:
            read_image(folder, series=choice)
        assert "missing slice" in info.value.message and "'CT2/17106'" in info.value.message
    cr = read_image(folder, series=Path("CR2") / "6247")
    assert cr.modality == "CR" and cr.ndim == 2
    np.testing.assert_array_equal(cr.array, read_image(folder / "CR2" / "6247").array)


def test_read_image_takes_a_source_ref_with_its_choice(shared_number):
    from medmulti.io import SourceRef

    folder, files, uids = shared_number
    ref = SourceRef(folder, series=uids["mr"])
    _assert_same(read_image(ref), _sitk(folder, uids["mr"]))
    _assert_same(read_image(ref, series=uids["mr"]), _sitk(folder, uids["mr"]))  # the same choice twice: fine
    with pytest.raises(TypeError, match="twice"):
        read_image(ref, series=uids["ct"])
    with pytest.raises(SeriesGeometryError):  # a plain SourceRef is the plain folder: two series
        read_image(SourceRef(folder))
