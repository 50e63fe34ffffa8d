"""Image conversions against SimpleITK and nibabel (the oracles)."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medmulti import GeometryError, Image
from medmulti.image import affine_from_itk, itk_from_affine


def _oblique_sitk(shape_xyz=(7, 6, 5)):
    img = sitk.GetImageFromArray(np.arange(np.prod(shape_xyz[::-1]), dtype=np.float32).reshape(shape_xyz[::-1]))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    rot = sitk.Euler3DTransform()
    rot.SetRotation(0.3, -0.2, 0.1)
    img.SetDirection(rot.GetMatrix())
    return img


def test_from_sitk_matches_sitk_physical_points():
    simg = _oblique_sitk()
    img = Image.from_sitk(simg, modality="MR")
    np.testing.assert_array_equal(img.array, sitk.GetArrayFromImage(simg))
    for zyx in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        expected = simg.TransformIndexToPhysicalPoint(tuple(int(v) for v in zyx[::-1]))
        np.testing.assert_allclose(img.index_to_world(zyx), expected, atol=1e-9)
    np.testing.assert_allclose(img.spacing, simg.GetSpacing()[::-1])


def test_sitk_round_trip_keeps_geometry():
    simg = _oblique_sitk()
    back = Image.from_sitk(simg).to_sitk()
    np.testing.assert_allclose(back.GetOrigin(), simg.GetOrigin())
    np.testing.assert_allclose(back.GetSpacing(), simg.GetSpacing())
    np.testing.assert_allclose(back.GetDirection(), simg.GetDirection(), atol=1e-12)


def test_nifti_round_trip_agrees_with_nibabel_and_sitk(tmp_path):
    simg = _oblique_sitk()
    img = Image.from_sitk(simg)
    path = tmp_path / "x.nii.gz"
    nib.save(img.to_nifti(), str(path))
    # nibabel's own world coordinates (RAS) for voxel (i, j, k) = array (k, j, i)
    nimg = nib.load(str(path))
    ras = nib.affines.apply_affine(nimg.affine, [6, 5, 4])
    lps = img.index_to_world([4, 5, 6])
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-4)
    # SimpleITK reads the NIfTI we wrote back into the same geometry
    again = Image.from_sitk(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(again.array, img.array)
    np.testing.assert_allclose(again.affine, img.affine, atol=1e-4)
    # and from_nifti gives the same as SimpleITK
    np.testing.assert_allclose(Image.from_nifti(nimg).affine, again.affine, atol=1e-4)


def test_itk_affine_helpers_invert_each_other():
    simg = _oblique_sitk()
    a = affine_from_itk(simg.GetOrigin(), simg.GetSpacing(), simg.GetDirection())
    o, s, d = itk_from_affine(a)
    np.testing.assert_allclose(o, simg.GetOrigin())
    np.testing.assert_allclose(s, simg.GetSpacing())
    np.testing.assert_allclose(d, simg.GetDirection(), atol=1e-12)


def test_world_to_index_inverts_index_to_world():
    img = Image.from_sitk(_oblique_sitk())
    idx = np.array([[1.5, 2.0, 3.25], [0, 0, 0]])
    np.testing.assert_allclose(img.world_to_index(img.index_to_world(idx)), idx, atol=1e-9)


def test_projection_image_has_no_geometry():
    img = Image(np.zeros((4, 5), np.uint16), None, (0.2, 0.2), "DX")
    assert img.origin is None and img.direction is None
    with pytest.raises(GeometryError):
        img.index_to_world([0, 0, 0])
    with pytest.raises(GeometryError):
        img.to_nifti()
    assert img.to_sitk().GetSpacing() == (0.2, 0.2)


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2, 2, 2))])
def test_image_refuses_bad_dimensions(bad):
    with pytest.raises(GeometryError):
        Image(bad, None, (1.0,) * bad.ndim, "CT")


def test_to_sitk_accepts_big_endian_and_half_float_arrays():
    be = np.arange(24, dtype=">i2").reshape(2, 3, 4)
    img = Image(be, np.eye(4), (1.0, 1.0, 1.0), "MR")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img.to_sitk()), be.astype(np.int16))
    half = Image(be.astype(np.float16), np.eye(4), (1.0, 1.0, 1.0), "MR")
    assert sitk.GetArrayFromImage(half.to_sitk()).dtype == np.float32
