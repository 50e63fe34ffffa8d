"""Shared fixtures for geometry tests: real files from nibabel and pydicom."""

from pathlib import Path

import nibabel as nib
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from medmulti.image import Image

CT5N = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"


@pytest.fixture(scope="session")
def anatomical():
    """nibabel's anatomical.nii as an Image (big-endian int16 on disk)."""
    return Image.from_nifti(nib.load(str(Path(data_path) / "anatomical.nii")), "MR")


@pytest.fixture(scope="session")
def ct_series_sitk():
    """pydicom's 5-slice CT series (dicomdirtests/98892001/CT5N) read by SimpleITK."""
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(CT5N))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()

