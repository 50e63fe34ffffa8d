"""JPEG 2000 series decoded by worker processes (:func:`medmulti.io.pixels.decode_series_parallel`).

Oracle: the same series decoded in this process (``workers=1``), itself checked against
the uncompressed series and pydicom. The workers write the stored values into shared
memory when there is room, else send the slices back; this process decodes too, from the
end of the series. Every way must give the same array, in private memory; a slice that
does not decode must come back as a typed error naming its file; no shared-memory name
may outlive a read.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from medmulti import CorruptFileError, read_image
from medmulti.examples import synth
from medmulti.io import pixels
from medmulti.io.dicom_series import SERIES_KEYWORDS, plan_series
from medmulti.io.limits import DEFAULT_LIMITS


@pytest.fixture(scope="module")
def j2k_series(tmp_path_factory):
    """14 JPEG 2000 lossless slices (48 x 40), each with its own rescale slope and intercept."""
    base = tmp_path_factory.mktemp("j2k")
    vol = np.random.default_rng(5).integers(-1000, 2000, size=(14, 48, 40)).astype(np.float64)
    paths = synth.write_dicom_series(vol, base / "raw", order=np.random.default_rng(6).permutation(14))
    (base / "j2k").mkdir()
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.RescaleSlope, ds.RescaleIntercept = [1, 0.5, 2][k % 3], -1024 + 7 * k
        ds.save_as(base / "raw" / p.name)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(base / "j2k" / p.name)
    return base


def _plan(folder):
    plan = plan_series(folder, limits=DEFAULT_LIMITS, only=SERIES_KEYWORDS)
    return plan.headers, [h.rescale() for h in plan.headers]


def test_every_way_gives_the_array_decoded_here(j2k_series):
    here = read_image(j2k_series / "j2k", workers=1).array
    np.testing.assert_array_equal(here, read_image(j2k_series / "raw").array)
    np.testing.assert_array_equal(read_image(j2k_series / "j2k", workers=2).array, here)
    hs, rescales = _plan(j2k_series / "j2k")
    for workers in (1, 2, 3):
        for steal in (True, False):
            vol = pixels.decode_series_parallel(hs, rescales, workers, steal=steal)
            assert vol.dtype == np.float32 and vol.flags.c_contiguous and vol.flags.writeable
            np.testing.assert_array_equal(vol, here)


def test_without_shared_memory_the_slices_come_back_through_the_pool(j2k_series, monkeypatch):
    here = read_image(j2k_series / "j2k", workers=1).array
    monkeypatch.setattr(pixels, "_SHM_DIR", os.path.join(str(j2k_series), "no-such-folder"))
    hs, rescales = _plan(j2k_series / "j2k")
    vol = pixels.decode_series_parallel(hs, rescales, 2, steal=False)
    np.testing.assert_array_equal(vol, here)


@pytest.fixture()
def staging_paths(monkeypatch):
    """The shared-memory paths decoding uses, recorded."""
    made = []
    real = pixels._Staging

    class Recorded(real):
        def __init__(self, shape, dtype):
            super().__init__(shape, dtype)
            made.append(self.path)

    monkeypatch.setattr(pixels, "_Staging", Recorded)
    return made


def test_no_shared_memory_outlives_a_read_and_the_volume_is_private(j2k_series, staging_paths):
    img = read_image(j2k_series / "j2k", workers=2)
    assert all(not os.path.exists(path) for path in staging_paths)
    pixels.reset_pool()
    gc.collect()
    np.testing.assert_array_equal(img.array, read_image(j2k_series / "j2k", workers=1).array)
    before = float(img.array[3, 5, 7])
    pid = os.fork()
    if pid == 0:  # a forked child writing into the volume must not change the parent's
        img.array[3, 5, 7] = before + 1.0
        os._exit(0)
    os.waitpid(pid, 0)
    assert float(img.array[3, 5, 7]) == before


def test_a_slice_that_does_not_decode_is_a_typed_error_naming_it(j2k_series, tmp_path, staging_paths):
    folder = tmp_path / "j2k"
    folder.mkdir()
    for p in sorted((j2k_series / "j2k").iterdir()):
        (folder / p.name).write_bytes(p.read_bytes())
    victim = sorted(folder.iterdir())[9]
    data = bytearray(victim.read_bytes())
    siz = data.index(b"\xff\x4f\xff\x51")  # SOC + SIZ: declare three components (the size stays right)
    data[siz + 40:siz + 42] = (3).to_bytes(2, "big")
    victim.write_bytes(bytes(data))
    for workers in (1, 2):
        with pytest.raises(CorruptFileError) as info:
            read_image(folder, workers=workers)
        assert victim.name in str(info.value.path)
    hs, rescales = _plan(folder)
    with pytest.raises(CorruptFileError) as info:  # decoded by a worker for sure
        pixels.decode_series_parallel(hs, rescales, 2, steal=False)
    assert victim.name in str(info.value.path)
    assert all(not os.path.exists(path) for path in staging_paths)
