"""Train, evaluate and apply a fusion model on a manifest: ``train``, ``evaluate``, ``predict``.

:func:`train` builds the train/val/test :class:`~medmulti.data.sequence.PatientSequence`\\ s,
the model (:func:`~medmulti.models.build_fusion_model`), fits it with a progress bar,
keeps the best checkpoint, stops early, evaluates on the test split and writes a run
folder::

    RUN_DIR/
      model.keras        best checkpoint (load with keras.saving.load_model(..., safe_mode=True))
      history.csv        per-epoch metrics (keras.callbacks.CSVLogger)
      metrics.json       test accuracy, ROC AUC per class, confusion matrix (+ validation)
      predictions_test.csv
      curves.png         training curves
      confusion_roc.png  confusion matrix and ROC on the test split
      run_card.json      spec, manifest sha256, versions, seed, options, data counts per split
      backup/            the last completed epoch while training runs (resume=True); removed at the end
      tensorboard/       TensorBoard logs (tensorboard=True)

With ``cv=K``, ``RUN_DIR/fold-k/`` holds one such folder per fold and ``cv_summary.json``
the folds' metrics with their mean and standard deviation; :func:`evaluate` on such a folder
re-scores every fold.

:func:`train` takes three option records (:class:`~medmulti.models.ModelOptions`,
:class:`FitOptions`, :class:`DataOptions`) or any of their fields as keywords.
:func:`evaluate` re-scores a run on a split; :func:`predict` writes a CSV of
``patient_id`` and one probability per class for the rows of a manifest (labeled or
not); :func:`predict_patient` scores one patient given by its files. Nothing here reads
or writes a header value: patients are named by their manifest key only.

The package: :mod:`~medmulti.training.fit` (train), :mod:`~medmulti.training.options`
(its option records), :mod:`~medmulti.training.devices` (where it runs: distribution
strategy, mixed precision, XLA), :mod:`~medmulti.training.apply`
(evaluate, predict, predict_patient), :mod:`~medmulti.training.run_folder` (the card, the model file, failed
runs), :mod:`~medmulti.training.report` (``report.html``, every result of a run folder on one
offline page) and :mod:`~medmulti.training.batches` (what they share).
"""

from __future__ import annotations

from .apply import evaluate, predict, predict_patient
from .fit import CVResult, TrainResult, train
from .options import LR_SCHEDULES, MONITORS, STRATEGIES, DataOptions, FitOptions
from .report import REPORT_FILE, write_run_report
from .run_folder import MODEL_FILE, RUN_CARD

__all__ = ["TrainResult", "CVResult", "train", "FitOptions", "DataOptions", "evaluate", "predict", "predict_patient",
           "MONITORS", "LR_SCHEDULES", "STRATEGIES", "MODEL_FILE", "RUN_CARD", "REPORT_FILE", "write_run_report"]
