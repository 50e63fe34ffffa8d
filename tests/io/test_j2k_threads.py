"""JPEG 2000 series decoded by SimpleITK in threads (:mod:`medmulti.io.j2k_threads`).

Oracle: pydicom's ``pixel_array`` of each file with our modality LUT
(:func:`medmulti.io.values.apply_rescale_into`), and the in-process path (``workers=1``),
which decodes with pydicom. Series are generated (encoded by pydicom with
pylibjpeg-openjpeg) over the header variants the threads path must either reproduce
exactly or hand to pydicom (MONOCHROME1, slopes and intercepts integer or not, 8/12/16
bits, signed or not), and built from pydicom's bundled JPEG 2000 files. A frame that
does not decode must still be the typed error naming its file, whatever SimpleITK said;
a script without a main guard decodes in threads, with no child process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap
import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from medmulti import CorruptFileError, MedmultiError, read_image
from medmulti.io import j2k_threads
from medmulti.io.dicom_series import SERIES_KEYWORDS, plan_series
from medmulti.io.limits import DEFAULT_LIMITS
from medmulti.io.values import apply_rescale_into

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
N_SLICES = 6


def _write(path, stored, *, z, series_uid, signed=True, bits_stored=16, bits_allocated=16,
           photometric="MONOCHROME2", slope=None, intercept=None, sop=CT, extra=None):
    """One single-frame JPEG 2000 lossless file holding ``stored``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT" if sop == CT else "MR"
    ds.PatientID = ds.PatientName = "ANON"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = "1.2.3", series_uid, 1
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.InstanceNumber = int(z) + 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(z)], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    arr = stored.astype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    ds.PixelData = arr.tobytes()
    ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg")
    ds.save_as(path, enforce_file_format=True)
    return path


def _series(folder, seed, *, signed=True, bits_stored=16, bits_allocated=16, per_slice=None, **kw):
    """``N_SLICES`` files named in shuffled order; ``per_slice(k)`` gives each slice's extra keywords."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    uid = generate_uid()
    names = rng.permutation(N_SLICES)
    for k in range(N_SLICES):
        stored = rng.integers(lo, hi + 1, size=(64, 80))
        stored[:4, :4] = lo
        stored[-4:, -4:] = hi  # the extremes of the stored range
        args = dict(kw, **(per_slice(k) if per_slice else {}))
        _write(folder / f"IM{names[k]:03d}.dcm", stored, z=k, series_uid=uid, signed=signed,
               bits_stored=bits_stored, bits_allocated=bits_allocated, **args)
    return folder


def _oracle(folder):
    """pydicom's pixel_array of each file, in slice order, through our modality LUT."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
        for ds in datasets:
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            slice_ = np.empty((ds.Rows, ds.Columns), np.float32)
            out.append(apply_rescale_into(ds.pixel_array, slice_, slope, intercept))
    return np.stack(out)


@pytest.fixture()
def itk_reads(monkeypatch):
    """The slices SimpleITK decoded (file name, thread name), and those pydicom decoded in the threads path."""
    seen: list[tuple[str, str]] = []
    by_pydicom: list[str] = []
    real, real_stored = j2k_threads.decode_slice_itk, j2k_threads.read_stored

    def recorded(h, *args, **kwargs):
        ok = real(h, *args, **kwargs)
        if ok:
            seen.append((h.name, threading.current_thread().name))
        return ok

    def stored(h, *args, **kwargs):
        by_pydicom.append(h.name)
        return real_stored(h, *args, **kwargs)

    monkeypatch.setattr(j2k_threads, "decode_slice_itk", recorded)
    monkeypatch.setattr(j2k_threads, "read_stored", stored)
    return SimpleNamespace(itk=seen, pydicom=by_pydicom)


CASES = {
    "ct int16, slope 1, intercept -1024": dict(slope=1, intercept=-1024),
    "uint16 12 bits stored": dict(signed=False, bits_stored=12, slope=1, intercept=-1024),
    "int16 12 bits stored, slope 2": dict(bits_stored=12, slope=2, intercept=-3),
    "slope and intercept not integers, per slice": dict(per_slice=lambda k: dict(slope=[1, 0.5, 2.5][k % 3],
                                                                                 intercept=-1024 + 0.25 * k)),
    "negative slope": dict(bits_stored=12, slope=-3, intercept=7),
    "uint8, no rescale": dict(signed=False, bits_stored=8, bits_allocated=8),
    "int8, intercept": dict(bits_stored=8, bits_allocated=8, slope=1, intercept=-100),
    "mr, no rescale": dict(sop=MR),
    "mr, integer rescale": dict(sop=MR, slope=3, intercept=5),
    "rescaled values beyond float32's integers": dict(slope=1000, intercept=20_000_001),
    "pixel padding value": dict(slope=1, intercept=-1024, extra={"PixelPaddingValue": -32768}),
}


