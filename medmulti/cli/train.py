"""Train a fusion model on a manifest and write a run folder.

RUN_DIR receives the best checkpoint (``model.keras``), ``history.csv``,
``metrics.json`` (test accuracy, ROC AUC per class, confusion matrix),
``curves.png``, ``confusion_roc.png``, test predictions and ``run_card.json`` (spec,
manifest sha256, versions, seed, data counts). Use ``--modalities ct`` for a
single-modality model. ``--cv K`` trains K folds into RUN_DIR/fold-k/ (fold k held out
as the validation split) and writes RUN_DIR/cv_summary.json with each fold's metrics,
their mean and standard deviation. Every completed epoch is backed up in
RUN_DIR/backup (removed when training completes): after a kill or a failure past the
first epoch, run the same command with ``--resume`` to continue; ``--overwrite`` starts
again. ``--strategy mirrored`` trains on every GPU of this host, ``--mixed-precision`` in
16-bit branches (docs/scaling.md). Exit codes: 0 trained, 1 data problem, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# kept here (not imported from medmulti.models) so `--help` does not import Keras; a test keeps them equal
FUSION_CHOICES = ("concat", "attention", "gated")
BACKBONE_CHOICES = ("densenet121", "efficientnet_b0", "mobilenet_v2", "resnet50")

from ..text import printable
from .arguments import (
    add_data_root_argument,
    add_executor_arguments,
    add_policy_arguments,
    executor_options,
    positive_int,
)
from .output import format_table, print_exclusions, print_metrics

HELP = "train a fusion model on a manifest (exit 0 trained, 1 data problem, 2 usage error)"

# kept here (not imported from medmulti.training) so `--help` does not import Keras; a test keeps them equal
LR_SCHEDULES = ("constant", "cosine", "plateau")
STRATEGIES = ("default", "mirrored")


def _folds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected a number of folds >= 2, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training/model options shared by ``train`` and ``demo``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("--epochs", type=positive_int, default=20, help="maximum epochs (default 20)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="patients per batch (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--fusion", choices=FUSION_CHOICES, default="concat", help="fusion (default concat)")
    parser.add_argument("--width", type=positive_int, default=8, help="filters of the first CNN block (default 8)")
    parser.add_argument("--depth", type=positive_int, default=3, help="CNN blocks per branch (default 3)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0: off)")
    parser.add_argument("--dropout", type=_rate, default=0.2, help="dropout rate (default 0.2)")
    parser.add_argument("--modality-dropout", type=_rate, default=0.0,
                        help="probability of hiding a modality per sample in training (default 0)")
    parser.add_argument("--backbone", choices=BACKBONE_CHOICES, default=None,
                        help="keras.applications backbone for 2D inputs (random init, nothing downloaded)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest CSV")
    parser.add_argument("--spec", required=True, metavar="SPEC", help="the study spec YAML")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder (created; must be empty)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="preprocessing cache folder (recommended; see `medmulti preprocess`)")
    parser.add_argument("--modalities", nargs="+", metavar="NAME", default=None,
                        help="train on these modalities only (e.g. --modalities ct)")
    parser.add_argument("--monitor", choices=["val_loss", "val_auc", "loss"], default="val_loss",
                        help="what picks the best checkpoint (default val_loss)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="allow a non-empty RUN_DIR: train again from scratch")
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in RUN_DIR from its last backed-up epoch (same options)")
    parser.add_argument("--cv", type=_folds, default=0, metavar="K",
                        help="K-fold cross-validation into RUN_DIR/fold-k/ (folds from the manifest's 'fold' "
                             "column, else assigned by patient over the non-test rows)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                        help="learning-rate schedule per epoch (default constant)")
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs into RUN_DIR/tensorboard")
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="default: one device; mirrored: tf.distribute.MirroredStrategy, one replica per GPU of "
                             "this host, each batch split evenly across them (--batch-size a multiple of the GPUs)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="compute the branches in mixed_float16 on GPU, mixed_bfloat16 on CPU (fusion and head "
                             "stay float32)")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the training step with XLA (the run is then not op-deterministic: the same "
                             "seed may give slightly different numbers), or not (default: without XLA)")
    add_policy_arguments(parser)
    add_data_root_argument(parser)
    add_executor_arguments(parser)
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Train and print the test metrics.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 trained, 1 data problem (raised as MedmultiError), 2 usage error.
    """
    from ..errors import DeviceError, MissingFileError, SpecError
    from ..models import ModelOptions
    from ..spec import StudySpec
    from ..training import CVResult, DataOptions, FitOptions, train

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not (args.overwrite or args.resume):
        print(f"medmulti train: run folder {printable(str(out))!r} is not empty; choose another --out or add "
              "--overwrite (or --resume to continue an interrupted run)", file=sys.stderr)
        return 2
    try:
        spec = StudySpec.from_yaml(args.spec)
    except (SpecError, MissingFileError) as exc:
        print(f"medmulti train: spec: {exc}", file=sys.stderr)
        return 2
    if args.jit_compile and args.strategy != "default":
        print(f"medmulti train: --jit-compile does not work with --strategy {args.strategy} (the XLA-compiled step "
              "cannot read the other replicas' variables); drop --jit-compile", file=sys.stderr)
        return 2
    try:
        model = ModelOptions(fusion=args.fusion, width=args.width, depth=args.depth, dropout=args.dropout,
                             modality_dropout=args.modality_dropout, backbone=args.backbone)
        deterministic = not args.jit_compile  # Keras compiles with XLA only without op determinism
        fit = FitOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         patience=args.patience, monitor=args.monitor, seed=args.seed, cv=args.cv,
                         lr_schedule=args.lr_schedule, tensorboard=args.tensorboard, strategy=args.strategy,
                         mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
                         deterministic=deterministic)
        data = DataOptions(cache_dir=args.cache, modalities=args.modalities, on_missing=args.on_missing,
                           on_corrupt=args.on_corrupt, data_root=args.data_root, **executor_options(args))
        result = train(args.manifest, spec, args.out, model=model, fit=fit, data=data, progress=not args.no_progress,
                       overwrite=args.overwrite, resume=args.resume)
    except ValueError as exc:
        print(f"medmulti train: {printable(exc)}", file=sys.stderr)
        return 2
    except DeviceError as exc:  # a batch the replicas cannot share: a usage error
        print(f"medmulti train: {exc.cli_text()}", file=sys.stderr)
        return 2
    if isinstance(result, CVResult):
        _print_folds(result)
        return 0
    print_exclusions(result.excluded)
    print_metrics("model", result.metrics)
    print(f"best epoch {result.best_epoch}, {result.seconds:.0f} s; run folder: {printable(result.run_dir)}")
    return 0


def _print_folds(result: Any) -> None:
    """One line per fold (held-out and test ROC AUC and accuracy), then the mean and SD."""
    def cell(metrics: dict, name: str) -> str:
        value = metrics.get(name)
        return "-" if value is None else f"{value:.3f}"

    summary = result.summary
    rows = [[f["fold"], f["best_epoch"], cell(f["val"], "auc"), cell(f["val"], "accuracy"), cell(f["test"], "auc"),
             cell(f["test"], "accuracy")] for f in summary["folds"]]
    for what, numbers in (("mean", summary["mean"]), ("SD", summary["std"])):
        rows.append([what, "", *(cell(numbers.get(s, {}), m) for s in ("val", "test") for m in ("auc", "accuracy"))])
    for line in format_table(rows, ["fold", "best epoch", "held-out AUC", "held-out acc", "test AUC", "test acc"]):
        print(line)
    print(f"{len(summary['folds'])} folds ({summary['fold_source']}), {result.seconds:.0f} s; "
          f"summary: {printable(result.run_dir / 'cv_summary.json')}")
