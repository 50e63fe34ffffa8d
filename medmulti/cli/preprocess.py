"""Fill the preprocessing cache for a manifest, in parallel, with a progress bar and a summary.

Every input of every patient is read, co-registered onto its study's reference
grid, intensity-normalised per the spec and written to the cache as one ``.npy``
per (patient, modality). Inputs already cached (same files, same spec section,
same medmulti version) are skipped, so a rerun after an interruption resumes.
Exit codes: 0 every input cached, 1 some inputs failed (listed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from .arguments import add_data_root_argument, add_executor_arguments, executor_options, non_negative_int, writing

HELP = "preprocess a manifest into the cache (exit 0 all cached, 1 failures, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``preprocess`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest CSV")
    parser.add_argument("--spec", required=True, metavar="SPEC", help="the study spec YAML")
    parser.add_argument("--cache", required=True, metavar="DIR", help="the cache folder (created if absent)")
    parser.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                        help="worker processes (default: all cores; 0 or 1: in this process)")
    parser.add_argument("--split", action="append", choices=["train", "val", "test"],
                        help="only this split (repeatable; default: every row)")
    parser.add_argument("--float16", action="store_true", help="store arrays as float16 (half the disk)")
    add_executor_arguments(parser)
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    add_data_root_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Preprocess and print the summary.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 all inputs cached, 1 failures, 2 usage error.
    """
    from ..data.cache_fill import preprocess_manifest
    from ..errors import ManifestError, MissingFileError, SpecError
    from ..spec import StudySpec

    try:
        spec = StudySpec.from_yaml(args.spec)
    except (SpecError, MissingFileError) as exc:
        print(f"medmulti preprocess: spec: {exc}", file=sys.stderr)
        return 2
    try:
        summary = preprocess_manifest(args.manifest, spec, args.cache, splits=args.split, workers=args.workers,
                                      dtype="float16" if args.float16 else "float32",
                                      data_root=args.data_root, progress=not args.no_progress,
                                      **executor_options(args))
    except (ManifestError, MissingFileError) as exc:
        print(f"medmulti preprocess: manifest: {exc}", file=sys.stderr)
        return 2
    print(summary.summary())
    if args.json:
        with writing(args.json, "the JSON summary"), open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary.to_dict(), fh, indent=1)
    return 0 if summary.ok else 1
