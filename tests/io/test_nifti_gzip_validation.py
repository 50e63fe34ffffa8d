"""A damaged ``.nii.gz`` is found by header-level inspection, not at training time (issue 15).

``inspect_source`` (and so ``medmulti validate`` without ``--deep``) inflates the whole
gzip stream, as ``read_image`` does, without converting values: a stream that ends
early, fails to inflate or fails its CRC-32 / length check is ``CorruptFileError``;
concatenated members that inflate to the declared data are accepted; bytes after the
member holding the end of the data are not read (as nibabel and SimpleITK).

The oracles: Python's ``gzip.decompress`` (raises or not) for the stream, nibabel's
loading of the same file for the voxels.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmulti.errors import CorruptFileError
from medmulti.io import inspect_source, read_image


def _nifti_bytes(shape=(20, 16, 12), dtype=np.float32, seed=0) -> bytes:
    """A single-file NIfTI-1 (header, extension flag, data) as nibabel writes it."""
    rng = np.random.default_rng(seed)
    data = (rng.normal(100, 30, shape)).astype(dtype)
    return nib.Nifti1Image(data, np.diag([1.5, 1.2, 2.0, 1.0])).to_bytes()


RAW = _nifti_bytes()
COMP = gzip.compress(RAW, mtime=0)


def _gzip_fails(data: bytes) -> bool:
    try:
        gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return True
    return False


def _nibabel_zyx(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj).astype(np.float32).transpose(2, 1, 0)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]


DAMAGED = {
    "cut after the gzip header": COMP[:12],
    "cut inside the NIfTI header": COMP[:150],
    "cut at a quarter": COMP[: len(COMP) // 4],
    "cut at half": COMP[: len(COMP) // 2],
    "cut before the trailer": COMP[:-8],
    "cut inside the CRC-32": COMP[:-6],
    "cut before ISIZE": COMP[:-4],
    "cut one byte short": COMP[:-1],
    "flipped byte in the middle": _flip(COMP, len(COMP) // 2),
    "flipped byte near the end of the data": _flip(COMP, len(COMP) - 40),
    "wrong CRC-32": _flip(COMP, len(COMP) - 8),
    "wrong ISIZE": _flip(COMP, len(COMP) - 4),
    "second member cut": gzip.compress(RAW[:5000], mtime=0) + gzip.compress(RAW[5000:], mtime=0)[:-20],
    "second member damaged": gzip.compress(RAW[:5000], mtime=0) + _flip(gzip.compress(RAW[5000:], mtime=0), 300),
    "the rest as a zlib stream, not a gzip member": gzip.compress(RAW[:5000], mtime=0) + zlib.compress(RAW[5000:]),
    "the rest as garbage": gzip.compress(RAW[:5000], mtime=0) + np.random.default_rng(7).bytes(3000),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_stream_is_corrupt_in_default_inspection(tmp_path, case):
    data = DAMAGED[case]
    assert _gzip_fails(data)  # the oracle refuses the stream
    path = tmp_path / "mr.nii.gz"
    path.write_bytes(data)
    for inspect in (lambda: inspect_source(path), lambda: inspect_source(path, deep=True), lambda: read_image(path)):
        with pytest.raises(CorruptFileError) as err:
            inspect()
        assert err.value.path is not None and "mr.nii.gz" in str(err.value.path)


SPLITS = {  # inflated offsets where a new gzip member starts
    "two members in the data": (RAW.__len__() // 2,),
    "a member boundary inside the header": (100,),
    "a member boundary at the data": (352,),
    "many members": tuple(range(200, len(RAW), 1777)),
}


@pytest.mark.parametrize("case", sorted(SPLITS))
def test_multi_member_stream_holding_the_data_is_accepted(tmp_path, case):
    cuts = (0, *SPLITS[case], len(RAW))
    data = b"".join(gzip.compress(RAW[a:b], mtime=0) for a, b in zip(cuts, cuts[1:]))
    assert gzip.decompress(data) == RAW  # the oracle accepts it
    path = tmp_path / "mr.nii.gz"
    path.write_bytes(data)
    info = inspect_source(path)
    assert info.warnings == []
    img = read_image(path)
    np.testing.assert_array_equal(img.array, _nibabel_zyx(path))
    assert info.shape == img.shape


@pytest.mark.parametrize("seed", range(6))
def test_random_member_layouts_read_as_nibabel_reads_them(tmp_path, seed):
    # members of random sizes (some empty), random compression levels: every byte of the data
    # crosses the block and member boundaries differently
    rng = np.random.default_rng(seed)
    raw = _nifti_bytes(shape=(33, 17, 9), dtype=[np.int16, np.float32, np.uint8][seed % 3], seed=seed)
    cuts = sorted({0, len(raw), *rng.integers(0, len(raw), size=int(rng.integers(1, 12))).tolist()})
    data = b"".join(gzip.compress(raw[a:b], compresslevel=int(rng.integers(1, 10)), mtime=0)
                    for a, b in zip(cuts, cuts[1:]))
    assert gzip.decompress(data) == raw
    path = tmp_path / "mr.nii.gz"
    path.write_bytes(data)
    assert inspect_source(path).warnings == []
    np.testing.assert_array_equal(read_image(path).array, _nibabel_zyx(path))


def test_zero_padding_between_and_after_members_is_accepted(tmp_path):
    data = gzip.compress(RAW[:3000], mtime=0) + bytes(7) + gzip.compress(RAW[3000:], mtime=0) + bytes(64)
    assert gzip.decompress(data) == RAW  # gzip skips zero padding
    path = tmp_path / "mr.nii.gz"
    path.write_bytes(data)
    assert inspect_source(path).warnings == []
    np.testing.assert_array_equal(read_image(path).array, _nibabel_zyx(path))


@pytest.mark.parametrize("tail", [b"garbage!", np.random.default_rng(8).bytes(300), b"\x1f\x8b", gzip.compress(b"abc", mtime=0)[:12]],
                         ids=["text", "random", "magic only", "cut member"])
def test_bytes_after_the_last_member_are_ignored_as_nibabel_and_simpleitk_do(tmp_path, tail):
    import SimpleITK as sitk

    path = tmp_path / "mr.nii.gz"
    path.write_bytes(COMP + tail)
    assert _gzip_fails(COMP + tail)  # Python's gzip refuses the tail ...
    expected = _nibabel_zyx(path)  # ... nibabel reads the image ...
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), expected)  # ... SimpleITK too
    assert inspect_source(path).warnings == []  # and so do we
    np.testing.assert_array_equal(read_image(path).array, expected)


def test_4d_stream_is_inflated_to_its_end_whatever_the_volume(tmp_path):
    rng = np.random.default_rng(1)
    raw = nib.Nifti1Image(rng.normal(0, 1, (8, 7, 6, 3)).astype(np.float32), np.eye(4)).to_bytes()
    comp = gzip.compress(raw, mtime=0)
    cut = comp[: len(comp) - 200]  # inside the last volume
    assert _gzip_fails(cut)
    path = tmp_path / "mr4d.nii.gz"
    path.write_bytes(cut)
    for volume in (0, 2):
        with pytest.raises(CorruptFileError):
            inspect_source(path, volume=volume)
    path.write_bytes(comp)
    assert inspect_source(path, volume=0).shape == (6, 7, 8)


def test_inflated_bytes_past_the_data_are_bounded(tmp_path):
    # 200 MiB of zeros after the declared 8x8x8 float32 in the same member (~200 kB compressed):
    # inspection inflates at most 1 MiB past the data, as read_image
    head = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)).to_bytes()
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(head + bytes(200 * 2**20), compresslevel=1))
    assert inspect_source(path).shape == (8, 8, 8)


def test_validate_reports_corrupt_file_in_default_mode(tmp_path):
    """`medmulti validate` (no --deep) in its own process, in an empty folder: corrupt_file errors, exit 1."""
    from medmulti.examples.cohort import make_sample_cohort

    make_sample_cohort(tmp_path / "c", n_patients=4, seed=0, faults=False, progress=False)
    mr = {key: tmp_path / "c" / key / "mr.nii.gz" for key in ("SYN0001", "SYN0002", "SYN0003", "SYN0004")}
    whole = {key: p.read_bytes() for key, p in mr.items()}
    inflated = gzip.decompress(whole["SYN0001"])
    damaged = {
        "SYN0002": whole["SYN0002"][: len(whole["SYN0002"]) // 2],  # the MR cut in half (issue 15)
        "SYN0003": _flip(whole["SYN0003"], len(whole["SYN0003"]) // 2),
    }
    valid = {
        "SYN0001": gzip.compress(inflated[:4096], mtime=0) + gzip.compress(inflated[4096:], mtime=0),
        "SYN0004": whole["SYN0004"] + b"trailing bytes",
    }
    for key, data in damaged.items():
        assert _gzip_fails(data)
        mr[key].write_bytes(data)
    for key, data in valid.items():
        mr[key].write_bytes(data)
        nib.load(str(mr[key])).get_fdata()  # nibabel reads them
    exe = Path(sys.executable).parent / "medmulti"
    proc = subprocess.run([str(exe), "validate", "c/manifest.csv", "--spec", "c/spec.yaml", "--json", "report.json",
                           "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    problems = json.loads((tmp_path / "report.json").read_text())
    mr_problems = {(p["patient_id"], p["check"], p["severity"]) for p in problems if p["modality"] == "mr"}
    assert mr_problems == {("SYN0002", "corrupt_file", "error"), ("SYN0003", "corrupt_file", "error")}
    for p in problems:
        if p["modality"] == "mr":
            assert p["path"] == f"{p['patient_id']}/mr.nii.gz"


def _variant(tmp_path, case) -> Path:
    """A .nii.gz with one of the header layouts whose geometry rules differ (qform/sform/qfac/byte order/NIfTI-2)."""
    from io_helpers import oblique_direction

    rng = np.random.default_rng(3)
    data = rng.integers(0, 500, size=(9, 7, 5)).astype(np.int16)
    q = np.eye(4)
    q[:3, :3] = oblique_direction((10, 20, 30)) * np.array([1.5, 2.0, 2.5])[None, :]
    q[:3, 3] = (-30, 12, 40)
    s = np.eye(4)
    s[:3, :3] = oblique_direction((-25, 5, 60)) * np.array([1.5, 2.0, 2.5])[None, :]
    s[:3, 3] = (5, -7, 9)
    sheared = s.copy()
    sheared[0, 1] += 0.7  # not decomposable into rotation x spacing
    cls = nib.Nifti2Image if case == "nifti2" else nib.Nifti1Image
    img = cls(data, None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    if case in ("qform-only", "both-different", "sheared-sform", "big-endian", "nifti2", "qfac-flip"):
        img.set_qform(q, code=1)
    if case in ("sform-only", "both-different", "big-endian", "nifti2"):
        img.set_sform(s, code=2)
    if case == "sheared-sform":
        img.set_sform(sheared, code=2)
    if case == "qfac-flip":
        img.header["pixdim"][0] = -1.0
    img.header["descrip"] = b"free text: SMITH^JOHN 19700101"
    raw = img.to_bytes()
    if case == "big-endian":
        raw = nib.Nifti1Image(data, None, header=img.header.as_byteswapped(">")).to_bytes()
    path = tmp_path / f"{case}.nii.gz"
    path.write_bytes(gzip.compress(raw, mtime=0))
    return path


@pytest.mark.parametrize("case", ["qform-only", "sform-only", "both-different", "sheared-sform", "none", "qfac-flip",
                                  "big-endian", "nifti2"])
def test_geometry_of_a_nii_gz_equals_simpleitk_reading_the_file(tmp_path, case):
    import SimpleITK as sitk

    from medmulti.image import Image

    path = _variant(tmp_path, case)
    try:
        ref = Image.from_sitk(sitk.ReadImage(str(path)))
    except RuntimeError:
        pytest.skip("SimpleITK cannot read this layout (nibabel decides, see test_nifti2_equals_nibabel)")
    img = read_image(path)
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(inspect_source(path).affine, ref.affine, atol=1e-5)


@pytest.mark.parametrize("name, volume", [("standard.nii.gz", None), ("example4d.nii.gz", 1),
                                          ("example_nifti2.nii.gz", 1)])
def test_geometry_of_nibabel_files_is_unchanged_by_the_header_copy(name, volume):
    from io_helpers import nibabel_file

    from medmulti.io.nifti import NiftiStream, itk_geometry, read_nifti_header
    from medmulti.limits import DEFAULT_LIMITS

    path = Path(nibabel_file(name))
    with NiftiStream(path, True, name) as stream:
        info, _ = read_nifti_header(stream, name, DEFAULT_LIMITS)
    direct = itk_geometry(path, name, info.header)
    copied = itk_geometry(path, name, info.header, gz=True)
    assert copied[3] == direct[3]  # the same source: "simpleitk", or "nibabel" where SimpleITK cannot open the file
    for a, b in zip(copied[:3], direct[:3]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_header_copy_holds_no_free_text_and_is_removed(tmp_path, monkeypatch):
    import tempfile

    seen = []
    real_unlink = os.unlink

    def unlink(p, *args, **kwargs):
        seen.append(Path(p).read_bytes())
        real_unlink(p, *args, **kwargs)

    path = _variant(tmp_path, "qform-only")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(os, "unlink", unlink)
    read_image(path)
    inspect_source(path)
    assert len(seen) == 2
    assert all(b"SMITH" not in block and len(block) == 352 for block in seen)
    assert list(scratch.iterdir()) == []


def test_an_infinite_voxel_is_left_to_deep_inspection(tmp_path):
    # documented limit of the default mode (docs/manifest.md): the stream is sound, one value is not
    data = np.random.default_rng(2).normal(0, 1, (6, 5, 4)).astype(np.float32)
    data[3, 2, 1] = np.inf
    path = tmp_path / "mr.nii.gz"
    path.write_bytes(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes(), mtime=0))
    assert np.isinf(nib.load(str(path)).get_fdata()).sum() == 1  # the oracle sees the voxel
    assert inspect_source(path).warnings == []
    with pytest.raises(CorruptFileError):
        inspect_source(path, deep=True)
