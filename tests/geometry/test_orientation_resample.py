"""Reorientation and resampling against SimpleITK on real files."""

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from medmulti import GeometryError
from medmulti.geometry import (
    Grid,
    fit_2d,
    make_grid,
    orientation_codes,
    reorient_canonical,
    resample_to,
)
from medmulti.geometry.affines import grid_center
from medmulti.image import Image


def oblique_sitk(direction_angles=(0.3, -0.2, 0.1), size=(7, 6, 5), spacing=(0.7, 0.8, 2.5)):
    arr = np.arange(np.prod(size), dtype=np.float32).reshape(size[::-1])
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -20.0, 30.0))
    rot = sitk.Euler3DTransform()
    rot.SetRotation(*direction_angles)
    img.SetDirection(rot.GetMatrix())
    return img

# direction matrices: every axis permutation with a flip pattern (array axes stay near world axes)
PERMS = list(itertools.permutations(range(3)))
FLIPS = [(1, 1, 1), (-1, 1, -1), (1, -1, 1)]


def _direction(perm, flips):
    d = np.zeros((3, 3))
    for col, (row, f) in enumerate(zip(perm, flips)):
        d[row, col] = f
    return d


@pytest.mark.parametrize("perm", PERMS)
@pytest.mark.parametrize("flips", FLIPS)
def test_reorient_matches_sitk_dicomorient_lps(perm, flips):
    img = oblique_sitk(direction_angles=(0, 0, 0))
    img.SetDirection(_direction(perm, flips).ravel().tolist())
    expected = sitk.DICOMOrient(img, "LPS")
    got = reorient_canonical(Image.from_sitk(img, "MR"))
    np.testing.assert_array_equal(got.array, sitk.GetArrayFromImage(expected))
    oracle = Image.from_sitk(expected)
    np.testing.assert_allclose(got.affine, oracle.affine, atol=1e-9)
    assert orientation_codes(got.affine) == "SPL"


def test_reorient_real_nifti_keeps_every_voxel_at_its_world_point(anatomical):
    assert orientation_codes(anatomical.affine) != "SPL"  # nibabel's file is RAS-ish: needs flips
    got = reorient_canonical(anatomical)
    assert got.meta["source_orientation"] == orientation_codes(anatomical.affine)
    oracle = sitk.DICOMOrient(anatomical.to_sitk() if anatomical.array.dtype.isnative else
                              Image(anatomical.array.astype(np.float32), anatomical.affine, anatomical.spacing,
                                    "MR").to_sitk(), "LPS")
    np.testing.assert_array_equal(got.array, sitk.GetArrayFromImage(oracle))
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, n, 20) for n in got.shape], axis=1)
    world = got.index_to_world(idx)
    src_idx = np.rint(anatomical.world_to_index(world)).astype(int)
    np.testing.assert_array_equal(got.array[tuple(idx.T)], anatomical.array[tuple(src_idx.T)])


def test_oblique_image_is_reordered_not_resampled():
    img = oblique_sitk()
    got = reorient_canonical(Image.from_sitk(img))
    assert sorted(got.array.ravel().tolist()) == sorted(sitk.GetArrayFromImage(img).ravel().tolist())
    np.testing.assert_allclose(grid_center(got.affine, got.shape),
                               grid_center(Image.from_sitk(img).affine, img.GetSize()[::-1]), atol=1e-9)


@pytest.mark.parametrize("source", ["nifti", "dicom"])
def test_resampled_voxel_centres_and_values_match_sitk(source, anatomical, ct_series_sitk):
    if source == "nifti":
        image = anatomical
        src = sitk.Cast(Image(anatomical.array.astype(np.float32), anatomical.affine, anatomical.spacing,
                              "MR").to_sitk(), sitk.sitkFloat32)
    else:
        src = ct_series_sitk
        image = Image.from_sitk(src, "CT")
    grid = make_grid(image, spacing_mm=(1.3, 0.9, 1.1), shape=(11, 13, 12))
    out = resample_to(image, grid)
    # the oracle: SimpleITK resampling onto the same grid
    ref = sitk.Image(list(reversed(grid.shape)), sitk.sitkFloat32)
    origin = grid.affine[:3, 3]
    from medmulti.image import itk_from_affine

    o, s, d = itk_from_affine(grid.affine)
    ref.SetOrigin(o)
    ref.SetSpacing(s)
    ref.SetDirection(d)
    fill = -1000.0 if source == "dicom" else 0.0
    oracle = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, fill, sitk.sitkFloat32)
    np.testing.assert_allclose(out.array, sitk.GetArrayFromImage(oracle), rtol=1e-5, atol=1e-3)
    for zyx in [(0, 0, 0), (10, 12, 11), (5, 3, 7)]:
        np.testing.assert_allclose(out.index_to_world(zyx), oracle.TransformIndexToPhysicalPoint(zyx[::-1]),
                                   atol=0.01)
    np.testing.assert_allclose(origin, oracle.GetOrigin(), atol=0.01)
    assert orientation_codes(out.affine) == "SPL"
    np.testing.assert_allclose(grid.center, grid_center(reorient_canonical(image).affine, image.shape), atol=1e-6)


