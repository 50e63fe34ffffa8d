"""Apply a trained run: :func:`evaluate` re-scores a split (with intervals, an operating
point and calibration), :func:`predict` writes probabilities (calibrated when the run
folder holds a fitted temperature) for the rows of a manifest, labeled or not, and
:func:`predict_patient` scores one patient given by its files."""

from __future__ import annotations

import dataclasses
import logging
import os
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ManifestError, MedmultiError, RunFolderError, error_class_of
from ..manifest import ManifestRow, Problem, admit, patient_manifest
from ..models.calibration import TEMPERATURE_RANGE, fit_temperature, plot_reliability
from ..models.metrics import mean_and_sd
from ..models.plots import plot_confusion_roc
from ..scanning.folder import FolderChoice, choose_sources
from ..spec import StudySpec, present_input_name
from .batches import admit_splits, make_sequence, open_manifest, predict_sequence, write_predictions
from .evaluation import evaluation_record, read_calibration, write_calibration
from .report import write_run_report
from .run_folder import (
    RUN_CARD,
    card_path,
    fold_view,
    folder_error,
    is_cv_run,
    open_run,
    read_cv_summary,
    run_cache,
    sha256_file,
    write_json,
)

__all__ = ["evaluate", "predict", "predict_patient", "CV_EVALUATION_KEYS", "INPUT_STATUSES"]

log = logging.getLogger("medmulti.training")

def run_manifest(run: Path, card: Mapping[str, Any], manifest: Any, spec: StudySpec, data_root: Any,
                  options: Mapping[str, Any], *, labels: str = "required") -> Any:
    recorded = card.get("manifest") if isinstance(card.get("manifest"), dict) else {}
    recorded_path = card_path(run, recorded.get("path"))
    if manifest is None:
        if recorded_path is None:
            raise RunFolderError("the run card names no manifest", path=run / RUN_CARD,
                                 hint="pass the manifest explicitly")
        manifest = recorded_path
    man = open_manifest(manifest, spec, data_root, options, labels=labels)
    want = recorded.get("sha256")
    path = Path(man.path)
    if (want and recorded_path is not None and path.is_file() and path.resolve() == recorded_path.resolve()
            and sha256_file(path) != want):
        log.warning("the manifest changed since training (sha256 differs from the run card)")
    return fold_view(run, card, man)


def policies(card: Mapping[str, Any], on_missing: str | None, on_corrupt: str | None) -> dict[str, Any]:
    options = dict(card.get("options", {})) if isinstance(card.get("options"), dict) else {}
    if on_missing is not None:
        options["on_missing"] = on_missing
    if on_corrupt is not None:
        options["on_corrupt"] = on_corrupt
    return options


