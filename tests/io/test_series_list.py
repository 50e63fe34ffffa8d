"""``list_series`` and ``medmulti info``: what a folder holds, checked against pydicom's
own reading of every header and SimpleITK's geometry, and what ``read_image`` does
with each listed ``select`` value."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_helpers import dicomdir_root

from medmulti import MedmultiError, read_image
from medmulti.cli import main
from medmulti.examples import synth
from medmulti.io.series_list import list_series

FOLDERS = ["77654033", "98892001", "98892003"]


def _pydicom_groups(folder: Path) -> dict[str, list[pydicom.Dataset]]:
    """Image headers per SeriesInstanceUID, as pydicom reads them (the oracle)."""
    groups = defaultdict(list)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        if "Rows" in ds and "SeriesInstanceUID" in ds:
            groups[str(ds.SeriesInstanceUID)].append(ds)
    return groups


@pytest.mark.parametrize("name", FOLDERS)
def test_listing_matches_pydicom(name):
    folder = dicomdir_root() / name  # series sit in subfolders (GDCM's series IDs are not recursive)
    listed = list_series(folder)
    groups = _pydicom_groups(folder)
    assert len(listed) == len(groups)
    want = sorted((int(g[0].SeriesNumber), str(g[0].Modality), len(g), int(g[0].Rows), int(g[0].Columns))
                  for g in groups.values())
    got = sorted((s.number, s.modality, s.n_files, s.rows, s.columns) for s in listed)
    assert got == want
    for s in listed:  # the example file belongs to a series of that number and modality
        ds = pydicom.dcmread(folder / s.example, stop_before_pixels=True)
        assert (int(ds.SeriesNumber), str(ds.Modality)) == (s.number, s.modality)


@pytest.mark.parametrize("name", FOLDERS)
def test_select_reads_exactly_the_listed_series_and_readable_says_if_it_reads(name):
    folder = dicomdir_root() / name
    for s in list_series(folder):
        if s.readable:
            if s.n_volumes > 1:  # readable one volume at a time (tests/io/test_series_volumes.py)
                for k in range(s.n_volumes):
                    assert read_image(folder, series=s.select, volume=k).modality == s.modality
                continue
            img = read_image(folder, series=s.select)
            assert img.modality == s.modality
            assert img.shape[-2:] == (s.rows, s.columns)
            assert img.meta["n_files"] == s.n_files
        else:
            with pytest.raises(MedmultiError) as info:
                read_image(folder, series=s.select)
            assert s.problem.startswith(type(info.value).__name__)


def test_plane_agrees_with_simpleitk_direction(tmp_path):
    import SimpleITK as sitk

    vol = np.zeros((4, 6, 6))
    # a sagittal stack: the slice normal along LPS x
    direction = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])  # columns: x, y, z array axes in LPS
    synth.write_dicom_series(vol, tmp_path / "sag", affine=synth.affine_from_geometry((2.0, 1.0, 1.0), (0, 0, 0),
                                                                                       direction))
    synth.write_dicom_series(vol, tmp_path / "ax", affine=synth.affine_from_geometry((2.0, 1.0, 1.0), (0, 0, 0)))
    for sub in ("sag", "ax"):
        (s,) = list_series(tmp_path / sub)
        r = sitk.ImageSeriesReader()
        r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / sub)))
        normal = np.abs(np.array(r.Execute().GetDirection()).reshape(3, 3)[:, 2])
        assert s.plane == ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


def _identifying_values(folder: Path) -> set[str]:
    values = set()
    for g in _pydicom_groups(folder).values():
        for ds in g:
            for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                       "SeriesInstanceUID", "SOPInstanceUID", "InstitutionName", "SeriesDescription"):
                v = str(ds.get(kw, "") or "").strip()
                if len(v) >= 4:
                    values.add(v)
    return values


def test_info_lists_then_describes_and_prints_nothing_identifying(capsys):
    folder = dicomdir_root() / "77654033"
    assert main(["info", str(folder)]) == 0
    listing = capsys.readouterr().out
    assert "4 image series" in listing and "CT2/17106" in listing
    ct = next(s for s in list_series(folder) if s.modality == "CT")
    assert main(["info", str(folder), "--series", ct.select]) == 1  # that CT has a gap: typed error, exit 1
    captured = capsys.readouterr()
    assert "SeriesGeometryError" in captured.err and "4 image series" in captured.out
    cr = next(s for s in list_series(folder) if s.select.startswith("CR2"))
    assert main(["info", str(folder), "--series", cr.select, "--values", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ref = read_image(folder, series=cr.select)
    assert data["image"]["shape"] == list(ref.shape) and data["image"]["modality"] == "CR"
    assert data["image"]["min"] == float(ref.array.min()) and data["image"]["max"] == float(ref.array.max())
    assert len(data["series"]) == 4
    text = listing + captured.out + captured.err + json.dumps(data)
    text = text.replace(str(folder), "<folder>")  # the path the user typed may name the patient folder
    leaked = [v for v in _identifying_values(folder) if v in text]
    assert not leaked


def test_info_on_files_and_usage_errors(capsys, tmp_path):
    import nibabel as nib
    from nibabel.testing import data_path
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    assert main(["info", ct, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["image"]
    ds = pydicom.dcmread(ct)
    assert d["shape"] == [1, int(ds.Rows), int(ds.Columns)] and d["modality"] == str(ds.Modality)
    assert d["spacing_mm"][1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    nii4d = str(Path(data_path) / "example4d.nii.gz")
    assert main(["info", nii4d]) == 1  # 4D without --volume
    assert "volume" in capsys.readouterr().err
    assert main(["info", nii4d, "--volume", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["image"]
    assert d["shape"] == list(nib.load(nii4d).shape[:3][::-1])
    assert main(["info", str(tmp_path / "nope")]) == 1
    assert "MissingFileError" in capsys.readouterr().err
    assert main(["info", ct, "--volume", "-1"]) == 2


def test_info_on_a_folder_without_dicom_images_is_a_typed_error(tmp_path, capsys):
    import shutil

    from nibabel.testing import data_path

    shutil.copy(Path(data_path) / "anatomical.nii", tmp_path / "anatomical.nii")
    assert list_series(tmp_path) == []
    assert main(["info", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "0 image series" in captured.out and "MissingFileError" in captured.err
