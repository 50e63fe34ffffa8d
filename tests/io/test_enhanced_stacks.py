"""Enhanced multi-frame files holding several volumes (stacks, temporal positions,
orientations, echoes), chosen with ``volume=``.

Files are written with pydicom (``enhanced_helpers``); each volume's geometry is
checked against what its frames declare (read back with pydicom), its values
against pydicom's modality LUT, and, where SimpleITK reads a single-stack file,
against SimpleITK reading the same stack written on its own.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from enhanced_helpers import declared_geometry, stack_frames, stored_frames, write_enhanced
from io_helpers import oblique_direction

from medmulti import SeriesGeometryError, UnsupportedDataError, read_image
from medmulti.examples import synth
from medmulti.image import Image
from medmulti.io import inspect_source
from medmulti.io.dicom_enhanced import enhanced_volumes
from medmulti.io.dicom_header import read_header

AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # (z, y, x) -> S, P, L


def _ascending(direction: np.ndarray) -> np.ndarray:
    """The direction with its slice axis along row x column (the order SimpleITK keeps)."""
    d = np.array(direction, float)
    d[:, 0] = np.cross(d[:, 2], d[:, 1])
    return d


def _sagittal() -> np.ndarray:
    # x (column index) -> P, y (row index) -> I (down the patient), z (slice) -> row x column
    d = np.zeros((3, 3))
    d[:, 2] = (0.0, 1.0, 0.0)
    d[:, 1] = (0.0, 0.0, -1.0)
    return _ascending(d)


def _values(rng, shape) -> np.ndarray:
    return rng.integers(-1000, 2000, size=shape).astype(np.float64)


def _check_volume(img: Image, path, frames) -> None:
    """Geometry and values of ``img`` against what ``frames`` of ``path`` declare (pydicom)."""
    origin, direction, step, order = declared_geometry(path, frames)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ps = [float(v) for v in ds.PerFrameFunctionalGroupsSequence[int(frames[0])].PixelMeasuresSequence[0].PixelSpacing]
    np.testing.assert_allclose(img.origin, origin, atol=1e-5)
    np.testing.assert_allclose(img.direction[:, ::-1], direction, atol=1e-6)  # Image.direction is array order (z, y, x)
    np.testing.assert_allclose(img.spacing, (step, ps[0], ps[1]), rtol=1e-6)
    np.testing.assert_array_equal(img.array, stored_frames(path)[order].astype(np.float32))


def _sitk_single_stack(tmp_path, volume, affine, name) -> Image:
    """SimpleITK's reading of the same stack written as an ordinary single-stack file."""
    import SimpleITK as sitk

    path = synth.write_dicom_multiframe(volume, tmp_path / f"{name}.dcm", affine=affine, modality="MR")
    return Image.from_sitk(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def two_stacks(tmp_path_factory):
    """StackIDs "10" (axial, 5 frames) and "2" (sagittal, 4 frames), frames interleaved in the file."""
    rng = np.random.default_rng(3)
    axial, sagittal = _values(rng, (5, 8, 10)), _values(rng, (4, 8, 10))
    a_aff = synth.affine_from_geometry((2.0, 0.5, 0.6), (-20.0, -30.0, 40.0), AXIAL)
    s_aff = synth.affine_from_geometry((3.0, 0.7, 0.8), (10.0, -25.0, 60.0), _sagittal())
    fa, fs = stack_frames(axial, a_aff, stack_id="10"), stack_frames(sagittal, s_aff, stack_id="2")
    frames = [fa[4], fs[2], fa[0], fs[0], fa[2], fa[1], fs[3], fa[3], fs[1]]  # shuffled and interleaved
    folder = tmp_path_factory.mktemp("stacks")
    path = write_enhanced(frames, folder / "two_stacks.dcm")
    file_index = {id(f): i for i, f in enumerate(frames)}
    return {
        "path": path, "axial": (axial, a_aff, [file_index[id(f)] for f in fa]),
        "sagittal": (sagittal, s_aff, [file_index[id(f)] for f in fs]), "folder": folder,
    }


def test_two_stacks_refused_without_volume(two_stacks):
    path = two_stacks["path"]
    with pytest.raises(UnsupportedDataError) as info:
        read_image(path)
    err = info.value
    assert err.keyword == "StackID" and "2 volumes" in err.message and "volume=" in err.hint
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for uid in (ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID):
        assert str(uid) not in str(err)
    with pytest.raises(UnsupportedDataError):
        inspect_source(path)


def test_stacks_ordered_by_numeric_stack_id_and_match_declared_geometry(two_stacks, tmp_path):
    path = two_stacks["path"]
    # StackID "2" sorts before "10" (numerically), although "10" comes first in the file
    for k, key in enumerate(("sagittal", "axial")):
        values, affine, frames = two_stacks[key]
        img = read_image(path, volume=k)
        assert img.shape == values.shape and img.meta["volume"] == k and img.meta["n_volumes"] == 2
        _check_volume(img, path, frames)
        ref = _sitk_single_stack(tmp_path, values, affine, key)
        np.testing.assert_array_equal(img.array, ref.array)
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
        info = inspect_source(path, volume=k)
        assert info.shape == img.shape
        np.testing.assert_allclose(info.affine, img.affine)
    labels = [v.label for v in enhanced_volumes(read_header(path, name="f"))]
    assert labels[0].startswith("stack 1 of 2, sagittal") and labels[1].startswith("stack 2 of 2, axial")


def test_volume_out_of_range_and_folder_holding_the_file(two_stacks):
    with pytest.raises(UnsupportedDataError) as info:
        read_image(two_stacks["path"], volume=2)
    assert "out of range for 2 volumes" in info.value.message
    with pytest.raises(UnsupportedDataError):
        read_image(two_stacks["path"], volume=-1)
    with pytest.raises(TypeError):
        read_image(two_stacks["path"], volume=1.0)
    img = read_image(two_stacks["folder"], volume=1)  # a folder holding the one file
    assert img.shape == two_stacks["axial"][0].shape
    assert inspect_source(two_stacks["folder"], volume=1, deep=True).shape == img.shape


def test_volume_refused_for_single_volume_sources(tmp_path):
    vol = _values(np.random.default_rng(0), (3, 6, 7))
    single = synth.write_dicom_multiframe(vol, tmp_path / "one.dcm")
    series = synth.write_dicom_series(vol, tmp_path / "series")[0].parent
    for src in (single, series, series / "IM0000.dcm"):
        with pytest.raises(UnsupportedDataError) as info:
            read_image(src, volume=0)
        assert "holds one volume" in info.value.message
        with pytest.raises(UnsupportedDataError):
            inspect_source(src, volume=0)
    np.testing.assert_array_equal(read_image(single).array, vol.astype(np.float32))


@pytest.mark.parametrize("file_order", ["time-major", "slice-major"])
def test_time_series_of_repeated_positions(tmp_path, file_order):
    """Three temporal positions at the same positions: volume=k is the k-th TemporalPositionIndex."""
    rng = np.random.default_rng(5)
    affine = synth.affine_from_geometry((1.5, 0.9, 0.9), (5.0, -10.0, -40.0), _ascending(oblique_direction()))
    times = [_values(rng, (4, 6, 9)) for _ in range(3)]
    per_time = [stack_frames(v, affine, stack_id="1", temporal=t + 1) for t, v in enumerate(times)]
    if file_order == "time-major":
        frames = [f for fs in per_time for f in fs]
    else:
        frames = [per_time[t][k] for k in range(4) for t in (2, 0, 1)]
    path = write_enhanced(frames, tmp_path / "dyn.dcm")
    with pytest.raises(UnsupportedDataError) as info:
        read_image(path)
    assert info.value.keyword == "TemporalPositionIndex" and "3 temporal positions" in info.value.message
    ref0 = None
    for t in range(3):
        img = read_image(path, volume=t)
        file_frames = [i for i, f in enumerate(frames) if f.temporal == t + 1]
        _check_volume(img, path, file_frames)
        np.testing.assert_array_equal(img.array, times[t].astype(np.float32))
        ref = _sitk_single_stack(tmp_path, times[t], affine, f"t{t}")
        np.testing.assert_array_equal(img.array, ref.array)
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
        if ref0 is None:
            ref0 = img.affine
        np.testing.assert_allclose(img.affine, ref0)


def test_localizer_frame_at_another_orientation_without_frame_content(tmp_path):
    """No FrameContentSequence: frames are split by orientation, in first-frame order."""
    rng = np.random.default_rng(9)
    main = _values(rng, (5, 8, 8))
    affine = synth.affine_from_geometry((2.0, 0.8, 0.8), (0.0, 0.0, 0.0), AXIAL)
    loc = stack_frames(_values(rng, (1, 8, 8)), synth.affine_from_geometry((1.0, 2.0, 2.0), (0, -8, 8), _sagittal()))
    frames = stack_frames(main, affine) + loc
    path = write_enhanced(frames, tmp_path / "with_localizer.dcm", frame_content=False)
    with pytest.raises(UnsupportedDataError) as info:
        read_image(path)
    assert info.value.keyword == "ImageOrientationPatient" and "2 orientations" in info.value.message
    img = read_image(path, volume=0)
    _check_volume(img, path, list(range(5)))
    np.testing.assert_array_equal(img.array, main.astype(np.float32))
    assert read_image(path, volume=1).shape == (1, 8, 8)


def test_echoes_split_by_dimension_index_values(tmp_path):
    """Two echoes at the same positions, told apart only by DimensionIndexValues."""
    rng = np.random.default_rng(11)
    affine = synth.affine_from_geometry((2.0, 0.8, 0.8), (0.0, 0.0, 0.0), AXIAL)
    echoes = [_values(rng, (4, 6, 6)) for _ in range(2)]
    frames = [f for e in (1, 0) for f in stack_frames(echoes[e], affine, stack_id="1", echo=e + 1)]
    path = write_enhanced(frames, tmp_path / "echoes.dcm")
    with pytest.raises(UnsupportedDataError) as info:
        read_image(path)
    assert info.value.keyword == "DimensionIndexValues"
    for e in range(2):
        img = read_image(path, volume=e)
        _check_volume(img, path, [i for i, f in enumerate(frames) if f.echo == e + 1])
        np.testing.assert_array_equal(img.array, echoes[e].astype(np.float32))


def test_repeated_positions_without_any_index_stay_duplicates(tmp_path):
    vol = _values(np.random.default_rng(2), (3, 5, 5))
    affine = synth.affine_from_geometry((2.0, 1.0, 1.0))
    path = write_enhanced(stack_frames(vol, affine) * 2, tmp_path / "dup.dcm", frame_content=False)
    with pytest.raises(SeriesGeometryError) as info:
        read_image(path)
    assert "duplicate frame position" in info.value.message


def test_a_gap_in_one_stack_only_affects_that_volume(tmp_path):
    rng = np.random.default_rng(4)
    a = stack_frames(_values(rng, (4, 6, 6)), synth.affine_from_geometry((2.0, 1.0, 1.0)), stack_id="1")
    b = stack_frames(_values(rng, (5, 6, 6)), synth.affine_from_geometry((2.0, 1.0, 1.0), (0, 0, 50)), stack_id="2")
    path = write_enhanced(a + b[:2] + b[3:], tmp_path / "gap.dcm")
    assert read_image(path, volume=0).shape == (4, 6, 6)
    with pytest.raises(SeriesGeometryError) as info:
        read_image(path, volume=1)
    assert info.value.keyword == "ImagePositionPatient" and "missing frame" in info.value.message
