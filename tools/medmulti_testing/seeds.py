"""The fuzz seed set: real files from pydicom and nibabel plus :mod:`medmulti.examples.synth` output.

Bundled test files are located on disk inside the installed packages; this module
never calls anything that could download (``pydicom.data.get_testdata_file``
fetches files that are not bundled, so it is not used here).

Coverage of the DICOM seeds: explicit VR little endian with private tags
(``CT_small.dcm``), implicit VR (``MR_small_implicit.dcm``), explicit big endian
(``MR_small_bigendian.dcm``), RLE Lossless (``MR_small_RLE.dcm``), JPEG 2000
(``MR_small_jp2klossless.dcm``, ``JPEG2000.dcm``, which also carries
undefined-length sequences and private tags), a deflated dataset
(``image_dfl.dcm``), nested private sequences of undefined length
(``nested_priv_SQ.dcm``), and synthetic CT / enhanced multi-frame / DX files,
one of them with an undefined-length private sequence. NIfTI seeds: NIfTI-1 big
endian int16 and float32, NIfTI-2 (4D, gzip), a tiny ``.nii.gz``, and synthetic
NIfTI-1/-2 ``.nii`` and ``.nii.gz`` files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Seed", "pydicom_file", "nibabel_file", "build_seeds", "build_series_seed"]

PYDICOM_SEEDS = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "image_dfl.dcm",
    "JPEG2000.dcm",
    "nested_priv_SQ.dcm",
)
NIBABEL_SEEDS = (
    ("anatomical.nii", {}),
    ("reoriented_anat_moved.nii", {}),
    ("standard.nii.gz", {}),
    ("example_nifti2.nii.gz", {"volume": 0}),
)


@dataclass(frozen=True)
class Seed:
    """One fuzz seed.

    Attributes
    ----------
    name : str
        Stable name (the file name), part of every mutation's random seed.
    fmt : {"dicom", "nifti"}
        Which mutators apply.
    path : pathlib.Path
        The seed file (a folder for series seeds).
    suffix : str
        File suffix a mutated copy must keep (``".nii.gz"``, ``".nii"``, ``".dcm"``).
    kwargs : dict
        Extra arguments for ``read_image`` (e.g. ``volume=0`` for 4D NIfTI).
    """

    name: str
    fmt: str
    path: Path
    suffix: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        """Return the seed file's bytes."""
        return self.path.read_bytes()


def pydicom_file(name: str) -> Path:
    """Return the path of a test file bundled with pydicom (never downloads).

    Raises
    ------
    FileNotFoundError
        If the installed pydicom does not bundle ``name``.
    """
    import pydicom

    p = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not p.is_file():
        raise FileNotFoundError(f"pydicom does not bundle {name}")
    return p


def nibabel_file(name: str) -> Path:
    """Return the path of a test file bundled with nibabel."""
    from nibabel.testing import data_path

    p = Path(data_path) / name
    if not p.is_file():
        raise FileNotFoundError(f"nibabel does not bundle {name}")
    return p


