"""medmulti.geometry.affines: nibabel's affine functions, always float64; rigid matrices as ITK builds them."""

from __future__ import annotations

import subprocess
import sys

import nibabel.affines as nib_affines
import numpy as np
import pytest

from medmulti.geometry import (
    apply_affine,
    grid_center,
    grid_corners,
    rigid_matrix,
    rotation_angle_deg,
    voxel_sizes,
)

DTYPES = [np.int64, np.int32, np.float32, np.float64]


def _affine(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.eye(4)
    a[:3, :] = rng.normal(size=(3, 4)) * 10
    return a


@pytest.mark.parametrize("shape", [(3,), (1, 3), (7, 3), (2, 4, 3), (0, 3)])
def test_apply_affine_is_nibabels_on_float64(shape):
    a = _affine(1)
    p = np.random.default_rng(2).normal(size=shape) * 100
    got = apply_affine(a, p)
    assert got.shape == shape and got.dtype == np.float64
    np.testing.assert_array_equal(got, nib_affines.apply_affine(a, p))
    # and the textbook formula, bit for bit
    np.testing.assert_array_equal(got, p @ a[:3, :3].T + a[:3, 3])


@pytest.mark.parametrize("point_dtype", DTYPES)
@pytest.mark.parametrize("affine_dtype", DTYPES)
def test_apply_affine_gives_float64_for_any_input_dtype(point_dtype, affine_dtype):
    # nibabel keeps the input dtype (integers stay integers, float32 may stay float32); ours is float64
    a = np.diag([2, 3, 4, 1]).astype(affine_dtype)
    a[:3, 3] = (1, 2, 3)
    p = np.array([[1, 2, 3], [4, 5, 6]], dtype=point_dtype)
    got = apply_affine(a, p)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[3.0, 8.0, 15.0], [9.0, 17.0, 27.0]])
    if np.issubdtype(point_dtype, np.integer) and np.issubdtype(affine_dtype, np.integer):
        assert np.issubdtype(nib_affines.apply_affine(a, p).dtype, np.integer)  # the difference we hide


def test_apply_affine_accepts_lists_and_a_float32_half_pixel():
    got = apply_affine(np.eye(4).tolist(), [0.5, 0.5, 0.5])
    assert got.dtype == np.float64 and got.tolist() == [0.5, 0.5, 0.5]
    p32 = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    np.testing.assert_array_equal(apply_affine(np.eye(4), p32), p32.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_voxel_sizes_is_nibabels_on_float64(dtype):
    a = np.array([[0, 0, 3, 1], [0, -2, 0, 2], [4, 0, 0, 3], [0, 0, 0, 1]], dtype=dtype)
    got = voxel_sizes(a)
    assert got.dtype == np.float64 and got.shape == (3,)
    assert got.tolist() == [4.0, 2.0, 3.0]
    oblique = _affine(3)
    np.testing.assert_array_equal(voxel_sizes(oblique), nib_affines.voxel_sizes(oblique))
    np.testing.assert_array_equal(voxel_sizes(oblique), np.linalg.norm(oblique[:3, :3], axis=0))


def test_voxel_sizes_accepts_a_nested_list_and_float32():
    # nibabel's voxel_sizes needs an ndarray and keeps float32; ours takes any array-like, gives float64
    with pytest.raises(TypeError):
        nib_affines.voxel_sizes(np.eye(4).tolist())
    assert voxel_sizes(np.diag([2.0, 0.5, 0.5, 1.0]).tolist()).tolist() == [2.0, 0.5, 0.5]
    assert voxel_sizes(np.diag([0.1, 0.1, 0.1, 1]).astype(np.float32)).dtype == np.float64


def test_rigid_matrix_matches_simpleitk_euler3d():
    sitk = pytest.importorskip("SimpleITK")
    angles, shift, center = (0.3, -0.2, 0.5), (7.0, -5.0, 4.0), (5.0, 1.0, -2.0)
    m = rigid_matrix(angles, shift, center)
    tx = sitk.Euler3DTransform(center, *angles, shift)
    np.testing.assert_allclose(m[:3, :3], np.reshape(tx.GetMatrix(), (3, 3)), atol=1e-12)
    p = (10.0, -20.0, 30.0)
    np.testing.assert_allclose(apply_affine(m, p), tx.TransformPoint(p), atol=1e-9)
    R, t = nib_affines.to_matvec(m)
    np.testing.assert_array_equal(nib_affines.from_matvec(R, t), m)
    assert m.dtype == np.float64 and m[3].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert rotation_angle_deg(m) == pytest.approx(rotation_angle_deg(np.reshape(tx.GetMatrix(), (3, 3))))


def test_grid_center_and_corners_use_voxel_centres():
    a = np.diag([2.0, 3.0, 4.0, 1.0])
    a[:3, 3] = (10, 20, 30)
    assert grid_center(a, (3, 5, 7)).tolist() == [12.0, 26.0, 42.0]
    corners = grid_corners(a, (3, 5, 7))
    assert corners.shape == (8, 3) and corners.dtype == np.float64
    assert corners[0].tolist() == [10.0, 20.0, 30.0] and corners[-1].tolist() == [14.0, 32.0, 54.0]


def test_importing_geometry_loads_no_nibabel():
    code = "import sys, medmulti.geometry; print('nibabel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
