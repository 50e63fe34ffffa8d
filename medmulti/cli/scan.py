"""Scan an export folder into a manifest: one series per spec modality and patient, keys without PHI.

Walks ROOT in any nesting (a DICOMDIR is used when present, never required),
recognises DICOM and NIfTI files by content, reads headers only (in worker processes,
with a progress bar), groups patient -> study -> series, and chooses one series per
spec modality by the modality's ``select`` rules (localizers, derived and tiny series
left out; preferences in order). Writes MANIFEST (keys: pseudonyms from a keyed hash of
the PatientID, ``--key patient-id`` keeps PatientIDs) and the scan report beside it
(``<stem>.scan.txt``, ``.scan.json``, ``.scan.html``): every series seen, the one chosen
and why, those left out and why. Prints a summary and one line per patient with a
modality missing or ambiguous. Exit codes: 0 written, every patient complete; 1 written
with a required modality missing or a choice ambiguous (or nothing usable found); 2
usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from .arguments import add_executor_arguments, executor_options, positive_int, writing

HELP = "scan an export folder into a manifest, series chosen by the spec's rules (exit 0 complete, 1 gaps, 2 usage)"


def _nifti(text: str) -> tuple[str, str]:
    name, sep, pattern = text.partition("=")
    if not sep or not name.strip() or not pattern.strip():
        raise argparse.ArgumentTypeError(f"expected MODALITY=PATTERN (e.g. mr='sub-{{key}}/anat/*_T1w.nii.gz'), "
                                         f"got {text!r}")
    return name.strip(), pattern.strip()


def _split(text: str) -> tuple[float, float, float]:
    from ..scanning.scanner import parse_split

    try:
        return parse_split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``scan`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("root", metavar="ROOT", help="the export folder (DICOM in any nesting, NIfTI by pattern)")
    parser.add_argument("--spec", required=True, metavar="SPEC", help="the study spec YAML (its select: blocks)")
    parser.add_argument("--out", required=True, metavar="MANIFEST",
                        help="the manifest to write; the report goes beside it (MANIFEST stem + .scan.txt/json/html)")
    parser.add_argument("--nifti", type=_nifti, action="append", default=[], metavar="MODALITY=PATTERN",
                        help="NIfTI files of a modality, a glob relative to ROOT with {key} where the patient is "
                             "named (default: a sub-<key> folder); replaces the spec's select.nifti; repeatable")
    parser.add_argument("--key", choices=("pseudonym", "patient-id"), default="pseudonym",
                        help="manifest keys: a keyed hash of the PatientID (default), or the PatientID itself "
                             "(identifying: warns)")
    parser.add_argument("--secret", metavar="FILE", default=None,
                        help="the secret of the pseudonyms (default ~/.config/medmulti/scan-secret, created with "
                             "mode 0600); outside ROOT and the manifest's folder; the same secret gives the same keys")
    parser.add_argument("--labels", metavar="CSV", default=None, help="a CSV of labels to join")
    parser.add_argument("--label-key", choices=("patient-id", "accession", "key"), default="patient-id",
                        help="what the labels file's key column holds: PatientID (column PatientID or patient_id), "
                             "AccessionNumber (AccessionNumber or accession), or the manifest key (key or patient_id)")
    parser.add_argument("--date-column", metavar="COLUMN", default=None,
                        help="a column of the labels file with each patient's date: among several studies the "
                             "closest is taken (default: the most recent)")
    parser.add_argument("--split", type=_split, default=None, metavar="train=0.7,val=0.15,test=0.15",
                        help="fill the split column by patient, stratified by label (default: left empty for "
                             "`medmulti split`)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of --split (default 0)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="worker processes reading headers (default: all cores)")
    add_executor_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing manifest and report")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Scan, write the manifest and the report, print the summary.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 written and complete, 1 written with gaps (or nothing usable), 2 usage error.
    """
    from ..errors import MissingFileError, SpecError, UnsafePathError
    from ..scanning import scan
    from ..spec import StudySpec
    from ..text import printable

    if not os.path.isdir(args.root):
        print(f"medmulti scan: {printable(args.root)} is not a folder", file=sys.stderr)
        return 2
    try:
        spec = StudySpec.from_yaml(args.spec)
    except (SpecError, MissingFileError) as exc:
        print(f"medmulti scan: spec: {exc}", file=sys.stderr)
        return 2
    nifti: dict[str, list[str]] = {}
    for name, pattern in args.nifti:
        nifti.setdefault(name, []).append(pattern)
    try:
        with writing(args.out, "the manifest and the scan report"):
            result = scan(args.root, spec, out=args.out, nifti=nifti or None, key=args.key, secret=args.secret,
                          labels=args.labels, label_key=args.label_key, date_column=args.date_column,
                          split=args.split, seed=args.seed, workers=args.workers, progress=not args.no_progress,
                          overwrite=args.overwrite, **executor_options(args))
    except (ValueError, UnsafePathError) as exc:
        print(f"medmulti scan: {printable(exc)}", file=sys.stderr)
        return 2
    print(result.summary())
    for line in result.lines():
        print(line)
    paths = result.report_paths(args.out)
    print(f"report: {printable(paths['text'])}, {printable(paths['json'].name)}, {printable(paths['html'].name)}")
    return 0 if result.ok else 1
