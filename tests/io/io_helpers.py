"""Helpers shared by the reader tests (paths of bundled files, oracles)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def bundled(name: str) -> str:
    """Path of a file bundled with pydicom (offline)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, name
    return path


def dicomdir_root() -> Path:
    return Path(bundled("CT_small.dcm")).parent / "dicomdirtests"


def nibabel_file(name: str) -> str:
    from nibabel.testing import data_path

    return os.path.join(data_path, name)


def oblique_direction(angles=(20.0, -15.0, 35.0)) -> np.ndarray:
    """A proper rotation matrix from Euler angles (degrees), no scipy needed."""
    ax, ay, az = np.radians(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sitk_series(folder) -> "object":
    """SimpleITK's reading of a series folder, as a medmulti Image (the oracle)."""
    import SimpleITK as sitk

    from medmulti.image import Image

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return Image.from_sitk(reader.Execute())
