"""Apply a trained run to a manifest: a CSV of ``patient_id`` and ``p_<class>`` columns.

The probabilities are temperature-scaled when the run folder holds a calibration
(``medmulti evaluate RUN --calibrate``); ``--no-calibration`` writes the model's raw ones.

Exit codes: 0 written, 1 data problem, 2 usage error.
"""

from __future__ import annotations

import argparse

from .arguments import add_run_data_arguments

HELP = "write class probabilities per patient from a trained run (exit 0 written, 1 data problem, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `medmulti train`")
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest CSV of the patients to score")
    parser.add_argument("--out", metavar="CSV", default=None, help="output CSV (default RUN_DIR/predictions.csv)")
    parser.add_argument("--split", action="append", choices=["train", "val", "test"],
                        help="only this split (repeatable; default: every row)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="write the model's raw probabilities, ignoring the run's calibration.json")
    add_run_data_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Predict and print where the CSV is.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 written, 1 data problem (raised as MedmultiError).
    """
    from pathlib import Path

    from ..text import printable
    from ..training import predict
    from ..training.evaluation import CALIBRATION_FILE

    path = predict(args.run_dir, args.manifest, out=args.out, splits=args.split, cache_dir=args.cache,
                   data_root=args.data_root, on_missing=args.on_missing, on_corrupt=args.on_corrupt,
                   progress=not args.no_progress, calibration=not args.no_calibration)
    calibrated = not args.no_calibration and (Path(args.run_dir) / CALIBRATION_FILE).is_file()
    how = "calibrated with the run's temperature" if calibrated else "uncalibrated"
    print(f"predictions written to {printable(path)} ({how})")
    return 0