def _volume(shape=(4, 12, 12), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    vol = 1000.0 * ((x**2 + y**2 + z**2) < 0.6) - 1000.0 * ((x**2 + y**2 + z**2) >= 0.9)
    return vol + rng.normal(0, 10, shape)


def build_series_seed(out_dir: str | PathLike[str], *, n_slices: int = 5, size: int = 12,
                      transfer_syntax: str = "1.2.840.10008.1.2.1", patient: dict | None = None) -> Path:
    """Write a small synthetic CT series (``n_slices`` files) and return its folder."""
    from medmulti.examples import synth

    out = Path(out_dir)
    a = synth.affine_from_geometry((2.5, 0.8, 0.8), (-10.0, -20.0, 30.0))
    files = synth.write_dicom_series(_volume((n_slices, size, size)), out, affine=a,
                                     transfer_syntax=transfer_syntax, patient=patient)
    for i, f in enumerate(files):
        _pin_uids(f, ("series", out.name, i))
    ds_uids = {}
    import pydicom

    for f in files:  # one study / series / frame of reference for the whole folder
        ds = pydicom.dcmread(f)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            ds_uids.setdefault(kw, getattr(ds, kw))
            setattr(ds, kw, ds_uids[kw])
        ds.save_as(f, enforce_file_format=True)
    return out


def _pin_uids(path: Path, key: str) -> Path:
    """Replace every UID the writers drew at random by one derived from ``key``.

    Keeps the seed bytes identical from run to run, so ``<seed>#<index>`` names
    one input forever.
    """
    import pydicom

    from medmulti.examples import synth

    ds = pydicom.dcmread(path)
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if kw in ds:
            setattr(ds, kw, synth.new_uid((key, kw)))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _undefined_length_private(path: Path) -> Path:
    """Write a synthetic CT slice with an undefined-length private sequence (implicit VR)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0009, "MEDMULTI FUZZ", create=True)
    inner = Dataset()
    inner.add_new(0x00091001, "LO", "inner")  # private creator for the item
    item = Dataset()
    item.private_block(0x0011, "MEDMULTI FUZZ", create=True).add_new(0x01, "LO", "x")
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    block.add_new(0x10, "SQ", Sequence([item, item]))
    ds[0x00091010].is_undefined_length = True
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.5"
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    out = path.with_name("synth_ct_implicit_undef_private.dcm")
    ds.save_as(out, enforce_file_format=True)
    return out


def build_seeds(work_dir: str | PathLike[str]) -> dict[str, list[Seed]]:
    """Return the seed set, writing the synthetic seeds under ``work_dir``.

    Parameters
    ----------
    work_dir : str or PathLike
        Folder for the synthetic seeds (created).

    Returns
    -------
    dict
        ``{"dicom": [...], "nifti": [...], "series": [...]}``; series seeds are
        folders (fmt ``"dicom"``) whose files are mutated one at a time.
    """
    from medmulti.examples import synth

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dicom = [Seed(n, "dicom", pydicom_file(n), ".dcm") for n in PYDICOM_SEEDS]
    a = synth.affine_from_geometry((2.0, 0.7, 0.7), (5.0, -12.0, 40.0))
    ct = synth.write_dicom_slice(
        _volume((1, 16, 16))[0], work / "synth_ct.dcm", position=(5.0, -12.0, 40.0), row_direction=(1, 0, 0),
        column_direction=(0, 1, 0), pixel_spacing=(0.7, 0.7), slice_thickness=2.0)
    mf = synth.write_dicom_multiframe(_volume((4, 10, 10), 1), work / "synth_mf.dcm", affine=a)
    dx = synth.write_dicom_xray((np.arange(24 * 20).reshape(24, 20) % 4000).astype(np.uint16),
                                work / "synth_dx.dcm", modality="DX")
    for p in (ct, mf, dx):
        _pin_uids(p, p.name)
    und = _undefined_length_private(ct)
    dicom += [Seed(p.name, "dicom", p, ".dcm") for p in (ct, mf, dx, und)]

    nifti = [Seed(n, "nifti", nibabel_file(n), ".nii.gz" if n.endswith(".gz") else ".nii", kw)
             for n, kw in NIBABEL_SEEDS]
    vol = _volume((5, 7, 6), 2)
    n1 = synth.write_nifti(vol, work / "synth_n1.nii", affine=a, dtype=np.int16)
    n2 = synth.write_nifti(vol, work / "synth_n2.nii", affine=a, dtype=np.float32, nifti2=True)
    gz = synth.write_nifti(vol, work / "synth_n1.nii.gz", affine=a, dtype=np.float32)
    nifti += [Seed(n1.name, "nifti", n1, ".nii"), Seed(n2.name, "nifti", n2, ".nii"),
              Seed(gz.name, "nifti", gz, ".nii.gz")]

    series = [
        Seed("series_explicit", "dicom", build_series_seed(work / "series_explicit"), ".dcm"),
        Seed("series_implicit", "dicom",
             build_series_seed(work / "series_implicit", n_slices=4, size=10, transfer_syntax="1.2.840.10008.1.2"),
             ".dcm"),
    ]
    return {"dicom": dicom, "nifti": nifti, "series": series}
