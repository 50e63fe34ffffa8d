"""Augmentation keeps co-registered modalities aligned; it is seeded; 2D gets its own transform."""

from __future__ import annotations

import numpy as np
import pytest

from medmulti.data.augment import Augmenter
from medmulti.data.sequence import PatientSequence
from medmulti.examples.synth import affine_from_geometry, write_dicom_series, write_nifti
from medmulti.spec import LabelSpec, ModalitySpec, StudySpec

MARKER_LPS = np.array([10.0, -8.0, 12.0])  # mm, off-centre so rotations move it


def _ball(shape, affine, center_lps, radius_mm):
    """Boolean ball around a world point, on a grid given by its array-order affine."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(world - center_lps, axis=1) <= radius_mm).reshape(shape)


def _centroid(mask):
    return np.array(np.nonzero(mask)).mean(axis=1)


@pytest.fixture(scope="module")
def marker_study(tmp_path_factory):
    """A CT DICOM series (axial, 3 mm) and an MR NIfTI (sagittal, 4 mm, other field of view) with a
    bright ball at the same world point, as a two-patient manifest."""
    root = tmp_path_factory.mktemp("marker")
    ct_aff = affine_from_geometry((3.0, 3.0, 3.0), origin=(-45.0, -45.0, -45.0))
    ct = np.zeros((31, 31, 31), np.float32)
    ct[_ball(ct.shape, ct_aff, MARKER_LPS, 16.0)] = 300.0
    sag = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # array axes -> S, P, R
    mr_aff = affine_from_geometry((4.0, 4.0, 4.0), origin=(50.0, -50.0, -50.0), direction=sag.T)
    mr = np.full((27, 27, 27), 10.0, np.float32)
    mr[_ball(mr.shape, mr_aff, MARKER_LPS, 16.0)] = 1000.0
    lines = ["patient_id,split,diagnosis,ct,mr"]
    for k, pid in enumerate(("m1", "m2")):  # two patients, not one image twice (admission refuses duplicates)
        write_dicom_series(ct + k, root / pid / "ct", affine=ct_aff)
        write_nifti(mr + k, root / pid / "mr.nii", affine=mr_aff)
        lines.append(f"{pid},train,a,{pid}/ct,{pid}/mr.nii")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    spec = StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, spacing_mm=(3.0, 3.0, 3.0), shape=(24, 24, 24),
                         intensity={"windows": [[40, 80]]}),
            ModalitySpec(name="mr", kind="mr", register="none"),
        ],
        labels=LabelSpec(classes=["a", "b"], column="diagnosis"),
    )
    return root, spec


def test_marker_stays_on_the_same_voxel_in_ct_and_mr(marker_study, tmp_path):
    root, spec = marker_study
    spatial_only = Augmenter(rotation_deg=15.0, scale=(0.85, 1.15), shift_fraction=0.1, gain=(1.0, 1.0),
                             bias=0.0, noise_std=0.0)
    plain = PatientSequence(root / "manifest.csv", spec, "train", batch_size=2, cache_dir=tmp_path / "c",
                            progress=False, shuffle=False)
    x0, _ = plain[0]
    ct0 = x0["ct"][0, ..., 0] > 0.5
    mr0 = x0["mr"][0, ..., 0] > 0.5 * x0["mr"][0].max()
    # precondition (the preprocessor's job): the marker is at the same voxels before augmentation
    assert ct0.sum() > 20
    np.testing.assert_allclose(_centroid(ct0), _centroid(mr0), atol=0.5)
    moved = 0
    for seed in range(4):
        seq = PatientSequence(root / "manifest.csv", spec, "train", batch_size=2, cache_dir=tmp_path / "c",
                              progress=False, augment=spatial_only, seed=seed)
        x, _ = seq[0]
        for j in range(2):
            ct = x["ct"][j, ..., 0] > 0.5
            mr = x["mr"][j, ..., 0] > 0.5 * x["mr"][j].max()
            assert ct.sum() > 10
            np.testing.assert_allclose(_centroid(ct), _centroid(mr), atol=0.75)
            moved += np.linalg.norm(_centroid(ct) - _centroid(ct0)) > 1.0
    assert moved >= 4  # the transforms are not the identity


def test_transform_in_mm_keeps_grids_of_different_resolution_aligned():
    """Same field of view at 2 mm and 4 mm: the marker stays at the same world point in both."""
    aug = Augmenter(rotation_deg=20.0, gain=(1.0, 1.0), bias=0.0, noise_std=0.0)
    fine = np.zeros((32, 32, 32, 1), np.float32)
    coarse = np.zeros((16, 16, 16, 1), np.float32)
    world = np.array([10.0, -8.0, 14.0])  # mm from the grid centre
    for arr, sp in ((fine, 2.0), (coarse, 4.0)):
        n = arr.shape[0]
        mask = _ball(arr.shape[:3], affine_from_geometry((sp,) * 3, origin=(-(n - 1) / 2 * sp,) * 3), world, 6.0)
        arr[mask, 0] = 1.0
    rng_state = np.random.default_rng(5)
    aug({"fine": fine, "coarse": coarse}, {"fine": (2.0,) * 3, "coarse": (4.0,) * 3}, rng_state, reference="fine")
    to_mm = lambda arr, sp: (_centroid(arr[..., 0] > 0.5) - (arr.shape[0] - 1) / 2) * sp  # noqa: E731
    np.testing.assert_allclose(to_mm(fine, 2.0), to_mm(coarse, 4.0), atol=1.5)
    assert np.linalg.norm(to_mm(fine, 2.0) - world) > 2.0


def test_seeded_2d_independent_and_intensity_per_modality():
    aug = Augmenter()
    base = {"ct": np.random.default_rng(0).random((8, 8, 8, 2), np.float32),
            "xray": np.random.default_rng(1).random((16, 16, 1), np.float32)}
    runs = []
    for _ in range(2):
        arrays = {k: v.copy() for k, v in base.items()}
        aug(arrays, {}, np.random.default_rng(42))
        runs.append(arrays)
    for k in base:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])  # same seed, same result
        assert not np.array_equal(runs[0][k], base[k])
    other = {k: v.copy() for k, v in base.items()}
    aug(other, {}, np.random.default_rng(43))
    assert not np.array_equal(other["xray"], runs[0]["xray"])


def test_identity_settings_change_nothing():
    aug = Augmenter(rotation_deg=0.0, scale=(1.0, 1.0), shift_fraction=0.0, flip_axes_3d=(), rotation_deg_2d=0.0,
                    gain=(1.0, 1.0), bias=0.0, noise_std=0.0)
    a = np.random.default_rng(0).random((6, 7, 8, 1), np.float32)
    b = a.copy()
    aug({"ct": b}, {"ct": (1.0, 2.0, 3.0)}, np.random.default_rng(0))
    np.testing.assert_allclose(b, a, atol=1e-5)
