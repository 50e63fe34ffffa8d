"""The DICOM byte layer against pydicom's public API, on every file pydicom ships.

:mod:`medmulti.io.dicom_bytes` parses a file's dataset itself (a fast path
through the file meta group) and converts the attributes read for every file
from their raw bytes (:func:`~medmulti.io.dicom_bytes.fast_get`). For every file
of ``pydicom.data.get_testdata_files()`` that pydicom can read, each keyword
medmulti reads must give the same value through the byte layer as through
``pydicom.dcmread(path, force=True).get(keyword)``, compared after one
normalisation (numbers as floats, text stripped, empty as absent, one value as
a one-element tuple). Both parse paths are checked: the fast one that
``read_header`` takes, and the strict one it takes again to find truncation.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.multival import MultiValue

from medmulti.io.detect import FileFormat, sniff_bytes
from medmulti.io.dicom_bytes import FAST_KEYWORDS, fast_get, parse_dataset
from medmulti.io.limits import DEFAULT_LIMITS

#: Read through header.get / ds.get elsewhere in medmulti.io (pydicom converts
#: them); compared too, so that the fast parse path is checked on them as well.
OTHER_KEYWORDS = ("ImagerPixelSpacing", "ViewPosition", "WindowCenter", "WindowWidth", "FrameOfReferenceUID")
KEYWORDS = tuple(sorted(FAST_KEYWORDS)) + OTHER_KEYWORDS
META_KEYWORDS = frozenset({"MediaStorageSOPClassUID"})  # in the file meta group
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "IS", "DS", "FL", "FD"})

ROOT = Path(get_testdata_files("CT_small.dcm")[0]).parent
FILES = sorted(p for p in get_testdata_files() if os.path.isfile(p))  # the listing holds folders too


@functools.lru_cache(maxsize=None)
def pydicom_dataset(path: str) -> pydicom.Dataset | None:
    """pydicom's reading of the file (``force=True``), or None when pydicom cannot read it.

    A file is readable when ``dcmread`` takes it without ``force`` (a Part 10
    file), or when ``dcmread(force=True)`` finds at least one element of
    pydicom's data dictionary in it (a raw dataset): with ``force``, text, JSON,
    ICC profiles and gzip files parse as one garbage element.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:
            return None
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
            return ds
        except Exception:
            pass
    if not any(dictionary_has_tag(tag) for tag in ds.keys()):
        return None
    return ds


READABLE = [p for p in FILES if pydicom_dataset(p) is not None]
SKIPPED = sorted(set(FILES) - set(READABLE))


def byte_layer_dataset(path: str, *, strict: bool) -> Any:
    """The dataset as ``read_header`` parses it (same head, same ``force``)."""
    with open(path, "rb") as f:
        head = f.read(2048)
        f.seek(0)
        fmt = sniff_bytes(head)
        assert fmt in (FileFormat.DICOM, FileFormat.DICOM_RAW), "pydicom reads it: medmulti must take it as DICOM"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds, _, _, _ = parse_dataset(
                f, path, force=fmt == FileFormat.DICOM_RAW, limits=DEFAULT_LIMITS, head=head, strict=strict
            )
    return ds


def normalised(value: Any, keyword: str) -> tuple | None:
    """One value as compared: a tuple of floats (numeric VRs) or stripped texts; None when absent or empty."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    numeric = dictionary_VR(keyword) in NUMERIC_VRS
    out = []
    for v in values:
        text = "" if v is None else str(v).strip(" \x00")
        if numeric and text:
            try:
                out.append(float(v) if not isinstance(v, str) else float(text))
                continue
            except ValueError:
                pass
        out.append(text)
    if all(v == "" for v in out):
        return None
    return tuple(out)


def _get(ds: Any, keyword: str, getter) -> Any:
    source = getattr(ds, "file_meta", None) if keyword in META_KEYWORDS else ds
    return None if source is None else getter(source, keyword)


@pytest.mark.parametrize("strict", [False, True], ids=["fast-path", "strict-path"])
@pytest.mark.parametrize("path", READABLE, ids=lambda p: os.path.relpath(p, ROOT))
def test_byte_layer_equals_pydicom(path, strict):
    expected = pydicom_dataset(path)
    ds = byte_layer_dataset(path, strict=strict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = {kw: normalised(_get(ds, kw, fast_get), kw) for kw in KEYWORDS}
        theirs = {kw: normalised(_get(expected, kw, lambda s, k: s.get(k)), kw) for kw in KEYWORDS}
    assert ours == theirs


def test_comparison_covers_the_test_files():
    """The skipped files are a small minority, and the comparison is not vacuous."""
    assert len(FILES) >= 150
    assert len(SKIPPED) <= len(FILES) // 10, [os.path.relpath(p, ROOT) for p in SKIPPED]
    with_rows = [p for p in READABLE if pydicom_dataset(p).get("Rows") is not None]
    with_position = [p for p in READABLE if pydicom_dataset(p).get("ImagePositionPatient") is not None]
    assert len(with_rows) >= 80 and len(with_position) >= 20
    for keyword in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation", "ImagePositionPatient",
                    "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept", "Modality",
                    "SeriesInstanceUID", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation"):
        assert keyword in FAST_KEYWORDS  # converted from raw bytes, so compared here