def test_resampling_on_the_source_grid_is_identity_and_fill_values_by_modality(ct_series_sitk):
    ct = Image.from_sitk(ct_series_sitk, "CT")
    same = resample_to(ct, ct)
    np.testing.assert_allclose(same.array, ct.array, atol=1e-3)
    shifted = Grid(ct.shape, ct.affine @ np.array([[1, 0, 0, 100.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert np.all(resample_to(ct, shifted).array == -1000.0)
    mr = Image(ct.array, ct.affine, ct.spacing, "MR")
    assert np.all(resample_to(mr, shifted).array == 0.0)
    labels = Image((ct.array > 0).astype(np.uint8), ct.affine, ct.spacing, "SEG")
    nn = resample_to(labels, make_grid(labels, spacing_mm=(1.0, 0.3, 0.3)), interpolation="nearest")
    assert nn.array.dtype == np.uint8 and set(np.unique(nn.array)) <= {0, 1}


def test_resample_refuses_projection_images_and_bad_interpolation(ct_series_sitk):
    with pytest.raises(GeometryError):
        resample_to(Image(np.zeros((4, 4)), None, (1, 1), "DX"), Image.from_sitk(ct_series_sitk))
    ct = Image.from_sitk(ct_series_sitk, "CT")
    with pytest.raises(GeometryError):
        resample_to(ct, ct, interpolation="cubic")


def test_make_grid_defaults_cover_the_field_of_view(anatomical):
    grid = make_grid(anatomical)
    can = reorient_canonical(anatomical)
    assert grid.shape == can.shape
    np.testing.assert_allclose(grid.affine, can.affine, atol=1e-9)
    half = make_grid(anatomical, spacing_mm=(4.0, 4.0, 4.0))
    assert half.shape == tuple(int(round(n * s / 4.0)) for n, s in zip(can.shape, can.spacing))
    np.testing.assert_allclose(half.center, grid.center, atol=1e-9)


def test_fit_2d_preserves_aspect_and_pads_centrally():
    img = np.ones((100, 50), np.float32)
    out, info = fit_2d(img, (64, 64))
    assert out.shape == (64, 64) and info["resized"] == [64, 32] and info["offset"] == [0, 16]
    assert out[:, :16].max() == 0 and out[:, 16:48].min() == pytest.approx(1.0)


@pytest.mark.parametrize("with_transform", [False, True])
def test_slab_resampling_equals_one_full_resampling(anatomical, with_transform):
    from medmulti.geometry import rigid_matrix

    image = Image(anatomical.array.astype(np.float32), anatomical.affine, anatomical.spacing, "MR")
    grid = make_grid(image, spacing_mm=(1.7, 1.3, 1.5), shape=(29, 31, 37))
    tx = rigid_matrix((0.1, -0.2, 0.15), (3, -2, 4), center_mm=grid.center) if with_transform else None
    full = resample_to(image, grid, transform=tx)
    slabs = resample_to(image, grid, transform=tx, chunk_voxels=2_000)
    assert image.array.size > 2_000
    np.testing.assert_array_equal(slabs.array, full.array)
    labels = Image((anatomical.array > 100).astype(np.uint8), anatomical.affine, anatomical.spacing, "SEG")
    np.testing.assert_array_equal(
        resample_to(labels, grid, interpolation="nearest", transform=tx, chunk_voxels=2_000).array,
        resample_to(labels, grid, interpolation="nearest", transform=tx).array,
    )


SAG = np.array([[-1.0, 0, 0], [0, 0, -1.0], [0, -1.0, 0]])  # array axes -> R, I, A
COR = np.array([[0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]])


@pytest.mark.parametrize("direction", [None, SAG, COR], ids=["axial", "sagittal", "coronal"])
@pytest.mark.parametrize("spacing,shape", [((2.0, 1.9, 1.3), (30, 20, 25)), ((0.4, 0.3, 0.35), (40, 41, 39))],
                         ids=["down", "up"])
@pytest.mark.parametrize("shift", [0.0, 0.37])
def test_separable_engine_equals_sitk_resample(direction, spacing, shape, shift):
    from medmulti.examples.synth import affine_from_geometry

    rng = np.random.default_rng(0)
    aff = affine_from_geometry((2.5, 0.7, 0.9), (-20, -30, 15), direction=direction)
    img = Image(rng.normal(0, 100, (23, 41, 37)).astype(np.float32), aff, (2.5, 0.7, 0.9), "CT")
    g = make_grid(img, spacing_mm=spacing, shape=shape)
    g = Grid(g.shape, g.affine @ np.array([[1, 0, 0, shift], [0, 1, 0, -shift / 2], [0, 0, 1, shift / 3], [0, 0, 0, 1]]))
    fast = resample_to(img, g)
    ref = resample_to(img, g, engine="sitk")
    np.testing.assert_allclose(fast.array, ref.array, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(fast.array == -1000.0, ref.array == -1000.0)  # same voxels outside the FOV
