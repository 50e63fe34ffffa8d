"""Split a manifest by patient into train/val/test, or into cross-validation folds.

Writes a copy of MANIFEST (next to it) with a ``split`` column (``--ratios``) or a
``fold`` column (``--folds K``; ``test`` rows keep their split and get no fold). Every
row of a patient lands in one split or fold, each split holds every ``--stratify`` value
in proportion (within one patient), and the same ``--seed`` gives the same split. Cells
are copied unchanged (none is prefixed against spreadsheet formulas: the loader must
read them back as written). Prints patients per split (or fold) and label. Exit codes:
0 written, 1 manifest problem, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from .arguments import add_data_root_argument, positive_int

HELP = "split a manifest by patient into train/val/test or folds (exit 0 written, 1 manifest problem, 2 usage error)"


def _ratios(text: str) -> tuple[float, ...]:
    from ..manifest.split import parse_ratios

    try:
        return parse_ratios(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``split`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest CSV")
    parser.add_argument("--out", required=True, metavar="MANIFEST2",
                        help="the new manifest, in the same folder as MANIFEST (never MANIFEST itself)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratios", type=_ratios, metavar="TRAIN,VAL[,TEST]",
                     help="shares of patients per split, summing to 1 (e.g. 0.7,0.15,0.15): writes 'split'")
    how.add_argument("--folds", type=positive_int, metavar="K",
                     help="K cross-validation folds over the non-test rows: writes 'fold' (0..K-1)")
    parser.add_argument("--stratify", metavar="COLUMN", default=None,
                        help="keep this column's values (a label) in proportion in every split or fold")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--spec", metavar="SPEC", default=None,
                        help="the study spec: read the inputs' DICOM headers and keep keys that name one person "
                             "(same PatientID, or name + birth date) in one split or fold")
    add_data_root_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing MANIFEST2")


def run(args: argparse.Namespace) -> int:
    """Split, write the new manifest, print patients per split and label.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 written, 1 manifest problem (raised as MedmultiError), 2 usage error.
    """
    from ..manifest.split import split_manifest
    from ..text import printable

    try:
        result = split_manifest(args.manifest, args.out, ratios=args.ratios, folds=args.folds,
                                stratify=args.stratify, seed=args.seed, overwrite=args.overwrite, spec=args.spec,
                                data_root=args.data_root)
    except ValueError as exc:
        print(f"medmulti split: {printable(exc)}", file=sys.stderr)
        return 2
    labels = sorted({label for counts in result.patients.values() for label in counts})
    print(f"{result.column:<6} {'patients':>8}" + "".join(f" {printable(label or '-')[:12]:>12}" for label in labels))
    for value, counts in result.patients.items():
        print(f"{value:<6} {sum(counts.values()):>8}" + "".join(f" {counts.get(label, 0):>12}" for label in labels))
    if result.held_out:
        print(f"{result.held_out} test patient(s) held out of the folds")
    if result.merged:
        print(f"{result.merged} patient key(s) name a person another key names: kept together")
    print(f"wrote {printable(result.path)}")
    return 0
