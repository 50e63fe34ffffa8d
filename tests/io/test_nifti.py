"""NIfTI-1/2 files: nibabel's bundled files and generated qform/sform cases,
with SimpleITK (and nibabel) as oracles."""

from __future__ import annotations

import gzip
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import nibabel_file, oblique_direction

from medmulti import CorruptFileError, ResourceLimitError, UnsupportedDataError, read_image
from medmulti.examples import synth
from medmulti.image import Image
from medmulti.io import Limits, inspect_source


def sitk_volume(path, volume=None) -> Image:
    img = sitk.ReadImage(str(path))
    if img.GetDimension() == 4:
        img = img[:, :, :, volume]
    return Image.from_sitk(img)


def assert_same(img, ref, atol=0.0):
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.array, ref.array, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(img.spacing, ref.spacing, atol=1e-6)


@pytest.mark.parametrize(
    "name, volume",
    [
        ("anatomical.nii", None),
        ("standard.nii.gz", None),
        ("reoriented_anat_moved.nii", None),
        ("resampled_anat_moved.nii", None),  # big-endian float with NaN voxels (read as 0, like SimpleITK)
        ("example4d.nii.gz", 1),
        ("functional.nii", 7),
    ],
)
def test_nibabel_files_equal_simpleitk(name, volume):
    path = nibabel_file(name)
    img = read_image(path, volume=volume)
    assert img.array.dtype == np.float32
    assert img.modality == "MR"
    assert_same(img, sitk_volume(path, volume))
    assert np.isfinite(img.array).all()


def test_nifti2_equals_nibabel():
    # SimpleITK cannot open this NIfTI-2 file; nibabel is the oracle for it
    path = nibabel_file("example_nifti2.nii.gz")
    nimg = nib.load(path)
    assert nimg.header["sizeof_hdr"] == 540
    img = read_image(path, volume=1)
    ref = Image.from_nifti(nib.Nifti1Image(np.asanyarray(nimg.dataobj)[..., 1], nimg.affine))
    assert_same(img, ref)
    assert img.meta["nifti_version"] == 2


def test_nifti2_reads_without_native_noise_on_stderr(tmp_path):
    # this SimpleITK opens no NIfTI-2 file; asked to, its niftilib prints "** ERROR: ..." straight
    # to file descriptor 2, so the reader must not ask (the demo printed it for example_nifti2)
    plain = tmp_path / "n2.nii"
    nib.save(nib.Nifti2Image(np.arange(120, dtype=np.int16).reshape(4, 5, 6), np.diag([2.0, 3.0, 4.0, 1.0])), plain)
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(plain))  # if a future SimpleITK reads NIfTI-2, make it the oracle again
    script = (
        "import sys\n"
        "from medmulti import read_image\n"
        "for path, volume in ((sys.argv[1], 1), (sys.argv[2], None)):\n"
        "    print(read_image(path, volume=volume).shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(nibabel_file("example_nifti2.nii.gz")), str(plain)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["(12, 20, 32)", "(6, 5, 4)"]
    assert "ERROR" not in proc.stderr and "nifti" not in proc.stderr.lower(), proc.stderr
    ref = nib.load(plain)
    img = read_image(plain)
    np.testing.assert_array_equal(img.array, np.asarray(ref.dataobj, np.float32).transpose(2, 1, 0))
    np.testing.assert_allclose(img.spacing, (4.0, 3.0, 2.0))


def test_4d_needs_volume():
    path = nibabel_file("example4d.nii.gz")
    with pytest.raises(UnsupportedDataError) as info:
        read_image(path)
    assert "volume=" in str(info.value)
    with pytest.raises(UnsupportedDataError):
        read_image(path, volume=2)
    with pytest.raises(UnsupportedDataError):
        inspect_source(path)
    assert inspect_source(path, volume=0).shape == (24, 96, 128)


def _nifti(tmp_path, name, data, *, qform=None, sform=None, qcode=1, scode=1, slope=None, inter=None, nifti2=False):
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(data, None)
    if qform is not None:
        img.set_qform(qform, code=qcode)
    else:
        img.header.set_qform(None, code=0)
    if sform is not None:
        img.set_sform(sform, code=scode)
    else:
        img.header.set_sform(None, code=0)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path = tmp_path / name
    nib.save(img, str(path))
    return path


def _ras(direction, spacing, origin):
    a = np.eye(4)
    a[:3, :3] = direction * np.asarray(spacing)[None, :]
    a[:3, 3] = origin
    return a


@pytest.mark.parametrize("case", ["qform-only", "sform-only", "both-same", "both-different", "none", "scaled-int16", "uint8-gz", "float64"])
def test_generated_geometry_cases_equal_simpleitk(tmp_path, case):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 300, size=(9, 7, 5)).astype(np.int16)
    q = _ras(oblique_direction((10, 20, 30)), (1.5, 2.0, 2.5), (-30, 12, 40))
    s = _ras(oblique_direction((-25, 5, 60)), (1.5, 2.0, 2.5), (5, -7, 9))
    kwargs = {
        "qform-only": dict(qform=q),
        "sform-only": dict(sform=s),
        "both-same": dict(qform=q, sform=q),
        "both-different": dict(qform=q, sform=s, scode=2),
        "none": dict(),
        "scaled-int16": dict(qform=q, slope=0.5, inter=-20.0),
        "uint8-gz": dict(qform=q),
        "float64": dict(sform=s),
    }[case]
    if case == "uint8-gz":
        data = data.astype(np.uint8)
    if case == "float64":
        data = data.astype(np.float64) / 7.0
    path = _nifti(tmp_path, "v.nii.gz" if case == "uint8-gz" else "v.nii", data, **kwargs)
    img = read_image(path)
    assert_same(img, sitk_volume(path), atol=1e-6)
    if case == "scaled-int16":  # nibabel applies the same scaling
        np.testing.assert_allclose(img.array, np.asanyarray(nib.load(str(path)).dataobj).transpose(2, 1, 0), rtol=1e-6)
    info = inspect_source(path)
    assert info.shape == img.shape
    np.testing.assert_allclose(info.affine, img.affine)