def evaluate(
    run_dir: str | PathLike[str],
    manifest: Any = None,
    *,
    split: str = "test",
    cache_dir: str | PathLike[str] | None = None,
    batch_size: int = 8,
    data_root: str | PathLike[str] | None = None,
    on_missing: str | None = None,
    on_corrupt: str | None = None,
    write: bool = True,
    progress: bool = True,
    bootstrap: int = 2000,
    seed: int = 0,
    target_sensitivity: float | None = None,
    calibrate: bool = False,
) -> dict[str, Any]:
    """Score a trained run on a split of a manifest, with intervals, an operating point
    and calibration.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`train`: one run, or a cross-validation run
        (``cv=K``), whose folds are each re-scored (see Notes).
    manifest : Manifest or str or PathLike, optional
        Default: the manifest the run was trained on (from the run card).
    split : {"train", "val", "test"}
        Which rows to score. A fold of a cross-validation (``RUN/fold-k``, alone or
        as part of its run) is scored on its own splits: ``val`` is the held-out fold
        (from ``cv_summary.json``), not the manifest's ``split`` column.
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the one the run trained with, when it lies
        inside the run folder; a run card never makes medmulti write elsewhere).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        Policies for missing / unreadable inputs (default: the run's, from its card);
        see :class:`~medmulti.data.sequence.PatientSequence`.
    write : bool
        Also write ``evaluation_<split>.json``, ``predictions_<split>.csv``,
        ``confusion_roc_<split>.png`` and ``calibration_<split>.png`` (and with
        ``calibrate``, ``calibration.json``) into the run folder, and refresh its
        ``report.html`` (:func:`~medmulti.training.report.write_run_report`).
    progress : bool
        Show progress bars.
    bootstrap : int
        Bootstrap replicates (resampling patients) of the 95% intervals; 0: none.
    seed : int
        Seed of the bootstrap.
    target_sensitivity : float in (0, 1], optional
        Choose the operating point's threshold on the validation split as the most
        specific one reaching this sensitivity (default: Youden's J).
    calibrate : bool
        Fit a temperature on the validation split, apply it, and (``write``) store it
        as the run's ``calibration.json``, which later ``evaluate`` and ``predict``
        calls apply. Without it, a stored temperature is applied when present.

    Returns
    -------
    dict
        :func:`~medmulti.training.evaluation.evaluation_record`: the keys of
        :func:`~medmulti.models.metrics.classification_metrics` plus intervals
        (``auc_ci``, ...), ``brier``, ``ece``, ``calibrated``, ``calibration``,
        ``operating_point`` and ``bootstrap``. The metrics are those of the
        calibrated probabilities when the run has (or fits) a temperature.
        For a cross-validation run: ``{"format", "split", "cv", "folds", "mean",
        "std", "std_ddof", "bootstrap"}``, ``folds`` holding per fold ``fold``,
        ``run_dir`` (``fold-k``) and :data:`CV_EVALUATION_KEYS` of its record,
        ``mean`` and ``std`` (``ddof=1``) every scalar metric defined in every fold.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a run folder, its training failed, its model does not
        load, its ``calibration.json`` is malformed or stale, or (``write=True``)
        it cannot be written.
    ManifestError
        No rows of ``split``; or ``calibrate`` and no ``val`` rows.
    MedmultiError
        Data problems, typed.
    ValueError
        ``bootstrap`` negative, or ``target_sensitivity`` outside (0, 1].

    Notes
    -----
    A cross-validation run folder (``cv_summary.json`` and ``fold-k/`` folders, no
    ``run_card.json``) is evaluated fold by fold, each fold's run as above (writing
    into ``fold-k/``), and the folds' metrics with their mean and sample standard
    deviation are returned and (``write``) written to ``cv_evaluation_<split>.json``
    and the run's ``report.html``.
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a whole number >= 0, got {bootstrap!r}")
    if target_sensitivity is not None and not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity!r}")
    if is_cv_run(run_dir):
        return _evaluate_folds(Path(run_dir), manifest, split=split, write=write, bootstrap=bootstrap, seed=seed,
                               cache_dir=cache_dir, batch_size=batch_size, data_root=data_root,
                               on_missing=on_missing, on_corrupt=on_corrupt, progress=progress,
                               target_sensitivity=target_sensitivity, calibrate=calibrate)
    run, card, spec, model = open_run(run_dir)
    scaling = None if calibrate else read_calibration(run)
    options = policies(card, on_missing, on_corrupt)
    man = run_manifest(run, card, manifest, spec, data_root, options)
    if not man.split(split):
        raise ManifestError(f"the manifest has no {split!r} rows", path=getattr(man, "path", None))
    if calibrate and not man.split("val"):
        raise ManifestError("the manifest has no 'val' rows to fit the calibration on",
                            path=getattr(man, "path", None))

    def score(which: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        seq = make_sequence(man, spec, which, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                             cache_dir=run_cache(run, card, cache_dir), progress=progress)
        return predict_sequence(model, seq, card["input_keys"], progress)

    multi_label = spec.labels.multi_label
    ids, y, raw = score(split)
    val = None
    if split == "val":
        val = (y, raw)
    elif man.split("val"):
        val = score("val")[1:]
    else:
        log.warning("the manifest has no 'val' rows: no operating point")
    if calibrate and val is not None:
        scaling = fit_temperature(val[0], val[1], multi_label=multi_label, fitted_on="val")
        if not TEMPERATURE_RANGE[0] * 1.001 < scaling.temperature < TEMPERATURE_RANGE[1] * 0.999:
            log.warning("the fitted temperature %.3g lies at the edge of its range %s: the validation split "
                        "(%d patients) says little about calibration", scaling.temperature,
                        list(TEMPERATURE_RANGE), scaling.n)
    p = raw if scaling is None else scaling.apply(raw)
    if val is not None and scaling is not None:
        val = (val[0], scaling.apply(val[1]))
    result = evaluation_record(y, p, spec.labels.classes, multi_label=multi_label, val=val,
                               target_sensitivity=target_sensitivity, n_resamples=bootstrap, seed=seed,
                               calibration=scaling, uncalibrated=None if scaling is None else raw)
    if write:
        try:
            if calibrate and scaling is not None:
                write_calibration(run, scaling)
            write_json(run / f"evaluation_{split}.json", result)
            write_predictions(run / f"predictions_{split}.csv", ids, p, spec.labels.classes, y, spec)
            plot_confusion_roc(y, p, spec.labels.classes, run / f"confusion_roc_{split}.png",
                               multi_label=spec.labels.multi_label, title=f"{card.get('model', 'model')}: {split}")
            plot_reliability(result["calibration"]["curves"], run / f"calibration_{split}.png",
                             title=f"{card.get('model', 'model')}: {split}"
                             + (" (temperature-scaled)" if scaling is not None else ""))
            write_run_report(run)
        except OSError as exc:
            raise _write_error(exc, run) from None
    return result


def _write_error(exc: OSError, run: Path) -> RunFolderError:
    err = folder_error(exc, run, "the evaluation into the run folder")
    err.hint, err.cli_hint = "pass write=False to score without writing", "add --no-write to score without writing"
    return err


#: What the record of a cross-validation evaluation keeps of each fold's evaluation record.
CV_EVALUATION_KEYS = ("n", "auc", "auc_ci", "accuracy", "accuracy_ci", "brier", "brier_ci", "ece", "calibrated")


def _evaluate_folds(run: Path, manifest: Any, *, split: str, write: bool, bootstrap: int, seed: int,
                    **options: Any) -> dict[str, Any]:
    """Evaluate every fold of a cross-validation run folder (see :func:`evaluate`'s Notes)."""
    summary = read_cv_summary(run)
    folds = []
    for entry in summary["folds"]:
        name = f"fold-{entry['fold']}"
        log.info("cross-validation: evaluating %s", name)
        record = evaluate(run / name, manifest, split=split, write=write, bootstrap=bootstrap, seed=seed, **options)
        folds.append({"fold": entry["fold"], "run_dir": name, **{k: record.get(k) for k in CV_EVALUATION_KEYS}})
    mean, std = mean_and_sd([{k: v for k, v in f.items() if k != "fold"} for f in folds])
    result = {"format": 1, "split": split, "cv": len(folds), "folds": folds, "mean": mean, "std": std,
              "std_ddof": 1, "bootstrap": {"n_resamples": bootstrap, "seed": seed}}
    if write:
        try:
            write_json(run / f"cv_evaluation_{split}.json", result)
            write_run_report(run)
        except OSError as exc:
            raise _write_error(exc, run) from None
    return result


def predict(
    run_dir: str | PathLike[str],
    manifest: Any,
    *,
    out: str | PathLike[str] | None = None,
    splits: Sequence[str] | None = None,
    cache_dir: str | PathLike[str] | None = None,
    batch_size: int = 8,
    data_root: str | PathLike[str] | None = None,
    on_missing: str | None = None,
    on_corrupt: str | None = None,
    progress: bool = True,
    calibration: bool = True,
) -> Path:
    """Write a CSV of ``patient_id`` and one probability column ``p_<class>`` per class.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`train`.
    manifest : Manifest or str or PathLike
        The patients to score: a manifest with the run's spec columns, loaded
        with ``labels="optional"``: the ``split`` and label columns may be missing,
        and label cells empty (new patients). Labels are never read here.
    out : str or PathLike, optional
        The CSV to write (default ``RUN_DIR/predictions.csv``).
    splits : sequence of str, optional
        Only rows of these splits (default: every row, those without a split
        included).
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the one the run trained with, when it lies
        inside the run folder; a run card never makes medmulti write elsewhere).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        Policies for missing / unreadable inputs (default: the run's, from its card);
        see :class:`~medmulti.data.sequence.PatientSequence`.
    progress : bool
        Show progress bars.
    calibration : bool
        Apply the run's fitted temperature (``calibration.json``, written by
        ``evaluate(..., calibrate=True)``) when present; False: the model's raw
        probabilities.

    Returns
    -------
    Path
        The CSV written.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a run folder, its training failed, its model does not
        load, its ``calibration.json`` is malformed or stale, or the CSV cannot be
        written.
    ManifestError
        No row to score (none of ``splits``); a malformed manifest.
    MedmultiError
        Data problems, typed.

    Notes
    -----
    The CSV lists the ``train``, ``val`` and ``test`` rows, then the rows without a
    split, in manifest order within each. A row's label is never read: an
    unlabeled copy of a manifest gives the same probabilities.
    """
    run, card, spec, model = open_run(run_dir)
    scaling = read_calibration(run) if calibration else None
    options = policies(card, on_missing, on_corrupt)
    man = run_manifest(run, card, manifest, spec, data_root, options, labels="optional")
    wanted = list(splits) if splits is not None else [s for s in ("train", "val", "test") if man.split(s)]
    groups: list[tuple[str, Any, Any]] = [(split, man, None) for split in wanted if man.split(split)]
    unsplit = [r for r in man.rows if r.split == ""]
    if splits is None and unsplit:
        # rows without a split (no split column, or an empty cell) are scored as a group of their
        # own: the sequence serves a split, so they are that group's "test" rows, checked on their own
        view = dataclasses.replace(man, rows=[dataclasses.replace(r, split="test") for r in unsplit])
        groups.append(("test", view, admit_splits(view, spec, ["test"], options=options, progress=progress)))
    all_ids: list[str] = []
    all_p = []
    for split, source, admission in groups:
        seq = make_sequence(source, spec, split, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                             cache_dir=run_cache(run, card, cache_dir), progress=progress, admission=admission)
        ids, _, p = predict_sequence(model, seq, card["input_keys"], progress)
        all_ids += ids
        all_p.append(p)
    if not all_ids:
        raise ManifestError(f"no rows to predict in splits {wanted}", path=getattr(man, "path", None),
                            hint="rows without a split are scored when no split is asked for"
                            if unsplit else None,
                            cli_hint="rows without a split are scored without --split" if unsplit else None)
    path = Path(out) if out is not None else run / "predictions.csv"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probs = np.concatenate(all_p)
        if scaling is not None:
            log.info("probabilities calibrated with the run's temperature %.3f", scaling.temperature)
            probs = scaling.apply(probs)
        write_predictions(path, all_ids, probs, spec.labels.classes)
    except OSError as exc:
        raise folder_error(exc, path, "the predictions") from None
    return path



#: The statuses of an input in :func:`predict_patient`'s record.
INPUT_STATUSES = ("used", "zeros", "absent", "unused")


def predict_patient(
    run_dir: str | PathLike[str],
    sources: Mapping[str, Any],
    *,
    patient_id: str = "patient",
    cache_dir: str | PathLike[str] | None = None,
    on_missing: str | None = None,
    on_corrupt: str | None = None,
    calibration: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Score one new patient given by its files, with the run's checks, policies and preprocessing.

    The sources become a one-row manifest
    (:func:`~medmulti.manifest.load.patient_manifest`), admitted as a manifest row
    is (:func:`~medmulti.manifest.admit`, decoding every pixel), preprocessed as in
    training and scored by the run's model; the probabilities are those
    :func:`predict` writes for the same files.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`train` (one run, or one ``fold-k`` of a
        cross-validation).
    sources : Mapping
        Spec modality name -> a DICOM series folder, a DICOM file or a NIfTI file
        (absolute or relative to the current folder), or a
        :class:`~medmulti.io.SourceRef` choosing a series or a volume; e.g.
        ``{"ct": "new/ct", "mr": "new/mr.nii.gz", "xray": "new/xray.dcm"}``.
        A modality left out is absent: an optional one is fed as absent
        (``<name>_present = 0``), a required one follows ``on_missing``.
        A folder holding several series (a patient's export, in any nesting) is
        narrowed to one by the modality's ``select`` rules, as ``medmulti scan``
        chooses (:func:`~medmulti.scanning.folder.choose_in_folder`); when no
        series passes them the modality counts as not given.
    patient_id : str
        The key naming the patient in messages and in the record (never a header value).
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the run's, when it lies inside the run folder).
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        The policies (default: the run's, from its card). ``"zeros"`` feeds a
        missing or unreadable input as zeros; under ``"error"`` and ``"skip"`` a
        patient with such an input is not scored (its typed error is raised).
    calibration : bool
        Apply the run's fitted temperature (``calibration.json``) when present.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        ``patient_id``; ``probabilities`` (class -> float, in the spec's class
        order); ``predicted`` (the most probable class, or for a multi-label spec
        the classes at or above 0.5); ``calibrated`` and ``temperature`` (None
        when uncalibrated); ``policies`` (``on_missing``, ``on_corrupt``);
        ``inputs``: per spec modality ``{"source": the path as given or None,
        "status": "used" | "zeros" | "absent" | "unused", "reason": str or None,
        "selection": dict or None}`` ("zeros": given but unreadable, or required
        and not given, under ``"zeros"``; "absent": an optional modality not
        given; "unused": a modality this run's model does not take;
        "selection": for a folder of several series, which series was chosen
        and why, and each one left out and why,
        :meth:`~medmulti.scanning.folder.FolderChoice.to_dict`). No header value
        appears in it.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a usable run folder (as :func:`predict`).
    MedmultiError
        An input the policies do not let through (typed, naming the modality and
        file), e.g. :class:`~medmulti.errors.MissingFileError` for a required
        modality not given (or a folder in which no series passes its rules) under
        ``on_missing="error"``; :class:`~medmulti.errors.ManifestError` for a
        folder holding several patients' images.
    ValueError
        A source name that is not one of the spec's modalities, or no source.

    Examples
    --------
    >>> record = predict_patient("runs/fusion", {"ct": "new/ct", "mr": "new/mr.nii.gz",
    ...                                          "xray": "new/xray.dcm"})  # doctest: +SKIP
    >>> record["probabilities"]  # doctest: +SKIP
    {'healthy': 0.27, 'disease': 0.73}
    """
    run, card, spec, model = open_run(run_dir)
    scaling = read_calibration(run) if calibration else None
    options = policies(card, on_missing, on_corrupt)
    chosen_sources, selections = choose_sources(sources, spec, patient_id=patient_id)
    if selections and not any(v is not None for v in chosen_sources.values()):
        name = next(iter(selections))
        raise _no_candidate(name, selections[name], patient_id, zeros=False)
    one = patient_manifest(chosen_sources, spec, patient_id=patient_id)
    # the sequence serves a split: the patient is the only "test" row of its own manifest
    man = dataclasses.replace(one, rows=[dataclasses.replace(one.rows[0], split="test")])
    row = man.rows[0]
    admission = admit(man, spec, depth="decode", on_missing=options.get("on_missing", "error"),
                      on_corrupt=options.get("on_corrupt", "error"), workers=1, progress=progress,
                      desc="checking the patient")
    verdict = admission.verdicts[0]
    if not verdict.admitted:
        raise _not_scored(verdict.reasons[0], row, selections)
    seq = make_sequence(man, spec, "test", options=options, batch_size=1, seed=card.get("seed", 0),
                        cache_dir=run_cache(run, card, cache_dir), progress=progress, admission=admission)
    inputs = seq.get_patient(row.key)  # a failure in preprocessing raises its typed error
    keys = card["input_keys"]
    for name in spec.names:  # a presence flag the run's model takes although these policies make none
        inputs.setdefault(present_input_name(name), np.array([float(verdict.present[name])], np.float32))
    raw = np.asarray(model({k: inputs[k][np.newaxis] for k in keys}, training=False), np.float64)
    probs = (raw if scaling is None else scaling.apply(raw))[0]
    classes = spec.labels.classes
    predicted: Any = ([c for c, v in zip(classes, probs) if v >= 0.5] if spec.labels.multi_label
                      else classes[int(np.argmax(probs))])
    zeroed = dict(verdict.zeroed)
    described = {}
    for name in spec.names:
        given = row.paths.get(name)
        picked = selections.get(name)
        if name not in keys:
            status, reason = "unused", "this run's model does not take it"
        elif given is None:
            fed_as_zeros = name in zeroed
            status = "zeros" if fed_as_zeros else "absent"
            reason = "not given" if picked is None else f"nothing chosen in the folder: {picked.choice.reason}"
            reason += "; required, fed as zeros under on_missing=zeros" if fed_as_zeros else ""
        elif verdict.present[name]:
            status, reason = "used", None
        else:
            status, reason = "zeros", zeroed.get(name, "fed as zeros")
        described[name] = {"source": given if picked is None else os.fspath(sources[name]), "status": status,
                           "reason": reason, "selection": None if picked is None else picked.to_dict()}
    return {
        "patient_id": row.key,
        "probabilities": {c: float(v) for c, v in zip(classes, probs)},
        "predicted": predicted,
        "calibrated": scaling is not None,
        "temperature": None if scaling is None else float(scaling.temperature),
        "policies": {"on_missing": options.get("on_missing", "error"), "on_corrupt": options.get("on_corrupt", "error")},
        "inputs": described,
    }


def _no_candidate(name: str, picked: FolderChoice, patient_id: str, *, zeros: bool = True) -> MedmultiError:
    """The typed error of a folder given for ``name`` in which no series passes its rules.

    ``zeros``: also suggest feeding the modality as zeros (not when it was the only input).
    """
    return error_class_of("missing_modality")(
        f"no series of the folder given for {name} passes the spec's select rules: {picked.choice.reason}",
        path=os.fspath(picked.folder), patient_id=patient_id, modality=name, check="missing_modality",
        hint="give the folder or file of the series to use"
        + (f", or on_missing='zeros' to feed {name} as zeros" if zeros else ""),
        cli_hint=f"give --source {name}= the folder or file of the series to use"
        + (", or add --on-missing zeros" if zeros else ""))


def _not_scored(problem: Problem, row: ManifestRow, selections: Mapping[str, FolderChoice]) -> MedmultiError:
    """The typed error of the problem that keeps a patient given by its files from being scored."""
    name = problem.modality
    if problem.check == "missing_modality" and name is not None and name in selections and row.paths.get(name) is None:
        return _no_candidate(name, selections[name], row.key)
    if problem.check == "missing_modality" and name is not None and row.paths.get(name) is None:
        return error_class_of(problem.check)(
            f"no {name} input was given, and the run's spec requires it", patient_id=row.key, modality=name,
            check=problem.check, hint=f"give sources[{name!r}], or on_missing='zeros' to feed it as zeros",
            cli_hint=f"add --source {name}=PATH, or --on-missing zeros to feed it as zeros")
    return problem.to_error()
