"""``inspect_source`` on series folders keeps only :data:`INSPECT_KEYWORDS` of each header
(walked by element headers where it can) and converts each distinct identity value once:
its verdict must equal the one from full pydicom parses of every header, which is what it
computed before (``INSPECT_KEYWORDS`` set to None below)."""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_helpers import bundled, dicomdir_root
from pydicom.uid import ExplicitVRLittleEndian

import medmulti.io.source as source
from medmulti.io import inspect_source


def _verdict(folder: Path, **choice) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            info = inspect_source(folder, **choice)
        except Exception as exc:  # the verdict is compared, whatever it is
            return "error", type(exc).__name__, str(exc)
    return ("info", info.kind, info.modality, info.shape, info.spacing, [str(p) for p in info.files], info.n_files,
            sorted(info.digests.items()), list(info.warnings),
            None if info.affine is None else np.round(info.affine, 9).tolist(),
            sorted(info.patient_keys), sorted(info.study_keys))


def assert_same(folder: Path, monkeypatch, **choice) -> None:
    fast = _verdict(folder, **choice)
    with monkeypatch.context() as m:
        m.setattr(source, "INSPECT_KEYWORDS", None)  # every header parsed in full
        full = _verdict(folder, **choice)
    assert fast == full, (folder, choice)


def _series(folder: Path, names: list[str], *, charset: str = "ISO_IR 100") -> None:
    """CT_small.dcm's full header per slice; PatientName per slice from ``names`` (Latin-1 text)."""
    template = pydicom.dcmread(bundled("CT_small.dcm"))
    folder.mkdir(parents=True)
    for k, name in enumerate(names):
        ds = copy.deepcopy(template)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.7.{k}"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.8"
        ds.ImagePositionPatient = [-50.0, -60.0, 2.5 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.save_as(folder / f"s{k:02d}.dcm", enforce_file_format=True)


@pytest.mark.parametrize("sub", ["77654033/CR1", "77654033/CT2", "98892001/CT2N", "98892003/MR1", "98892003/MR700",
                                 "TINY_ALPHA", "."])
def test_dicomdir_folders(sub, monkeypatch):
    assert_same(dicomdir_root() / sub, monkeypatch)


def test_one_person_in_latin1_and_a_second_person(tmp_path, monkeypatch):
    _series(tmp_path / "same", ["M\xfcller^J\xf6rg"] * 5)
    assert_same(tmp_path / "same", monkeypatch)
    assert not any("more than one patient" in w for w in inspect_source(tmp_path / "same").warnings)
    _series(tmp_path / "mixed", ["M\xfcller^J\xf6rg"] * 4 + ["M\xfcller^Jorg"])
    assert_same(tmp_path / "mixed", monkeypatch)
    assert any("more than one patient" in w for w in inspect_source(tmp_path / "mixed").warnings)


def test_same_bytes_under_another_character_set_are_not_taken_for_the_same_value(tmp_path, monkeypatch):
    # the bytes of one name, read under two character sets, are two names: converted separately
    _series(tmp_path / "a", ["\xc4\xe9"] * 3, charset="ISO_IR 100")
    folder = tmp_path / "a"
    last = sorted(folder.glob("*.dcm"))[-1]
    data = last.read_bytes()
    assert data.count(b"ISO_IR 100") == 1
    last.write_bytes(data.replace(b"ISO_IR 100", b"ISO_IR 144"))  # Cyrillic: the same bytes, other letters
    names = {str(pydicom.dcmread(p).PatientName) for p in folder.glob("*.dcm")}
    assert len(names) == 2, names
    assert_same(folder, monkeypatch)
    assert any("more than one patient" in w for w in inspect_source(folder).warnings)


def test_single_file_folder_is_checked_from_its_whole_header(tmp_path, monkeypatch):
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copyfile(bundled(name), folder / name)
        assert_same(folder, monkeypatch)