@pytest.fixture(scope="module")
def series_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("j2k-threads")
    for i, (name, kw) in enumerate(CASES.items()):
        _series(root / f"case{i}", 100 + i, **kw)
    _series(root / "mono1", 99, signed=False, bits_stored=12, photometric="MONOCHROME1", slope=1, intercept=-1024)
    return root


@pytest.mark.parametrize("case", range(len(CASES)), ids=list(CASES))
def test_threads_give_pydicoms_values_exactly(series_root, case, itk_reads):
    folder = series_root / f"case{case}"
    img = read_image(folder, workers=3)
    np.testing.assert_array_equal(img.array, _oracle(folder))
    assert img.array.dtype == np.float32 and img.array.flags.c_contiguous
    assert len(itk_reads.itk) == N_SLICES  # every slice through SimpleITK
    assert len(itk_reads.pydicom) == 1  # and the first again by pydicom, the check
    assert {thread for _, thread in itk_reads.itk} <= {f"medmulti-j2k_{i}" for i in range(3)}
    np.testing.assert_array_equal(img.array, read_image(folder, workers=1).array)


def test_monochrome1_goes_to_pydicom(series_root, itk_reads):
    """GDCM inverts MONOCHROME1: such a series is decoded the previous way."""
    folder = series_root / "mono1"
    np.testing.assert_array_equal(read_image(folder, workers=2).array, _oracle(folder))
    assert itk_reads.itk == [] and itk_reads.pydicom == []


def test_source_files_are_not_written(series_root):
    folder = series_root / "case0"
    before = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    read_image(folder, workers=2)
    assert before == {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def _bundled_series(name, folder, n=4):
    """A series of ``n`` copies of one of pydicom's test files (new UIDs, positions along z)."""
    folder.mkdir()
    uid = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(k)], [1, 0, 0, 0, 1, 0]
        if "PixelSpacing" not in ds:
            ds.PixelSpacing = [1, 1]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"s{k}.dcm")
    return folder


@pytest.mark.parametrize("name, through_itk", [
    ("MR_small_jp2klossless.dcm", True),
    ("JPEG2000.dcm", False),  # the irreversible 9-7 wavelet
    ("J2K_pixelrep_mismatch.dcm", False),  # codestream unsigned, PixelRepresentation 1: pydicom's correction
    ("693_J2KI.dcm", False),  # codestream precision 16, BitsStored 14
])
def test_pydicoms_bundled_jpeg2000_files_as_series(tmp_path, name, through_itk, itk_reads):
    folder = _bundled_series(name, tmp_path / "s")
    got = read_image(folder, workers=2).array
    np.testing.assert_array_equal(got, read_image(folder, workers=1).array)
    np.testing.assert_array_equal(got, _oracle(folder))
    assert len(itk_reads.itk) == (4 if through_itk else 0)


# -- the codestream checks ---------------------------------------------------------
def _codestream(path):
    ds = pydicom.dcmread(path)
    return next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)), ds


def _header(folder):
    return plan_series(folder, limits=DEFAULT_LIMITS, only=SERIES_KEYWORDS).headers[0]


