"""Size bombs are refused quickly and before allocating; the caps are configurable.

Each bomb (see :mod:`medmulti_testing.bombs`) must raise ResourceLimitError or
CorruptFileError from ``read_image`` and ``inspect_source`` within one CPU
second, with < 64 MiB of memory growth (Python/numpy allocations traced by
tracemalloc, plus the process's peak RSS for allocations made in C).
"""

from __future__ import annotations

import resource
import tracemalloc

import numpy as np
import pytest
from medmulti_testing import bombs
from medmulti_testing.harness import peak_rss_mib

from medmulti.errors import CorruptFileError, ResourceLimitError

MIB = 2**20
REFUSED = (ResourceLimitError, CorruptFileError)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _build(tmp_path, name):
    builder, kwargs = bombs.BOMBS[name]
    suffix = ".nii" if name.startswith("nifti") else ".dcm"
    return builder(tmp_path / (name + suffix), **kwargs)


def _limits_for(name):
    from medmulti.io import Limits

    # the deflate bomb inflates to 256 MiB: refuse it at a 32 MiB cap, so "before
    # allocating" means < 64 MiB of growth (with the 4 GiB default it would inflate to 4 GiB)
    return Limits(max_bytes=32 * MIB) if "deflate" in name else None


@pytest.mark.parametrize("fn", ["read_image", "inspect_source"])
@pytest.mark.parametrize("name", sorted(bombs.BOMBS))
def test_bomb_refused_fast_without_allocating(seeds, tmp_path, name, fn):
    import medmulti.io as mio

    path = _build(tmp_path, name)
    reader = getattr(mio, fn)
    for warm in (seeds["dicom"][0], seeds["nifti"][0]):  # imports and caches happen outside the measurement
        reader(warm.path, **warm.kwargs)
    rss0 = peak_rss_mib()
    tracemalloc.start()
    cpu0 = _cpu()
    try:
        with pytest.raises(REFUSED) as info:
            reader(path, limits=_limits_for(name))
    finally:
        cpu = _cpu() - cpu0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * MIB, f"{name}: traced peak {peak / MIB:.1f} MiB"
    assert peak_rss_mib() - rss0 < 64, f"{name}: RSS peak grew {peak_rss_mib() - rss0:.0f} MiB"
    assert cpu < 1.0, f"{name}: {cpu:.2f} CPU s"
    assert info.value.path is not None  # the error names the file


def test_nifti_bomb_is_352_bytes(tmp_path):
    import nibabel as nib

    p = bombs.nifti_huge_declared(tmp_path / "b.nii")
    assert p.stat().st_size == 352
    assert nib.load(str(p)).shape == (30000, 30000, 30000)


def test_dicom_bomb_declares_what_it_says(tmp_path):
    import pydicom

    ds = pydicom.dcmread(bombs.dicom_huge_declared(tmp_path / "b.dcm"))
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames), len(ds.PixelData)) == (65535, 65535, 10000, 1024)


def test_deflate_bomb_really_inflates(tmp_path):
    import zlib

    from medmulti_testing.fuzz import dicom_elements

    p = bombs.deflate_bomb(tmp_path / "d.dcm", inflated_mib=8)
    data = p.read_bytes()
    _, body, ts = dicom_elements(data)
    assert ts == "1.2.840.10008.1.2.1.99"
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    n = sum(len(d.decompress(data[i:i + 4096])) for i in range(body, len(data), 4096))
    assert n > 8 * MIB and len(data) < 16 * 1024


def test_nesting_builder_nests(tmp_path):
    import pydicom

    for undefined in (True, False):
        ds = pydicom.dcmread(bombs.nested_sequences(tmp_path / f"n{undefined}.dcm", depth=6, undefined=undefined))
        depth, cur = 0, ds
        while "ReferencedImageSequence" in cur:
            cur, depth = cur.ReferencedImageSequence[0], depth + 1
        assert depth == 6


# -- the caps are configurable -----------------------------------------------------


def test_caps_are_configurable(seeds, tmp_path):
    from medmulti_testing.seeds import pydicom_file

    from medmulti.io import DEFAULT_LIMITS, Limits, read_image

    ct = pydicom_file("CT_small.dcm")  # 128 x 128
    assert read_image(ct).array.size == 128 * 128
    with pytest.raises(ResourceLimitError):
        read_image(ct, limits=Limits(max_voxels=128 * 127))
    nested = bombs.nested_sequences(tmp_path / "n8.dcm", depth=8)
    assert np.all(np.isfinite(read_image(nested).array))  # default max_depth (32) accepts 8
    with pytest.raises(ResourceLimitError):
        read_image(nested, limits=Limits(max_depth=4))
    series = next(s for s in seeds["series"] if s.name == "series_explicit").path  # 5 files
    assert read_image(series).array.shape[0] == 5
    with pytest.raises(ResourceLimitError):
        read_image(series, limits=Limits(max_files=3))
    mf = next(s for s in seeds["dicom"] if s.name == "synth_mf.dcm").path  # 4 frames
    assert read_image(mf).array.shape[0] == 4
    with pytest.raises(ResourceLimitError):
        read_image(mf, limits=Limits(max_frames=3))
    dfl = bombs.deflate_bomb(tmp_path / "d.dcm", inflated_mib=4)
    with pytest.raises(REFUSED):
        read_image(dfl, limits=Limits(max_bytes=MIB))
    assert DEFAULT_LIMITS.max_voxels >= 512 * 512 * 1024
