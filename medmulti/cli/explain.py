"""Explain a trained run's prediction for one patient: Grad-CAM per modality, fusion weights.

Writes ``gradcam_<modality>.png`` (heat map over the modality's input at the model's grid;
three orthogonal views through the maximum for 3D) and ``explain.json`` (probabilities,
the heat map maxima, the fusion's weight per modality for attention and gated fusion)
into ``--out``. The patient is named by its manifest key.
Exit codes: 0 written, 1 unknown patient or a data problem, 2 usage error.
"""

from __future__ import annotations

import argparse
import json

from .arguments import add_run_data_arguments

HELP = "Grad-CAM heat maps and fusion weights for one patient (exit 0 written, 1 data problem, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``explain`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `medmulti train`")
    parser.add_argument("--patient", metavar="ID", required=True,
                        help="the patient's manifest key (patient_id, or patient_id/study_id with studies)")
    parser.add_argument("--manifest", metavar="MANIFEST", default=None,
                        help="manifest CSV (default: the one the run was trained on)")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default RUN_DIR/explain)")
    parser.add_argument("--class", dest="target", metavar="CLASS", default=None,
                        help="the class to explain (default: the predicted class)")
    parser.add_argument("--json", action="store_true", help="print explain.json to standard output")
    add_run_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Explain and print what was written.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 written; a :class:`~medmulti.errors.MedmultiError` (unknown patient, data
        problem) gives 1 via the CLI.
    """
    from pathlib import Path

    from ..text import printable
    from ..training.explain import EXPLAIN_FILE, explain

    doc = explain(args.run_dir, args.patient, args.manifest, out=args.out, target=args.target, cache_dir=args.cache,
                  data_root=args.data_root, on_missing=args.on_missing, on_corrupt=args.on_corrupt)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    out = Path(args.out) if args.out is not None else Path(args.run_dir) / "explain"
    probs = ", ".join(f"{printable(c)} {p:.3f}" for c, p in doc["probabilities"].items())
    print(printable(f"patient {doc['patient_id']} ({doc['split']}): {probs}; "
                    f"explaining {doc['target_class']}"))
    weights = doc["fusion"]["weights"]
    for name, entry in doc["modalities"].items():
        peak = "absent" if not entry["present"] else ("no heat" if entry["peak_index"] is None else
                                                      f"peak at {tuple(entry['peak_index'])}")
        share = "" if weights is None else f", {doc['fusion']['method']} weight {weights[name]:.3f}"
        print(printable(f"  {name}: {peak}{share}"))
    print(f"written to {printable(out)} ({EXPLAIN_FILE} and one gradcam_<modality>.png per modality)")
    return 0