def test_codestream_checks(series_root):
    h = _header(series_root / "case0")
    cs, _ = _codestream(h.path)
    assert j2k_threads.codestream_eligible(cs, h)
    ssiz, xsiz = 4 + 38, 8  # SOC, SIZ marker, then Lsiz, Rsiz, Xsiz...; Ssiz after Csiz
    cod = cs.index(b"\xff\x52")

    def edit(at, value):
        b = bytearray(cs)
        b[at] = value
        return bytes(b)

    assert not j2k_threads.codestream_eligible(edit(cod + 13, 0), h)  # irreversible 9-7 wavelet
    assert cs[ssiz] == 0x8F  # signed, 16 bits
    assert not j2k_threads.codestream_eligible(edit(ssiz, 0x8E), h)  # precision 15 bits, not 16
    assert not j2k_threads.codestream_eligible(edit(ssiz, 0x0F), h)  # unsigned
    assert not j2k_threads.codestream_eligible(edit(ssiz + 1, 2), h)  # subsampled
    wide = bytearray(cs)
    struct.pack_into(">I", wide, xsiz, struct.unpack_from(">I", cs, xsiz)[0] + 1)
    assert not j2k_threads.codestream_eligible(bytes(wide), h)  # not Rows x Columns
    assert not j2k_threads.codestream_eligible(cs[: cod + 5], h)  # cut in the main header
    sot = cs.index(b"\xff\x90")
    psot = struct.unpack_from(">I", cs, sot + 6)[0]
    assert not j2k_threads.codestream_eligible(cs[: sot + psot - 10], h)  # cut in the tile data
    tile_cod = cs[cod: cod + 2 + struct.unpack_from(">H", cs, cod + 2)[0]]  # a COD in the tile-part header
    bad = bytearray(tile_cod)
    bad[13] = 0
    for extra, ok in ((tile_cod, True), (bytes(bad), False)):
        b = bytearray(cs[: sot + 12] + extra + cs[sot + 12:])
        struct.pack_into(">I", b, sot + 6, psot + len(extra))
        assert j2k_threads.codestream_eligible(bytes(b), h) is ok
    assert not j2k_threads.codestream_eligible(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + cs, h)  # a JP2 file, not a codestream


# -- errors --------------------------------------------------------------------------
def _copy(src, dst):
    dst.mkdir()
    for p in sorted(src.iterdir()):
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _damage_components(path):
    """SIZ declares three components (the codestream's size stays right)."""
    data = bytearray(path.read_bytes())
    siz = data.index(b"\xff\x4f\xff\x51")
    data[siz + 40:siz + 42] = (3).to_bytes(2, "big")
    path.write_bytes(bytes(data))


def _assert_clean(err, victim):
    assert isinstance(err, MedmultiError) and victim.name in str(err.path)
    text = str(err)
    assert not any(ord(c) < 32 or ord(c) == 127 for c in text)
    for leak in ("ITK", "GDCM", "sitk", "Exception thrown", "RuntimeError", "0x"):
        assert leak not in text


@pytest.mark.parametrize("slice_", [0, 3])
def test_a_frame_that_does_not_decode_is_the_typed_error_naming_it(series_root, tmp_path, slice_):
    folder = _copy(series_root / "case0", tmp_path / "j2k")
    victim = _header_of_slice(folder, slice_)
    _damage_components(victim)
    for workers in (1, 2):
        with pytest.raises(CorruptFileError) as info:
            read_image(folder, workers=workers)
        _assert_clean(info.value, victim)


def _header_of_slice(folder, k):
    return plan_series(folder, limits=DEFAULT_LIMITS, only=SERIES_KEYWORDS).headers[k].path


@pytest.mark.parametrize("damage", ["flip", "zeros", "cut"])
def test_damaged_tile_data_gives_what_the_in_process_path_gives(series_root, tmp_path, damage):
    """Headers that pass the checks, tile data damaged: the same array as in process, or the same error."""
    folder = _copy(series_root / "case0", tmp_path / "j2k")
    victim = _header_of_slice(folder, 3)
    cs, ds = _codestream(victim)
    sot = cs.index(b"\xff\x90")
    sod = cs.index(b"\xff\x93", sot)
    mid = (sod + len(cs)) // 2
    if damage == "flip":
        cs = cs[:mid] + bytes([cs[mid] ^ 0x5A]) + cs[mid + 1:]
    elif damage == "zeros":
        cs = cs[:mid] + bytes(len(cs) - 2 - mid) + b"\xff\xd9"
    else:  # cut short, with a tile-part length that agrees and EOC
        cs = bytearray(cs[:mid] + b"\xff\xd9")
        struct.pack_into(">I", cs, sot + 6, mid - sot)
        cs = bytes(cs)
    assert j2k_threads.codestream_eligible(cs, _header(folder))  # SimpleITK is asked
    ds.PixelData = pydicom.encaps.encapsulate([cs])
    ds.save_as(victim)
    outcomes = []
    for workers in (1, 2):
        try:
            outcomes.append(read_image(folder, workers=workers).array)
        except MedmultiError as exc:
            _assert_clean(exc, victim)
            outcomes.append(type(exc))
    if isinstance(outcomes[0], np.ndarray):
        np.testing.assert_array_equal(outcomes[1], outcomes[0])
    else:
        assert outcomes[1] is outcomes[0]


