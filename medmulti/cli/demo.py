"""The main job, end to end, on a freshly generated sample cohort.

First reads the real example files bundled with pydicom and nibabel and prints what
was read (``--files-only`` stops there). Then generates the sample cohort (real DICOM series, NIfTI and X-ray files; clean), validates
it, preprocesses it into the cache, trains the fusion model and, the same way on the
same split, one model per single modality, evaluates each on the test split and prints
the comparison table. Writes ``DIR/demo_summary.json``:
``{"fusion": {"test_auc", "test_accuracy", "subsets"}, "ct": {...}, "mr": {...}, "xray": {...},
"seconds": ...}``, where ``fusion.subsets`` maps each non-empty set of modalities (``"ct+mr"``)
to the fusion model's test ROC AUC with the others masked out (also printed as a table);
each run folder holds the model, metrics, curves and ROC pictures.
Exit codes: 0 done, 1 a problem (validation failed, a data error), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from ..geometry.orientation import orientation_code
from .arguments import positive_int
from .output import format_subsets, format_table

HELP = "run the main job on a generated sample cohort: validate, preprocess, train fusion and single-modality models"

#: defaults tuned so the demo finishes in a few minutes on 2 CPU cores (see benchmarks/RESULTS.md)
DEMO_PATIENTS = 300
DEMO_EPOCHS = 30
DEMO_BATCH = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("--out", metavar="DIR", default="medmulti_demo",
                        help="output folder (default ./medmulti_demo)")
    parser.add_argument("--patients", type=positive_int, default=DEMO_PATIENTS,
                        help=f"sample cohort size (default {DEMO_PATIENTS})")
    parser.add_argument("--epochs", type=positive_int, default=DEMO_EPOCHS,
                        help=f"maximum epochs per model (default {DEMO_EPOCHS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cohort and of training (default 0)")
    parser.add_argument("--fusion", choices=["concat", "attention", "gated"], default="concat",
                        help="fusion of the branch embeddings (default concat)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes for validation and preprocessing (default: all cores)")
    parser.add_argument("--no-single", action="store_true", help="train only the fusion model")
    parser.add_argument("--files-only", action="store_true",
                        help="only read the bundled real example files and print the table (seconds)")
    parser.add_argument("--paths", action="store_true", help="print each bundled file's path in the table")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _sources():
    from pathlib import Path

    from nibabel.testing import data_path
    from pydicom.data import get_testdata_file

    pyd = Path(get_testdata_file("CT_small.dcm")).parent
    nib = Path(data_path)
    cr = pyd / "dicomdirtests" / "77654033" / "CR1"
    return [
        ("CT slice", pyd / "CT_small.dcm", {}),
        ("MR slice", pyd / "MR_small.dcm", {}),
        ("MR slice, JPEG 2000", pyd / "MR_small_jp2klossless.dcm", {}),
        ("MR slice, RLE", pyd / "MR_small_RLE.dcm", {}),
        ("CT slice, JPEG 2000 (lossy)", pyd / "693_J2KI.dcm", {}),
        ("CT series folder", pyd / "dicomdirtests" / "98892001" / "CT5N", {}),
        ("CR radiograph (MONOCHROME1)", cr, {}),
        ("NIfTI-1", nib / "anatomical.nii", {}),
        ("NIfTI-1 .gz, 4D volume 0", nib / "example4d.nii.gz", {"volume": 0}),
        ("NIfTI-2 .gz, 4D volume 0", nib / "example_nifti2.nii.gz", {"volume": 0}),
    ]


def print_bundled_table(*, paths: bool = False, echo=print) -> int:
    """Read every bundled real example file with ``read_image`` and print a table.

    Each DICOM file, DICOM series folder and NIfTI file bundled with pydicom and
    nibabel is summarised as modality, array shape, spacing (mm), orientation code
    and value range. Nothing is downloaded.

    Parameters
    ----------
    paths : bool
        Also print each source's path.
    echo : callable
        Where the lines go.

    Returns
    -------
    int
        0 when every source was read, 1 otherwise.
    """
    from ..errors import MedmultiError
    from ..io import read_image

    rows = []
    status = 0
    for label, path, kwargs in _sources():
        try:
            img = read_image(path, **kwargs)
        except MedmultiError as exc:
            rows.append((label, "error", type(exc).__name__, "", "", "", str(path)))
            status = 1
            continue
        spacing = " x ".join(f"{s:.3g}" for s in img.spacing)
        shape = " x ".join(str(n) for n in img.shape)
        vrange = f"{float(img.array.min()):.6g} .. {float(img.array.max()):.6g}"
        rows.append((label, img.modality, shape, spacing, orientation_code(img.affine), vrange, str(path)))
    header = ("source", "modality", "shape", "spacing (mm)", "orient.", "value range", "path")
    ncol = 7 if paths else 6
    for line in format_table([r[:ncol] for r in rows], header[:ncol]):
        echo(line)
    return status


def run_demo(out: str | Path = "medmulti_demo", *, patients: int = DEMO_PATIENTS, epochs: int = DEMO_EPOCHS,
             seed: int = 0, fusion: str = "concat", workers: int | None = None, single: bool = True,
             progress: bool = True, model_options: dict | None = None, echo=print) -> dict:
    """Run the demo and return the summary written to ``out/demo_summary.json``.

    Parameters
    ----------
    out : str or Path
        Output folder: ``cohort/``, ``cache/``, ``runs/<model>/``, ``demo_summary.json``.
    patients : int
        Sample cohort size.
    epochs : int
        Maximum epochs per model (early stopping may stop sooner).
    seed : int
        Seed of the cohort, the weights and the shuffling.
    fusion : {"concat", "attention", "gated"}
        Fusion of the fusion model.
    workers : int, optional
        Processes for validation and preprocessing.
    single : bool
        Also train one model per modality.
    progress : bool
        Show progress bars.
    model_options : dict, optional
        Overrides of :data:`DEMO_MODEL`: fields of :class:`~medmulti.models.ModelOptions`,
        :class:`~medmulti.training.FitOptions` or :class:`~medmulti.training.DataOptions`
        (keyword arguments of :func:`medmulti.train`).
    echo : callable
        Where the human-readable lines go.

    Returns
    -------
    dict
        ``{"fusion": {"test_auc", "test_accuracy", "run_dir"}, <modality>: {...}, "seconds", ...}``.

    Raises
    ------
    MedmultiError
        Validation found errors, or a data error while training.
    TypeError
        A key of ``model_options`` that is no training option.
    """
    from ..data.cache_fill import preprocess_manifest
    from ..errors import ManifestError
    from ..examples.cohort import make_sample_cohort
    from ..manifest import validate_manifest
    from ..spec import StudySpec
    from ..training import train
    from ..training.options import resolve_train_options
    from ..training.run_folder import write_json
    from ..training.subsets import evaluate_subsets

    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    cohort_dir = root / "cohort"
    stamp_path = root / "cohort.json"
    stamp = {"patients": patients, "seed": seed, "faults": False}
    reuse = (stamp_path.is_file() and (cohort_dir / "manifest.csv").is_file()
             and json.loads(stamp_path.read_text(encoding="utf-8")) == stamp)
    echo(f"[1/5] sample cohort: {patients} patients (CT DICOM series, MR NIfTI, X-ray DICOM) in {cohort_dir}"
         + (" (reused)" if reuse else ""))
    if reuse:
        manifest, spec_path = cohort_dir / "manifest.csv", cohort_dir / "spec.yaml"
    else:
        stamp_path.unlink(missing_ok=True)
        cohort = make_sample_cohort(cohort_dir, n_patients=patients, seed=seed, faults=False, progress=progress,
                                    overwrite=True, workers=workers or os.cpu_count() or 1)
        manifest, spec_path = cohort.manifest, cohort.spec
        stamp_path.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    spec = StudySpec.from_yaml(spec_path)

    echo("[2/5] validating the manifest and every file it names")
    report = validate_manifest(manifest, spec, workers=workers, progress=progress)
    report.to_json(root / "validation.json")
    report.to_html(root / "validation.html")
    echo("      " + report.summary().replace("\n", "\n      "))
    if not report.ok:
        raise ManifestError("validation found errors; see the report", path=root / "validation.html")

    echo("[3/5] preprocessing into the cache (co-registration, windowing, normalisation)")
    cache_dir = root / "cache"
    summary = preprocess_manifest(manifest, spec, cache_dir, workers=workers, progress=progress)
    echo("      " + summary.summary().replace("\n", "\n      "))

    options = {**DEMO_MODEL, **(model_options or {})}
    if isinstance(options.get("stem_stride"), int):  # strided stem for the 3D branches only
        options["stem_stride"] = {m.name: options["stem_stride"] for m in spec.modalities if m.dims == 3}
    model, fit, data = resolve_train_options(caller="run_demo", epochs=epochs, seed=seed, fusion=fusion,
                                             cache_dir=cache_dir, **options)
    models = [("fusion", None)] + ([(m, [m]) for m in spec.names] if single else [])
    results: dict = {}
    for k, (name, modalities) in enumerate(models, start=1):
        what = f"fusion of {', '.join(spec.names)} ({fusion})" if modalities is None else f"{name} only"
        echo(f"[4/5] training model {k}/{len(models)}: {what}")
        res = train(manifest, spec, root / "runs" / name, model=model, fit=fit,
                    data=dataclasses.replace(data, modalities=modalities), progress=progress, overwrite=True)
        results[name] = {"test_auc": res.test_auc, "test_accuracy": res.test_accuracy,
                         "best_epoch": res.best_epoch, "seconds": round(res.seconds, 1),
                         "run_dir": str(res.run_dir)}
    subsets = None
    if len(spec.names) > 1:  # the fusion model with modalities missing: every non-empty subset
        subsets = evaluate_subsets(results["fusion"]["run_dir"], manifest, split="test", cache_dir=cache_dir,
                                   batch_size=fit.batch_size, progress=progress)
        results["fusion"]["subsets"] = {name: r["auc"] for name, r in subsets["subsets"].items()}
        everything = "+".join(spec.names)  # the full set: the fusion model's own test AUC and its interval
        results["fusion"]["test_auc_ci"] = subsets["subsets"].get(everything, {}).get("auc_ci")

    seconds = time.perf_counter() - t0
    summary_doc = {**results, "seconds": round(seconds, 1), "patients": patients, "seed": seed,
                   "epochs": epochs, "fusion_method": fusion,
                   "test_patients": len([r for r in _test_rows(manifest, spec)])}
    write_json(root / "demo_summary.json", summary_doc)

    echo("[5/5] results on the test split (same patients for every model)")
    echo(f"      {'model':<10} {'ROC AUC':>8} {'accuracy':>9} {'best ep':>7} {'seconds':>8}")
    for name, r in results.items():
        auc = "n/a" if r["test_auc"] is None else f"{r['test_auc']:.3f}"
        echo(f"      {name:<10} {auc:>8} {r['test_accuracy']:>9.3f} {r['best_epoch']:>7d} {r['seconds']:>8.0f}")
    if subsets is not None:
        echo(f"      the fusion model with modalities missing ({subsets['note']}):")
        for line in format_subsets(subsets):
            echo("        " + line)
    echo(f"      total {seconds:.0f} s")
    echo(f"summary: {root / 'demo_summary.json'}")
    echo(f"report and pictures: {root / 'runs' / 'fusion'} (metrics.json, curves.png, confusion_roc.png), "
         f"validation report {root / 'validation.html'}")
    return summary_doc


#: model options of the demo (small CNNs: the sample inputs are 32^3 and 64^2); group
#: normalisation (batch statistics of 8 patients are too noisy), global max pooling
#: (each finding is a focal lesion anywhere in the image), 3D branches start with a
#: stride-2 convolution; batches of 8 (more updates per epoch from ~180 training
#: patients) and a low learning rate. Augmentation (flip, small rotation, scale,
#: shift, gain and noise per patient) instead of dropout keeps the fusion model from
#: memorising the training set: dropout on a branch's max-pooled features drops the
#: one channel that found the lesion, and the X-ray branch then never learned its
#: finding (benchmarks/RESULTS.md); early stopping on the validation loss with a long patience
#: (60 validation patients give a noisy loss; the X-ray branch often learns late)
DEMO_MODEL = {"batch_size": DEMO_BATCH, "width": 8, "depth": 3, "embed_dim": 16, "dropout": 0.0, "augment": True,
              "patience": 15, "learning_rate": 5e-4, "norm": "group", "pooling": "max", "stem_stride": 2}


def _test_rows(manifest: Path, spec) -> list:
    from ..manifest import load_manifest

    return load_manifest(manifest, spec).split("test")


def run(args: argparse.Namespace) -> int:
    """Run the demo.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 done; 1 a bundled file could not be read; a :class:`~medmulti.errors.MedmultiError`
        gives 1 (via the CLI).
    """
    if args.files_only:
        return print_bundled_table(paths=args.paths)
    print("[0/5] reading the real example files bundled with pydicom and nibabel")
    if print_bundled_table(paths=args.paths, echo=lambda line: print("      " + line)) != 0:
        print("medmulti demo: a bundled example file could not be read (see the table)", file=sys.stderr)
        return 1
    run_demo(args.out, patients=args.patients, epochs=args.epochs, seed=args.seed, fusion=args.fusion,
             workers=args.workers, single=not args.no_single, progress=not args.no_progress)
    return 0
