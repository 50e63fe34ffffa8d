"""Check a manifest and every file it names before training; report every problem.

Prints a summary table (patients OK / with errors, problems per check) and one line
per problem: ``patient_id  modality  path  check  what happened -> what to do``. Exit codes: 0 no
errors (warnings allowed), 1 errors found, 2 usage error (bad arguments, spec or
manifest not found or malformed).
"""

from __future__ import annotations

import argparse
import sys

from .arguments import add_data_root_argument, add_executor_arguments, executor_options, positive_int, writing

HELP = "check a manifest and its files before training (exit 0 clean, 1 problems, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``validate`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest CSV")
    parser.add_argument("--spec", required=True, metavar="SPEC", help="the study spec YAML")
    parser.add_argument("--json", metavar="FILE", help="write the problems as a JSON list of records")
    parser.add_argument("--html", metavar="FILE", help="write an HTML report with a thumbnail per patient")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="worker processes (default: all cores)")
    parser.add_argument("--deep", action="store_true", help="also decode every pixel (slower)")
    add_executor_arguments(parser)
    add_data_root_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Validate, print the report, write the optional files.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 clean, 1 errors found, 2 usage error.
    """
    from ..errors import ManifestError, MissingFileError, SpecError
    from ..manifest import validate_manifest
    from ..spec import StudySpec

    try:
        spec = StudySpec.from_yaml(args.spec)
    except (SpecError, MissingFileError) as exc:
        print(f"medmulti validate: spec: {exc}", file=sys.stderr)
        return 2
    try:
        report = validate_manifest(args.manifest, spec, workers=args.workers, deep=args.deep,
                                   data_root=args.data_root, progress=not args.no_progress,
                                   thumbnails=bool(args.html), **executor_options(args))
    except (ManifestError, MissingFileError) as exc:
        print(f"medmulti validate: manifest: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    for line in report.lines():
        print(line)
    if args.json:
        with writing(args.json, "the JSON report"):
            report.to_json(args.json)
    if args.html:
        with writing(args.html, "the HTML report"):
            report.to_html(args.html)
    return 0 if report.ok else 1