def test_simpleitks_failure_never_escapes(series_root, tmp_path, monkeypatch):
    """Even when the codestream checks pass, SimpleITK's RuntimeError becomes pydicom's typed error."""
    folder = _copy(series_root / "case0", tmp_path / "j2k")
    victim = _header_of_slice(folder, 4)
    _damage_components(victim)
    monkeypatch.setattr(j2k_threads, "codestream_eligible", lambda cs, h: True)
    failures = []
    real = j2k_threads._read_itk

    def watched(path):
        try:
            return real(path)
        except RuntimeError as exc:
            failures.append(str(exc))
            raise

    monkeypatch.setattr(j2k_threads, "_read_itk", watched)
    with pytest.raises(CorruptFileError) as info:
        read_image(folder, workers=2)
    assert failures  # SimpleITK did fail on it
    _assert_clean(info.value, victim)


def test_a_slice_simpleitk_fails_on_is_decoded_by_pydicom(series_root, monkeypatch, itk_reads):
    folder = series_root / "case3"
    victim = os.path.basename(_header_of_slice(folder, 2))
    real = j2k_threads._read_itk

    def failing(path):
        if os.path.basename(path) == victim:
            raise RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: \x1b[31m/tmp/x\n")
        return real(path)

    monkeypatch.setattr(j2k_threads, "_read_itk", failing)
    np.testing.assert_array_equal(read_image(folder, workers=2).array, _oracle(folder))
    assert victim not in {name for name, _ in itk_reads.itk} and len(itk_reads.itk) == N_SLICES - 1
    assert sorted(itk_reads.pydicom) == sorted({victim, os.path.basename(_header_of_slice(folder, 0))})


def test_a_first_slice_that_disagrees_sends_the_series_the_previous_way(series_root, monkeypatch, caplog):
    folder = series_root / "case0"
    real = j2k_threads._from_rescaled

    def off_by_one(v, h, out, slope, intercept):
        ok = real(v, h, out, slope, intercept)
        out += 1
        return ok

    monkeypatch.setattr(j2k_threads, "_from_rescaled", off_by_one)
    with caplog.at_level(logging.WARNING, logger="medmulti.io"):
        got = read_image(folder, workers=2).array
    np.testing.assert_array_equal(got, _oracle(folder))
    assert any("differs from pydicom" in r.getMessage() for r in caplog.records)


def test_recovery_refuses_values_that_do_not_map_back(series_root):
    h = _header(series_root / "case2")  # 12 bits stored, signed
    out = np.empty((h.rows, h.columns), np.float32)
    v = np.zeros((h.rows, h.columns), np.int32)
    assert j2k_threads._from_rescaled(v + 1, h, out, 2.0, -3.0)
    assert not j2k_threads._from_rescaled(v, h, out, 2.0, -3.0)  # 0 = 2 s - 3 has no integer s
    assert not j2k_threads._from_rescaled(v + 2 * 2048 - 3, h, out, 2.0, -3.0)  # s = 2048: beyond 12 bits
    assert not j2k_threads._from_rescaled(v + 1, h, out, 2.5, -3.0)  # integers from a non-integer slope
    f = np.full((h.rows, h.columns), 0.5 * 7 - 3.0)
    assert j2k_threads._from_rescaled(f, h, out, 0.5, -3.0) and np.all(out == np.float32(7) * np.float32(0.5) - 3)
    assert not j2k_threads._from_rescaled(f + 0.1, h, out, 0.5, -3.0)  # no stored value maps there


# -- no main guard --------------------------------------------------------------------
UNGUARDED = textwrap.dedent("""\
    import json, multiprocessing, sys, threading
    import numpy as np
    from medmulti import read_image
    from medmulti.io import j2k_threads, pixels
    names = set()
    real = j2k_threads._read_itk
    def recorded(path):
        names.add(threading.current_thread().name)
        return real(path)
    j2k_threads._read_itk = recorded
    folder = sys.argv[1]
    threaded = read_image(folder, workers=2).array
    here = read_image(folder, workers=1).array
    print(json.dumps({"equal": bool(np.array_equal(threaded, here)), "threads": sorted(names),
                      "children": len(multiprocessing.active_children()), "pool": pixels._POOL is not None}))
""")


def test_a_script_without_a_main_guard_decodes_in_threads(series_root, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    proc = subprocess.run([sys.executable, str(script), str(series_root / "case0")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["equal"]
    assert rec["threads"] and all(name.startswith("medmulti-j2k") for name in rec["threads"])
    assert rec["children"] == 0 and not rec["pool"]
    assert "guard" not in proc.stderr  # no "runs in this process" warning: nothing needed processes

