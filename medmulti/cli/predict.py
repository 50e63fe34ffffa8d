"""Apply a trained run to a manifest: a CSV of ``patient_id`` and ``p_<class>`` columns;
or to one patient given by its files (``--source NAME=PATH``, repeated).

The manifest needs no ``split`` or label columns (new patients): every row is scored,
``--split`` choosing rows of a manifest that has splits. With ``--source`` the patient
goes through the run's checks, policies and preprocessing as a manifest row would;
a folder holding several series is narrowed to one by the spec's ``select`` rules, as
``medmulti scan`` chooses; the probabilities per class, what became of each input and
which series was chosen (and why) are printed (and written with ``--json OUT``). The
probabilities are temperature-scaled when the run folder holds a calibration
(``medmulti evaluate RUN --calibrate``); ``--no-calibration`` gives the model's raw ones.

Exit codes: 0 written, 1 data problem, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .arguments import add_run_data_arguments, writing

HELP = "write class probabilities per patient from a trained run (exit 0 written, 1 data problem, 2 usage error)"


def source_pair(text: str) -> tuple[str, str]:
    """Parse ``--source NAME=PATH`` (argparse type).

    Parameters
    ----------
    text : str
        ``ct=scans/new/ct``: a spec modality name, ``=``, a path.

    Returns
    -------
    (str, str)
        The name and the path.

    Raises
    ------
    argparse.ArgumentTypeError
        No ``=``, or an empty name or path.
    """
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. ct=scans/new/ct), got {text!r}")
    return name.strip(), path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `medmulti train`")
    parser.add_argument("manifest", metavar="MANIFEST", nargs="?", default=None,
                        help="the manifest CSV of the patients to score (split and label columns optional)")
    parser.add_argument("--out", metavar="CSV", default=None, help="output CSV (default RUN_DIR/predictions.csv)")
    parser.add_argument("--split", action="append", choices=["train", "val", "test"],
                        help="only this split (repeatable; default: every row, those without a split included)")
    parser.add_argument("--source", metavar="NAME=PATH", action="append", type=source_pair, default=None,
                        help="instead of MANIFEST, score one patient: a spec modality and its DICOM series folder, "
                             "DICOM file or NIfTI file; a folder of several series (a patient's export) is narrowed "
                             "to one by the spec's select rules (repeatable; a modality left out is absent)")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="with --source: also write the probabilities and inputs as JSON")
    parser.add_argument("--patient-id", metavar="KEY", default="patient",
                        help="with --source: the key naming the patient in messages and the JSON (default patient)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="write the model's raw probabilities, ignoring the run's calibration.json")
    add_run_data_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Predict: write the manifest's CSV and print where it is, or print (and with
    ``--json`` write) one patient's probabilities and inputs.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 written, 1 data problem (raised as MedmultiError), 2 usage error (MANIFEST
        and ``--source`` both or neither, an option of the other form, a ``--source``
        name twice or not in the run's spec).
    """
    from pathlib import Path

    from ..text import printable
    from ..training import predict
    from ..training.evaluation import CALIBRATION_FILE

    usage = _usage_error(args)
    if usage:
        print(f"medmulti predict: {usage}", file=sys.stderr)
        return 2
    if args.source:
        return _predict_patient(args)
    path = predict(args.run_dir, args.manifest, out=args.out, splits=args.split, cache_dir=args.cache,
                   data_root=args.data_root, on_missing=args.on_missing, on_corrupt=args.on_corrupt,
                   progress=not args.no_progress, calibration=not args.no_calibration)
    calibrated = not args.no_calibration and (Path(args.run_dir) / CALIBRATION_FILE).is_file()
    how = "calibrated with the run's temperature" if calibrated else "uncalibrated"
    print(f"predictions written to {printable(path)} ({how})")
    return 0


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of arguments, or None."""
    if args.manifest is None and not args.source:
        return "give MANIFEST, or --source NAME=PATH (repeated) for one patient"
    if args.manifest is not None and args.source:
        return "give MANIFEST or --source, not both"
    if args.source:
        names = [name for name, _ in args.source]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return f"--source {twice[0]}=... is given twice"
        for option, value in (("--out", args.out), ("--split", args.split), ("--data-root", args.data_root)):
            if value:
                return f"{option} applies to a MANIFEST, not to --source (use --json OUT)"
    else:
        for option, value in (("--json", args.json), ("--patient-id", args.patient_id != "patient")):
            if value:
                return f"{option} applies to --source, not to a MANIFEST"
    return None


def _predict_patient(args: argparse.Namespace) -> int:
    """Score the patient of ``--source``, print the result, write ``--json``."""
    import json

    from ..text import printable
    from ..training import predict_patient
    from ..training.run_folder import read_card
    from .output import format_table

    spec = read_card(args.run_dir)[2]
    unknown = [name for name, _ in args.source if name not in spec.names]
    if unknown:
        print(f"medmulti predict: --source {unknown[0]}=...: not a modality of the run's spec "
              f"({', '.join(spec.names)})", file=sys.stderr)
        return 2
    record = predict_patient(args.run_dir, dict(args.source), patient_id=args.patient_id, cache_dir=args.cache,
                             on_missing=args.on_missing, on_corrupt=args.on_corrupt,
                             progress=not args.no_progress, calibration=not args.no_calibration)
    for line in _patient_lines(record):
        print(line)
    print("\n".join(format_table([(name, _shown(d["source"]), _status(d)) for name, d in record["inputs"].items()],
                                 ("modality", "input", "status"))))
    for name, entry in record["inputs"].items():
        for line in _selection_lines(name, entry.get("selection")):
            print(line)
    if args.json:
        with writing(args.json, "the JSON record"), open(args.json, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1)
            fh.write("\n")
        print(f"written to {printable(args.json)}")
    return 0


def _patient_lines(record: dict[str, Any]) -> list[str]:
    """The prediction line and the probability table."""
    from ..text import printable
    from .output import format_table

    probs = record["probabilities"]
    how = (f"calibrated with the run's temperature {record['temperature']:.3f}" if record["calibrated"]
           else "uncalibrated")
    predicted = record["predicted"]
    shown = (", ".join(predicted) or "none at or above 0.5") if isinstance(predicted, list) else predicted
    lines = [f"{printable(record['patient_id'])}: {printable(shown)} ({how})"]
    lines += format_table([(c, f"{p:.6f}") for c, p in probs.items()], ("class", "probability"))
    return lines


def _selection_lines(name: str, selection: dict[str, Any] | None) -> list[str]:
    """What the spec's rules chose in a folder of several series, and what they left out."""
    from ..text import printable

    if selection is None:
        return []
    n = selection["series_in_folder"]
    if selection["chosen"] is None:
        lines = [f"{name}: nothing chosen of the {n} series in the folder: {selection['reason']}"]
    else:
        lines = [f"{name}: {selection['chosen']} ({selection['images']} image(s), {printable(selection['path'])}) "
                 f"chosen of the {n} series in the folder: {selection['reason']}"]
        if selection["study"]:
            lines.append(f"{name}: {selection['study']}")
    lines += [f"{name}: {left['series']} (study {left['study']}, {left['images']} image(s)) left out: "
              f"{left['reason']}" for left in selection["left_out"]]
    return lines


def _shown(source: str | None) -> str:
    return "-" if source is None else source


def _status(entry: dict[str, Any]) -> str:
    return str(entry["status"]) + (f" ({entry['reason']})" if entry["reason"] else "")
