"""Draw one study as a PNG montage to check its alignment at a glance.

Each 3D modality is preprocessed onto the study grid and shown as three
orthogonal slices through the same world point, with the MR outline drawn over
the CT window; X-rays are shown beside them. Example:
``medmulti inspect ct=data/p001/ct mr=data/p001/mr.nii.gz --spec spec.yaml --out p001.png``.
Exit codes: 0 written, 1 a data error (missing/corrupt file, failed registration),
2 usage error (bad SOURCE pair, unknown modality name, unreadable spec).
"""

from __future__ import annotations

import argparse
import sys

from .arguments import writing

HELP = "draw one study's preprocessed modalities as a PNG montage (exit 0 written, 1 data error, 2 usage)"


def _pair(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. ct=scans/p1/ct), got {text!r}")
    return name.strip(), path.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("sources", nargs="+", type=_pair, metavar="NAME=PATH",
                        help="a spec modality name and its file or DICOM series folder")
    parser.add_argument("--spec", required=True, metavar="SPEC", help="the study spec YAML")
    parser.add_argument("--out", default="study.png", metavar="PNG", help="output PNG (default: study.png)")
    parser.add_argument("--patient-id", default=None, metavar="KEY", help="patient key for the title and errors")
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default: 100)")


def run(args: argparse.Namespace) -> int:
    """Preprocess the study, draw it and write the PNG.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 when the PNG is written, 2 for a duplicated modality name (other
        errors propagate as ``MedmultiError`` and the dispatcher maps them).
    """
    from ..spec import StudySpec
    from ..study.picture import inspect_study
    from ..text import printable

    names = [name for name, _ in args.sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        print(f"medmulti inspect: modality given twice: {dup}", file=sys.stderr)
        return 2
    spec = StudySpec.from_yaml(args.spec)
    with writing(args.out, "the picture"):
        inspect_study(dict(args.sources), spec, args.out, patient_id=args.patient_id, dpi=args.dpi)
    print(f"wrote {printable(args.out)}")
    return 0
