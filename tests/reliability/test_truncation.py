"""Truncation sweep: every seed cut at every byte of its first KiB and at 64 offsets after.

``read_image`` itself must raise CorruptFileError for every cut, never return an
image and never leave the failure for later. The one exception: a prefix too
short to carry the format's signature (a Part 10 preamble without ``DICM``, a
NIfTI-1 header cut before its magic at byte 344, fewer bytes than a gzip or
NIfTI-2 signature) is no longer recognisable as that format, and
UnsupportedDataError ("not a DICOM or NIfTI file") is the honest answer; so it
is for a cut exactly at an element boundary of an object that has no image SOP
class (the prefix is a complete non-image dataset). A cut inside the trailing
DataSetTrailingPadding (FFFC,FFFC) leaves every meaningful byte intact, so the
image may be accepted there.
"""

from __future__ import annotations

import struct

import pytest
from medmulti_testing.campaign import truncation_offsets

from medmulti.errors import CorruptFileError, MedmultiError, UnsupportedDataError

# the fast tier sweeps the first KiB of every seed with a stride; benchmarks/stress.py sweeps every byte
HEAD_STRIDE = 8


def _signature_length(data: bytes) -> int:
    """Bytes needed before the format can be recognised at all."""
    if data[:2] == b"\x1f\x8b":
        return 10  # gzip member header
    if data[128:132] == b"DICM":
        return 132
    for e in "<>":
        size = struct.unpack(e + "i", data[:4])[0]
        if size == 348:
            return 348
        if size == 540:
            return 12
    return 8  # raw DICOM: one tag + VR/length


def _dicom_allowances(data: bytes) -> tuple[set[int], int]:
    """(boundaries where a non-image prefix may be UnsupportedDataError, start of trailing padding)."""
    from medmulti_testing.fuzz import dicom_elements

    elements, _, _ = dicom_elements(data)
    top = [e for e in elements if e.depth == 0]
    image_sop = any(e.tag in (0x00080016, 0x00020002) and b"1.2.840.10008.5.1.4.1.1." in data[e.value_offset:e.end]
                    for e in top)
    boundaries = set() if image_sop else {e.end for e in top}
    padding = next((e.offset for e in top if e.tag == 0xFFFCFFFC), len(data) + 1)
    return boundaries, padding


def _sweep(seed, tmp_path, stride):
    from medmulti.io import read_image

    data = seed.read_bytes()
    need = _signature_length(data)
    boundaries, padding = _dicom_allowances(data) if seed.fmt == "dicom" else (set(), len(data) + 1)
    target = tmp_path / ("cut" + seed.suffix)
    bad = []
    for off in truncation_offsets(len(data)):
        if off < 1024 and off % stride and off != need - 1:
            continue
        target.write_bytes(data[:off])
        try:
            read_image(target, **seed.kwargs)
            if off < padding:
                bad.append((off, "accepted"))
        except CorruptFileError:
            pass
        except UnsupportedDataError:
            if off >= need and off not in boundaries:
                bad.append((off, "UnsupportedDataError"))
        except MedmultiError as exc:
            bad.append((off, type(exc).__name__))
        except Exception as exc:  # noqa: BLE001
            bad.append((off, "escape " + type(exc).__name__))
    return bad


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_truncation_sweep(seeds, tmp_path, kind):
    failures = {}
    for seed in seeds[kind]:
        bad = _sweep(seed, tmp_path, HEAD_STRIDE)
        if bad:
            failures[seed.name] = bad[:12]
    assert failures == {}


def test_truncated_series_slice(seeds, tmp_path):
    """One slice of a series cut short: the folder read fails with CorruptFileError naming that file."""
    import shutil

    from medmulti.io import read_image

    seed = next(s for s in seeds["series"] if s.name == "series_explicit")
    folder = tmp_path / "series"
    shutil.copytree(seed.path, folder)
    victim = sorted(folder.iterdir())[2]
    data = victim.read_bytes()
    for off in (len(data) - 1, len(data) // 2, 200):
        victim.write_bytes(data[:off])
        with pytest.raises(CorruptFileError) as info:
            read_image(folder)
        assert victim.name in str(info.value)
