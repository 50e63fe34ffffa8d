"""Score a trained run (a ``medmulti train`` folder) on a split of a manifest.

Writes ``evaluation_<split>.json``, ``predictions_<split>.csv`` and
``confusion_roc_<split>.png`` into RUN_DIR and prints accuracy and ROC AUC.
Exit codes: 0 scored, 1 data problem, 2 usage error.
"""

from __future__ import annotations

import argparse
import json

from .arguments import add_data_root_argument, add_policy_arguments
from .output import print_metrics

HELP = "score a trained run on a manifest split (exit 0 scored, 1 data problem, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `medmulti train`")
    parser.add_argument("--manifest", metavar="MANIFEST", default=None,
                        help="manifest CSV (default: the one the run was trained on)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test", help="split (default test)")
    parser.add_argument("--cache", metavar="DIR", default=None, help="preprocessing cache (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--no-write", action="store_true",
                        help="write nothing into RUN_DIR (score a read-only or shared run folder)")
    add_policy_arguments(parser, default=None)
    add_data_root_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 scored, 1 data problem (raised as MedmultiError).
    """
    from ..training import evaluate

    metrics = evaluate(args.run_dir, args.manifest, split=args.split, cache_dir=args.cache,
                       data_root=args.data_root, on_missing=args.on_missing, on_corrupt=args.on_corrupt,
                       write=not args.no_write, progress=not args.no_progress)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(args.split, metrics)
        print(f"confusion matrix {metrics['confusion_matrix']}")
    return 0
