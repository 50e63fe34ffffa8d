"""``read_header(only=...)`` (the element walk a scan uses) against the full parse, on every file pydicom ships.

The walk (:func:`medmulti.io.dicom_bytes.select_elements`) keeps a few attributes of an
explicit VR little endian dataset and locates its pixel data by element headers alone;
anything it cannot vouch for goes to pydicom as before. Oracle: ``read_header`` without
``only`` (itself checked against pydicom by ``test_dicom_bytes_differential.py``). For
every test file, and for copies cut short at several points, both must give the same
outcome (the same error class, or headers with the same pixel location, the same values
of every kept attribute and the same ``check_image`` verdict).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files

from medmulti.io.dicom_bytes import FAST_KEYWORDS, fast_get
from medmulti.io.dicom_header import read_header
from medmulti.io.dicom_series import VOLUME_KEYS
from medmulti.io.limits import DEFAULT_LIMITS

ONLY = frozenset(FAST_KEYWORDS) | frozenset(VOLUME_KEYS)
FILES = sorted(p for p in get_testdata_files() if os.path.isfile(p))
ROOT = Path(get_testdata_files("CT_small.dcm")[0]).parent


def outcome(path: Path, only):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            h = read_header(path, check_depth=False, only=only)
        except Exception as exc:  # the verdict is compared, whatever it is
            return type(exc).__name__, None
        try:
            h.check_image(DEFAULT_LIMITS)
            verdict = None
        except Exception as exc:
            verdict = type(exc).__name__
        values = {}
        for kw in ONLY:
            source = h.ds.file_meta if kw == "MediaStorageSOPClassUID" else h.ds
            try:
                v = fast_get(source, kw)
            except Exception as exc:
                v = type(exc).__name__
            values[kw] = None if v in (None, "", []) else (tuple(v) if isinstance(v, list) else v)
            if isinstance(values[kw], str):
                values[kw] = values[kw].strip()
        return "header", (h.transfer_syntax, h.pixel_offset, h.pixel_length, h.file_size, h.has_pixels,
                          h.is_non_image, h.modality, verdict, values), len(h.ds)


def compare(path: Path) -> bool:
    """Assert equal outcomes; return True when the walk was taken (fewer elements kept)."""
    full, fast = outcome(path, None), outcome(path, ONLY)
    assert fast[:2] == full[:2], path
    return full[0] == "header" and fast[2] < full[2]


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_the_walk_agrees_with_the_full_parse(path):
    compare(Path(path))


def test_the_walk_is_taken_and_agrees_on_files_cut_short(tmp_path):
    walked = [Path(p) for p in FILES if compare(Path(p))]
    assert len(walked) >= 60, len(walked)  # the comparison is not vacuous
    for path in walked[::3]:
        data = path.read_bytes()
        h = read_header(path, check_depth=False)
        for cut in {200, (h.pixel_offset or 0) // 2, (h.pixel_offset or 0) + 4, len(data) - 7}:
            if 0 < cut < len(data):
                short = tmp_path / f"{path.name}.{cut}"
                short.write_bytes(data[:cut])
                compare(short)
