"""What train, evaluate and predict share: the manifest and sequences they open, and the
model applied batch by batch with its predictions written as CSV."""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.sequence import PatientSequence
from ..errors import ManifestError
from ..manifest import Admission, Manifest, admit, load_manifest
from ..spec import StudySpec, present_input_name
from ..text import csv_safe

__all__ = ["load_spec", "open_manifest", "admit_splits", "make_sequence", "keys_for", "select_inputs", "predict_sequence", "write_predictions"]

log = logging.getLogger("medmulti.training")

def load_spec(spec: StudySpec | str | PathLike[str]) -> StudySpec:
    return spec if isinstance(spec, StudySpec) else StudySpec.from_yaml(spec)


def open_manifest(manifest: Any, spec: StudySpec, data_root: Any = None,
                   options: Mapping[str, Any] | None = None, *, labels: str = "required") -> Any:
    """Load a manifest: strictly under the "error" policies; leniently when a policy may skip
    or zero a patient, so that a row's problems (an unsafe path among them: never opened)
    reach the sequence's policies instead of stopping the load.

    ``labels="optional"`` (predict) accepts rows without a label or split; with
    ``"required"`` (train, evaluate) a :class:`Manifest` loaded that way is refused
    at its first such row (:class:`ManifestError` naming the line and column)."""
    if isinstance(manifest, Manifest):
        if labels == "required":
            for row in manifest.rows:
                if row.labeled and (row.split or not row.labels_optional):
                    continue
                column = spec.labels.manifest_columns[0] if not row.labeled else "split"
                raise ManifestError(f"the row has no {'label' if not row.labeled else 'split'}", row=row.line,
                                    column=column, patient_id=row.key, path=manifest.path,
                                    hint="training and evaluation need the split and label of every row; "
                                         "rows without them can only be scored, with predict()",
                                    cli_hint="training and evaluation need the split and label of every row; "
                                             "rows without them can only be scored, with `medmulti predict`")
        return manifest
    options = options or {}
    strict = options.get("on_missing", "error") == "error" and options.get("on_corrupt", "error") == "error"
    return load_manifest(manifest, spec, data_root=data_root, strict=strict, labels=labels)


def admit_splits(manifest: Any, spec: StudySpec, splits: Sequence[str], *, options: Mapping[str, Any],
                 progress: bool, executor: Any = "local", scheduler: str | None = None) -> Admission:
    """One admission for every split a command serves (one pool, one verdict per patient)."""
    return admit(manifest, spec, splits=list(splits), on_missing=options.get("on_missing", "error"),
                 on_corrupt=options.get("on_corrupt", "error"), progress=progress, desc="checking patients",
                 executor=executor, scheduler=scheduler)


def make_sequence(manifest: Any, spec: StudySpec, split: str, *, options: Mapping[str, Any], train: bool = False,
                   batch_size: int, seed: int, cache_dir: Any, progress: bool,
                   admission: Admission | None = None) -> Any:
    return PatientSequence(
        manifest, spec, split, batch_size=batch_size, shuffle=train, seed=seed,
        augment=bool(options.get("augment", False)) and train,
        on_missing=options.get("on_missing", "error"), on_corrupt=options.get("on_corrupt", "error"),
        cache_dir=cache_dir, class_balance=bool(options.get("class_balance", False)) and train,
        progress=progress, admission=admission,
    )


def keys_for(names: Sequence[str], optional: Sequence[str]) -> list[str]:
    return list(names) + [present_input_name(n) for n in optional if n in names]


def select_inputs(batch: tuple, keys: Sequence[str]) -> tuple:
    """The model's inputs of a batch; a ``<name>_present`` input the sequence does not serve is all ones.

    A run trained under ``zeros`` has a presence input for every modality; applied
    under ``error``/``skip``, the sequence serves only the inputs it may zero, and
    every patient it serves has the others: present.
    """
    inputs, *rest = batch
    n = len(next(iter(inputs.values())))
    picked = {}
    for k in keys:
        if k not in inputs and k.endswith(present_input_name("")):
            picked[k] = np.ones((n, 1), np.float32)
        else:
            picked[k] = inputs[k]
    return (picked, *rest)


def predict_sequence(model: Any, seq: Any, keys: Sequence[str], progress: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Run ``model`` over every batch of a non-shuffled sequence: (patient ids, labels, probabilities)."""
    from tqdm.auto import tqdm

    ids = list(seq.patient_ids)
    probs, labels = [], []
    for i in tqdm(range(len(seq)), desc=f"predicting {seq.split}", unit="batch", disable=not progress, leave=False):
        inputs, y = select_inputs(seq[i], keys)[:2]
        probs.append(np.asarray(model(inputs, training=False), np.float64))
        labels.append(np.asarray(y))
    probs_all, labels_all = np.concatenate(probs), np.concatenate(labels)
    faulted = set(getattr(seq, "faulted", ()))
    if faulted:  # inputs that failed while predicting (skip/zeros policies): not scored
        keep = [j for j, pid in enumerate(ids) if pid not in faulted]
        ids, probs_all, labels_all = [ids[j] for j in keep], probs_all[keep], labels_all[keep]
    return ids, labels_all, probs_all


def write_predictions(path: Path, ids: Sequence[str], probs: np.ndarray, classes: Sequence[str],
                       labels: np.ndarray | None = None, spec: StudySpec | None = None) -> None:
    """Write the predictions CSV atomically.

    Patient keys and class names come from the manifest and spec: each goes
    through :func:`~medmulti.text.csv_safe`, so a spreadsheet shows ``=1+2`` as text
    (``'=1+2``). Probabilities are numbers we format and stay numeric.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            header = ["patient_id", *[f"p_{c}" for c in classes]]  # "p_" first: never a formula
            if labels is not None and spec is not None and not spec.labels.multi_label:
                header += ["true", "predicted"]
            w.writerow(header)
            for j, pid in enumerate(ids):
                row = [csv_safe(pid), *[f"{v:.6f}" for v in probs[j]]]
                if len(header) > len(classes) + 1:
                    true = int(labels[j]) if labels.ndim == 1 else int(np.argmax(labels[j]))
                    row += [csv_safe(classes[true]), csv_safe(classes[int(np.argmax(probs[j]))])]
                w.writerow(row)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


