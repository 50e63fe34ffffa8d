"""Rigid registration recovers known transforms; grid checks name what disagrees."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import from_matvec
from nibabel.eulerangles import euler2mat
from nibabel.testing import data_path

from medmulti import GeometryError, RegistrationError
from medmulti.examples.synth import affine_from_geometry
from medmulti.geometry import (
    Grid,
    check_coregistered,
    make_grid,
    register_rigid,
    resample_to,
    rigid_matrix,
    rotation_angle_deg,
)
from medmulti.geometry.affines import apply_affine, grid_corners
from medmulti.image import LPS_TO_RAS, Image


def _errors(found, expected, grid_affine, shape):
    rot = rotation_angle_deg(np.linalg.inv(expected) @ found)
    corners = grid_corners(grid_affine, shape)
    mm = np.linalg.norm(apply_affine(found, corners) - apply_affine(expected, corners), axis=1).max()
    return rot, mm


@pytest.fixture(scope="module")
def moved_anat():
    """nibabel's make_moved_anat.py, re-run in memory (anat_moved.nii is not installed)."""
    img = nib.load(str(Path(data_path) / "anatomical.nii"))
    some_rotations = euler2mat(0.1, 0.2, 0.3)
    extra_affine = from_matvec(some_rotations, [3, 4, 5])
    moved = nib.Nifti1Image(img.dataobj, extra_affine.dot(img.affine), img.header)
    moved.set_data_dtype(np.float32)
    moved = nib.Nifti1Image.from_bytes(moved.to_bytes())  # as if saved and loaded
    # the same anatomy sits at RAS point extra @ p in the moved file: fixed -> moving is `extra` (in LPS: flipped)
    expected_lps = LPS_TO_RAS @ extra_affine @ LPS_TO_RAS
    return Image.from_nifti(img, "MR"), Image.from_nifti(moved, "MR"), expected_lps


def test_recovers_nibabels_moved_anatomical_within_1mm_1deg(moved_anat):
    fixed, moving, expected = moved_anat
    assert rotation_angle_deg(expected) > 20  # a real test: ~22 degrees, several mm
    found = register_rigid(fixed, moving)
    rot, mm = _errors(found, expected, fixed.affine, fixed.shape)
    assert rot < 1.0 and mm < 1.0
    # deterministic: the same matrix again (to floating-point summation order)
    np.testing.assert_allclose(register_rigid(fixed, moving), found, rtol=0, atol=1e-9)


def _phantom(points):
    """Smooth analytic head-like phantom: ellipsoids of different intensity (values at LPS points)."""
    p = np.asarray(points, dtype=np.float64)
    out = np.zeros(p.shape[:-1])
    for c, r, v in [((0, 0, 0), (40, 50, 35), 100.0), ((12, -10, 5), (12, 8, 10), 250.0),
                    ((-15, 18, -8), (8, 14, 6), 40.0), ((0, 25, 15), (20, 6, 5), 180.0)]:
        d = ((p - c) / r) ** 2
        out += v / (1.0 + np.exp(8.0 * (np.sqrt(d.sum(-1)) - 1.0)))
    return out


def _render(affine, shape, transform=np.eye(4)):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = apply_affine(affine, idx)
    return _phantom(apply_affine(np.linalg.inv(transform), world)).astype(np.float32)


