"""Write the sample cohort: phantoms as real CT DICOM series, MR NIfTI and X-ray DICOM files.

OUT receives one folder per patient, ``manifest.csv``, ``spec.yaml``,
``findings.csv`` (ground truth) and ``faults.json`` (the injected faults, empty
with ``--no-faults``). Then: ``medmulti validate OUT/manifest.csv --spec OUT/spec.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from .arguments import positive_int

HELP = "write the generated sample cohort (CT/MR/X-ray files, manifest, spec, faults)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sample-data`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("out", metavar="OUT", help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--patients", type=positive_int, default=40, metavar="N", help="number of patients (40)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    parser.add_argument("--faults", action=argparse.BooleanOptionalAction, default=True,
                        help="inject the faults validate must find, listed in OUT/faults.json (default: on)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="processes writing patients in parallel (1); the output does not depend on it")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate the cohort.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 on success, 2 on a usage error (too few patients, OUT not empty).
    """
    from pathlib import Path

    from ..examples.cohort import make_sample_cohort
    from ..text import printable

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        print(f"medmulti sample-data: output folder {printable(str(out))!r} is not empty; choose another OUT or "
              "add --overwrite", file=sys.stderr)
        return 2
    try:
        cohort = make_sample_cohort(args.out, n_patients=args.patients, seed=args.seed, faults=args.faults,
                                    progress=not args.no_progress, overwrite=args.overwrite,
                                    workers=args.workers)
    except ValueError as exc:
        print(f"medmulti sample-data: {printable(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {len(cohort.patient_ids)} patients to {printable(cohort.root)}")
    print(f"manifest: {printable(cohort.manifest)}")
    print(f"spec:     {printable(cohort.spec)}")
    print(f"faults:   {printable(cohort.faults)} ({len(cohort.fault_records())} injected)")
    print(f"next: medmulti validate {printable(cohort.manifest)} --spec {printable(cohort.spec)}")
    return 0
