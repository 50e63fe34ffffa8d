"""Read the real example files bundled with pydicom and nibabel and print what was read.

An interim demo (until the training demo replaces it): each DICOM file, DICOM series
folder and NIfTI file below is read with ``medmulti.read_image`` and summarised as
modality, array shape, spacing (mm), orientation code (the LPS direction of the
x, y, z axes, e.g. ``LPS`` for a plain axial scan; ``-`` for projection X-rays) and
value range. Nothing is downloaded.
Exit codes: 0 all read, 1 a file could not be read.
"""

from __future__ import annotations

import argparse

HELP = "read the bundled real example files (pydicom/nibabel test data) and print a table (exit 0 ok, 1 error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("--paths", action="store_true", help="also print each source's path")


def orientation_code(affine) -> str:
    """Three-letter LPS code of the x, y, z (column, row, slice) axes of an affine.

    Parameters
    ----------
    affine : numpy.ndarray or None
        Array-order affine (``(z, y, x, 1) -> LPS``).

    Returns
    -------
    str
        e.g. ``"LPS"`` (x towards patient left, y posterior, z superior); ``"-"``
        without geometry.
    """
    import numpy as np

    if affine is None:
        return "-"
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    code = ""
    for axis in (2, 1, 0):  # x, y, z
        v = np.asarray(affine)[:3, axis]
        k = int(np.argmax(np.abs(v)))
        code += letters[k][0] if v[k] > 0 else letters[k][1]
    return code


def _sources():
    from pathlib import Path

    from nibabel.testing import data_path
    from pydicom.data import get_testdata_file

    pyd = Path(get_testdata_file("CT_small.dcm")).parent
    nib = Path(data_path)
    cr = pyd / "dicomdirtests" / "77654033" / "CR1"
    return [
        ("CT slice", pyd / "CT_small.dcm", {}),
        ("MR slice", pyd / "MR_small.dcm", {}),
        ("MR slice, JPEG 2000", pyd / "MR_small_jp2klossless.dcm", {}),
        ("MR slice, RLE", pyd / "MR_small_RLE.dcm", {}),
        ("CT slice, JPEG 2000 (lossy)", pyd / "693_J2KI.dcm", {}),
        ("CT series folder", pyd / "dicomdirtests" / "98892001" / "CT5N", {}),
        ("CR radiograph (MONOCHROME1)", cr, {}),
        ("NIfTI-1", nib / "anatomical.nii", {}),
        ("NIfTI-1 .gz, 4D volume 0", nib / "example4d.nii.gz", {"volume": 0}),
        ("NIfTI-2 .gz, 4D volume 0", nib / "example_nifti2.nii.gz", {"volume": 0}),
    ]


def run(args: argparse.Namespace) -> int:
    """Read every example source and print the table.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 when every source was read, 1 otherwise.
    """
    from ..errors import MedmultiError
    from ..io import read_image

    rows = []
    status = 0
    for label, path, kwargs in _sources():
        try:
            img = read_image(path, **kwargs)
        except MedmultiError as exc:
            rows.append((label, "error", type(exc).__name__, "", "", "", str(path)))
            status = 1
            continue
        spacing = " x ".join(f"{s:.3g}" for s in img.spacing)
        shape = " x ".join(str(n) for n in img.shape)
        vrange = f"{float(img.array.min()):.6g} .. {float(img.array.max()):.6g}"
        rows.append((label, img.modality, shape, spacing, orientation_code(img.affine), vrange, str(path)))
    header = ("source", "modality", "shape", "spacing (mm)", "orient.", "value range", "path")
    ncol = 7 if args.paths else 6
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(ncol)]
    for r in [header] + rows:
        print("  ".join(str(r[i]).ljust(widths[i]) for i in range(ncol)).rstrip())
    return status
