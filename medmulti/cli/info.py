"""Show what an image source holds before it goes into a manifest.

For a DICOM folder, lists its image series (number, modality, files, images,
size, plane, how many volumes it holds, whether it assembles, and what to pass
as ``--series`` to read it), then describes the chosen series: a folder with a
single image series needs no ``--series``. A series whose slice positions repeat
(echoes, time points, b-values, phases) holds several volumes: describe one with
``--volume K``. For a DICOM file or a NIfTI file, describes it. The
description is what ``read_image`` would return: kind, modality, array shape
(array axis order), spacing (mm), orientation code and file count; ``--values``
also decodes the pixels and prints their range. Headers only otherwise. Nothing
identifying is printed (no names, dates, UIDs or descriptions). Examples:
``medmulti info scans/p001/ct``, ``medmulti info scans/p001 --series 3``,
``medmulti info mr4d.nii.gz --volume 0 --values``.
Exit codes: 0 described (or listed), 1 the source cannot be read (typed error),
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..geometry.orientation import orientation_code
from .arguments import non_negative_int
from .output import format_table

HELP = "list the series in a DICOM folder and describe a source as read_image sees it (exit 0 ok, 1 unreadable, 2 usage)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("path", metavar="PATH", help="a DICOM folder, a DICOM file or a NIfTI file")
    parser.add_argument("--series", default=None, metavar="SERIES",
                        help="the series to describe in a folder holding several: SeriesNumber, SeriesInstanceUID "
                             "or the path of one of its files (relative to the folder)")
    parser.add_argument("--volume", type=non_negative_int, default=None, metavar="K",
                        help="volume of a 4D NIfTI file, a multi-volume enhanced DICOM file or a DICOM series "
                             "whose slice positions repeat (echoes, time points...; 0-based)")
    parser.add_argument("--values", action="store_true", help="decode the pixels and print their range")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def describe(path: str, *, series: str | None = None, volume: int | None = None, values: bool = False) -> dict[str, Any]:
    """Describe one source as ``read_image`` would read it.

    Parameters
    ----------
    path : str
        DICOM file, DICOM folder or NIfTI file.
    series : str, optional
        As ``read_image(series=...)``.
    volume : int, optional
        As ``read_image(volume=...)``.
    values : bool
        Decode the pixels (``read_image``) and add ``"min"``/``"max"``.

    Returns
    -------
    dict
        ``kind``, ``modality``, ``shape``, ``spacing_mm``, ``orientation``,
        ``n_files``, ``warnings`` (and ``min``/``max`` with ``values``).

    Raises
    ------
    MedmultiError
        The source cannot be read.
    """
    from ..io import inspect_source, read_image

    info = inspect_source(path, series=series, volume=volume)
    out: dict[str, Any] = {
        "kind": info.kind,
        "modality": info.modality,
        "shape": list(info.shape),
        "spacing_mm": [round(float(s), 6) for s in info.spacing],
        "orientation": orientation_code(info.affine),
        "n_files": info.n_files,
        "warnings": list(info.warnings),
    }
    if values:
        img = read_image(path, series=series, volume=volume)
        out["min"], out["max"] = float(img.array.min()), float(img.array.max())
    return out


def _volumes(s: Any) -> str:
    """The volumes column: ``1``, or ``3 by EchoNumbers`` for a series whose slice positions repeat."""
    return "1" if s.n_volumes == 1 else f"{s.n_volumes} by {s.volume_key}"


def _reads(s: Any) -> str:
    """The reads column: ``yes``, ``yes, --volume 0..2`` (one volume at a time), or ``no: <why>``."""
    if not s.readable:
        return f"no: {s.problem}"
    return "yes" if s.n_volumes == 1 else f"yes, --volume 0..{s.n_volumes - 1}"


def run(args: argparse.Namespace) -> int:
    """List and describe, as the arguments say.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 when described or listed (typed read errors propagate: exit 1).
    """
    from ..errors import MissingFileError
    from ..io.series_list import list_series
    from ..text import printable

    p = Path(args.path)
    if not p.exists():
        raise MissingFileError("no such file or folder", path=args.path)
    result: dict[str, Any] = {"path": args.path}
    lines: list[str] = []
    series = args.series
    describe_it = True
    if p.is_dir():
        listed = list_series(p)
        result["series"] = [s.to_dict() for s in listed]
        rows = [(s.select, "-" if s.number is None else s.number, s.modality, s.n_files, s.n_images,
                 f"{s.rows}x{s.columns}", s.plane, _volumes(s), _reads(s)) for s in listed]
        lines.append(f"{printable(args.path)}: {len(listed)} image series")
        if rows:
            lines += ["  " + line for line in format_table(rows, ("--series", "number", "modality", "files", "images",
                                                             "size", "plane", "volumes", "reads"))]
        if series is None and len(listed) > 1:
            describe_it = False
            lines.append("pass --series (first column) to describe one")
        # no DICOM image series at all: describing the folder raises read_image's typed
        # error (no DICOM image found / only non-image objects), exit 1
    if describe_it:
        if lines and not args.json:  # the listing first: it helps when the chosen series fails to read
            print("\n".join(lines), flush=True)
            lines = [""]
        d = describe(args.path, series=series, volume=args.volume, values=args.values)
        result["image"] = d
        shape = " x ".join(str(n) for n in d["shape"])
        spacing = " x ".join(f"{s:.4g}" for s in d["spacing_mm"])
        rows = [("kind", d["kind"]), ("modality", d["modality"]),
                ("shape", shape + ("  (slices, rows, columns)" if len(d["shape"]) == 3 else "  (rows, columns)")),
                ("spacing (mm)", spacing), ("orientation", d["orientation"]), ("files", d["n_files"])]
        if args.values:
            rows.append(("value range", f"{d['min']:.6g} .. {d['max']:.6g}"))
        rows += [("note", w) for w in d["warnings"]]
        lines += format_table(rows, ("", ""))[1:]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))
    sys.stdout.flush()
    return 0
