"""Series reads through the element walk against series reads through the full parse.

``read_image(folder)`` keeps only :data:`~medmulti.io.dicom_series.SERIES_KEYWORDS` of
each file's header, walked by element headers
(:func:`~medmulti.io.dicom_bytes.select_elements`) where the file allows it. Oracle: the
same read planned from headers parsed in full by pydicom
(``plan_series(only=None)``, itself checked against SimpleITK and pydicom by the other
reader tests). Both must give the same outcome: the same error class, or images with
equal arrays, geometry, modality and metadata. Inputs: every file pydicom ships, each
alone in a folder (single slices, projections, enhanced objects, compressed, damaged
files); pydicom's multi-series ``dicomdirtests`` folders, series by series; generated
series with a real scanner header (sequences, private groups, windows, a VOI LUT,
text that is not ASCII), series split into volumes, and series with one file cut short.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_helpers import bundled, dicomdir_root
from pydicom.data import get_testdata_files
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from medmulti.examples import synth
from medmulti.io import read_image
from medmulti.io.dicom_series import SERIES_KEYWORDS, plan_series, read_dicom_series
from medmulti.io.limits import DEFAULT_LIMITS

FILES = sorted(p for p in get_testdata_files() if os.path.isfile(p))
ROOT = Path(bundled("CT_small.dcm")).parent


def _image(img) -> tuple:
    return (img.array.dtype.str, img.array.shape, img.array.tobytes(), None if img.affine is None else
            img.affine.tolist(), tuple(img.spacing), img.modality, repr(sorted(img.meta.items())))


def outcome(folder: Path, *, walk: bool, series=None, volume=None) -> tuple:
    """What reading the folder gives: the image's content, or the error class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if walk:
                return "image", _image(read_image(folder, series=series, volume=volume, workers=1))
            plan = plan_series(folder, series=series, volume=volume, limits=DEFAULT_LIMITS, display=str(folder))
            img = read_dicom_series(folder, volume=volume, limits=DEFAULT_LIMITS, workers=1, display=str(folder),
                                    plan=plan)
            return "image", _image(img)
        except Exception as exc:  # the verdict is compared, whatever it is
            return "error", type(exc).__name__


def walked(folder: Path) -> bool:
    """Whether the read keeps fewer attributes than a full parse (the walk was taken)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fast = plan_series(folder, limits=DEFAULT_LIMITS, only=SERIES_KEYWORDS)
            full = plan_series(folder, limits=DEFAULT_LIMITS)
        except Exception:
            return False
    return len(fast.headers[0].ds) < len(full.headers[0].ds)


def assert_same(folder: Path, **choice) -> None:
    assert outcome(folder, walk=True, **choice) == outcome(folder, walk=False, **choice), (folder, choice)


@pytest.fixture(scope="module")
def one_file_folders(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("one-file")
    folders = []
    for k, path in enumerate(FILES):
        folder = base / f"{k:03d}"
        folder.mkdir()
        shutil.copyfile(path, folder / Path(path).name)
        folders.append(folder)
    return folders


def test_every_bundled_file_alone_in_a_folder(one_file_folders):
    taken = 0
    for folder in one_file_folders:
        assert_same(folder)
        taken += walked(folder)
    assert taken >= 40, taken  # the comparison is not vacuous


@pytest.mark.parametrize("sub", ["77654033/CR1", "77654033/CT2", "98892001/CT2N", "98892003/MR1", "98892003/MR700",
                                 "TINY_ALPHA", "."])
def test_dicomdir_folders_series_by_series(sub):
    folder = dicomdir_root() / sub
    assert_same(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    for path in files[:: max(1, len(files) // 4)]:  # choose series by one of their files
        assert_same(folder, series=str(path.relative_to(folder)))


def _real_header_series(folder: Path, n: int = 6, *, echoes: int = 1) -> None:
    """``n`` slices (``echoes`` volumes) with CT_small.dcm's full header, windows, a VOI LUT and Latin-1 text."""
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for e in range(echoes):
        for k in range(n):
            ds = copy.deepcopy(template)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.{e}.{k}"
            ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.9"
            ds.ImagePositionPatient = [-50.0, -60.0, 2.5 * k]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.RescaleSlope, ds.RescaleIntercept = 0.5 + 0.25 * (k % 3), -1024 + k
            ds.EchoNumbers = e + 1
            ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 2000]
            lut = pydicom.Dataset()
            lut.LUTDescriptor = [4, 0, 12]
            lut.add_new(0x00283006, "US", [0, 100, 2000, 4095])  # LUTData
            ds.VOILUTSequence = Sequence([lut])
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.StudyDescription = "Thorax \xe9t\xe9"
            ds.PixelData = rng.integers(-1000, 3000, (ds.Rows, ds.Columns)).astype(np.int16).tobytes()
            ds.save_as(folder / f"e{e}s{k:02d}.dcm", enforce_file_format=True)


def test_real_scanner_headers(tmp_path):
    _real_header_series(tmp_path / "one")
    assert walked(tmp_path / "one")
    assert_same(tmp_path / "one")
    _real_header_series(tmp_path / "echoes", echoes=2)
    for volume in (None, 0, 1, 2):
        assert_same(tmp_path / "echoes", volume=volume)


def test_generated_series_and_files_cut_short(tmp_path, volume_hu, oblique_affine):
    folder = tmp_path / "series"
    synth.write_dicom_series(volume_hu, folder, affine=oblique_affine, order=np.random.default_rng(1).permutation(12))
    assert walked(folder)
    assert_same(folder)
    victim = sorted(folder.glob("*.dcm"))[4]
    data = victim.read_bytes()
    offset = data.index(b"\xe0\x7f\x10\x00")
    for cut in (100, 400, offset - 3, offset + 6, offset + 40, len(data) - 1):
        victim.write_bytes(data[:cut])
        assert_same(folder)
    victim.write_bytes(data + b"\xfc\xff\xfc\xff" + b"OB\x00\x00" + (1000).to_bytes(4, "little"))  # trailing element cut
    assert_same(folder)