def test_synth_roundtrip_nifti1_and_2(tmp_path, volume_hu, oblique_affine):
    for nifti2, name in ((False, "a.nii.gz"), (True, "b.nii")):
        path = synth.write_nifti(volume_hu, tmp_path / name, affine=oblique_affine, nifti2=nifti2)
        img = read_image(path)
        np.testing.assert_allclose(img.array, volume_hu.astype(np.float32))
        np.testing.assert_allclose(img.affine, oblique_affine, atol=1e-4)


def test_truncated_nifti(tmp_path, volume_hu):
    path = synth.write_nifti(volume_hu, tmp_path / "v.nii")
    data = path.read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(data[:-50])
    with pytest.raises(CorruptFileError):
        read_image(cut)
    with pytest.raises(CorruptFileError):
        inspect_source(cut)
    gz = tmp_path / "cut.nii.gz"
    gz.write_bytes(gzip.compress(data)[:-200])
    with pytest.raises(CorruptFileError):
        read_image(gz)
    for deep in (False, True):  # the stream is inflated in both modes
        with pytest.raises(CorruptFileError):
            inspect_source(gz, deep=deep)
    assert inspect_source(synth.write_nifti(volume_hu, tmp_path / "ok.nii.gz")).warnings == []


def test_declared_size_beyond_caps_refused_before_allocation(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header["dim"][1:4] = [4000, 4000, 4000]  # 64e9 voxels declared, 256 bytes present
    path = tmp_path / "huge.nii"
    path.write_bytes(img.header.binaryblock + b"\0" * 4 + b"\0" * 256)
    with pytest.raises(ResourceLimitError):
        read_image(path)
    small = Limits(max_voxels=100)
    with pytest.raises(ResourceLimitError):
        read_image(synth.write_nifti(np.zeros((5, 5, 5)), tmp_path / "ok.nii"), limits=small)


def test_gzip_bomb_is_bounded(tmp_path):
    # a header declaring 8x8x8 float32 followed by 200 MB of zeros, gzip-compressed (~200 kB)
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    raw = img.header.binaryblock + b"\0" * 4
    comp = gzip.compress(raw + b"\0" * (200 * 2**20), compresslevel=1)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(comp)
    out = read_image(path)  # only the declared 2 KiB are inflated
    assert out.shape == (8, 8, 8)
