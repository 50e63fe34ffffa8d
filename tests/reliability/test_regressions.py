"""Every input that once broke a reader, kept as a small fixture file.

Each entry says what it is (provenance: which seed, which mutation or cut) and
which error the readers must raise now. ``inspect_source(deep=True)`` (which
also decodes pixels) must agree with ``read_image``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medmulti.errors import CorruptFileError, MedmultiError

FIXTURES = Path(__file__).parent / "fixtures"

# file -> (expected error, what broke)
REGRESSIONS = {
    "jp2k_cut_inside_fragment.dcm": (
        CorruptFileError,
        "MR_small_jp2klossless.dcm cut at byte 1672, inside the JPEG 2000 fragment: openjpeg decoded the partial "
        "codestream and read_image returned an image (fixed: encapsulated items are walked before decoding)",
    ),
    "jp2k_cut_inside_delimiter.dcm": (
        CorruptFileError,
        "MR_small_jp2klossless.dcm cut at 5865, inside the sequence delimiter: accepted",
    ),
    "rle_cut_inside_delimiter.dcm": (
        CorruptFileError,
        "MR_small_RLE.dcm cut at 7648, inside the sequence delimiter: accepted",
    ),
    "rle_bitflip_rust_panic.dcm": (
        CorruptFileError,
        "MR_small_RLE.dcm#3 of the long-tier campaign (seed 1000, bit flips in the RLE segment): pylibjpeg-rle "
        "panicked (pyo3 PanicException, a BaseException) and the panic escaped read_image untyped",
    ),
    "ct_rescale_intercept_1e308.dcm": (
        CorruptFileError,
        "synth_ct.dcm#264 of the long-tier campaign (seed 1000): RescaleIntercept set to 1e308 (finite in float64) "
        "overflowed float32 and read_image returned an image full of inf",
    ),
    "enhanced_ct_pvt_intercept_1e308.dcm": (
        CorruptFileError,
        "synth_mf.dcm#299 (seed 1000): the same overflow through the Pixel Value Transformation functional group",
    ),
    "series_slice_intercept_1e308": (
        CorruptFileError,
        "series_implicit#2002 (seed 1000): one slice of a series folder with RescaleIntercept 1e308",
    ),
    "nifti_sform_inf_simpleitk_hang.nii": (
        CorruptFileError,
        "reoriented_anat_moved.nii mutated by the long-tier campaign (seed 1000): srow_y holds -inf; SimpleITK's "
        "ReadImageInformation looped for more than 10 minutes (a hang, found by the per-input budget)",
    ),
    "ct_cut_before_pixeldata.dcm": (
        CorruptFileError,
        "CT_small.dcm cut at 546, an element boundary before PixelData: reported as a non-image object "
        "(UnsupportedDataError) instead of a truncated one",
    ),
}


def test_every_fixture_is_listed():
    on_disk = {p.name for p in FIXTURES.iterdir() if p.name != "README.md"}
    assert on_disk == set(REGRESSIONS)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name):
    from medmulti.io import inspect_source, read_image

    expected, _ = REGRESSIONS[name]
    path = FIXTURES / name
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    assert size < 64 * 1024  # fixtures stay small
    with pytest.raises(MedmultiError) as info:
        read_image(path)
    assert type(info.value) is expected, f"{name}: {type(info.value).__name__}: {info.value}"
    with pytest.raises(expected):
        inspect_source(path, deep=True)