def test_recovers_a_generated_mr_rotated_and_shifted_by_known_amounts():
    fixed_aff = affine_from_geometry((3.0, 3.0, 3.0), (-60, -66, -54))
    fixed = Image(_render(fixed_aff, (36, 44, 40)), fixed_aff, (3.0, 3.0, 3.0), "MR")
    # moving: sagittal acquisition, other spacing and field of view, anatomy rotated and shifted
    sag = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # array axes -> R, P, I
    moving_aff = affine_from_geometry((2.5, 3.5, 3.0), (70, -80, 60), direction=sag)
    truth = rigid_matrix(np.radians([6.0, -4.0, 8.0]), (7.0, -5.0, 4.0), center_mm=(5, 0, 0))
    moving = Image(_render(moving_aff, (56, 46, 40), truth), moving_aff, (2.5, 3.5, 3.0), "MR")
    found = register_rigid(fixed, moving)
    rot, mm = _errors(found, truth, fixed_aff, fixed.shape)
    assert rot < 1.0 and mm < 1.0
    aligned = resample_to(moving, fixed, transform=found)
    before = resample_to(moving, fixed)
    assert np.abs(aligned.array - fixed.array).mean() < 0.5 * np.abs(before.array - fixed.array).mean()


def test_registration_without_overlap_raises_naming_the_modality(moved_anat):
    fixed, moving, _ = moved_anat
    far = moving.copy(affine=moving.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 500.0], [0, 0, 0, 1]]))
    with pytest.raises(RegistrationError, match="'t1'"):
        register_rigid(fixed, far, modality="t1")


def test_registration_that_would_rotate_too_far_is_refused(moved_anat):
    fixed, moving, _ = moved_anat
    with pytest.raises(RegistrationError, match="too far"):
        register_rigid(fixed, moving, modality="mr", max_rotation_deg=5.0)


def test_check_coregistered_passes_identical_grids_and_names_each_disagreement(anatomical):
    grid = make_grid(anatomical, spacing_mm=(2, 2, 2), shape=(8, 9, 10))
    a = resample_to(anatomical, grid)
    assert check_coregistered({"ct": a, "mr": a.copy(modality="MR")}) == []
    nudged = Grid(grid.shape, grid.affine @ np.array([[1, 0, 0, 0.001], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert check_coregistered([grid, nudged]) == []  # 0.002 mm: within the default 0.01 mm
    other = make_grid(anatomical, spacing_mm=(2, 2, 2.5), shape=(8, 9, 11))
    problems = check_coregistered({"ct": grid, "mr": other}, on_mismatch="report")
    assert {p.property for p in problems} == {"shape", "spacing", "origin"}
    assert all(p.name == "mr" for p in problems)
    with pytest.raises(GeometryError) as info:
        check_coregistered({"ct": grid, "mr": other})
    text = str(info.value)
    assert "mr" in text and "spacing" in text and "resample_to" in text
    assert "2.5" not in text  # by how much, not the header values themselves
    assert [m.property for m in info.value.mismatches] == [p.property for p in problems]
    import pickle

    assert pickle.loads(pickle.dumps(info.value)).mismatches[0].name == "mr"
    assert check_coregistered({"ct": grid, "mr": other}, spacing_tol_mm=1, origin_tol_mm=10,
                              on_mismatch="report")[0].property == "shape"


def test_check_coregistered_reports_direction():
    a = Grid((4, 4, 4), np.eye(4))
    b = Grid((4, 4, 4), rigid_matrix((0.01, 0, 0)))
    (problem,) = check_coregistered({"a": a, "b": b}, on_mismatch="report")
    assert problem.property == "direction" and problem.difference > 0.005


@pytest.mark.parametrize("initial,match", [
    (np.diag([2.0, 1.0, 1.0, 1.0]), "not a rigid transform"),  # a scaling: ITK refuses the matrix
    (np.eye(3), "4x4"),
])
def test_a_bad_initial_transform_is_a_typed_error(moved_anat, initial, match):
    fixed, moving, _ = moved_anat
    with pytest.raises(RegistrationError, match=match) as info:
        register_rigid(fixed, moving, modality="mr", initial=initial)
    assert info.value.modality == "mr"


def test_moments_initialisation_of_an_empty_image_is_a_typed_error(moved_anat):
    fixed, moving, _ = moved_anat
    empty = moving.copy(array=np.zeros_like(moving.array))
    with pytest.raises(RegistrationError) as info:
        register_rigid(fixed, empty, modality="mr", initialization="moments")
    assert info.value.modality == "mr"
