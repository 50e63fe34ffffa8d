"""Missing-modality robustness: a run scored with every non-empty subset of its modalities.

A model meets a patient at the bedside with one modality missing. :func:`evaluate_subsets`
scores a trained run for every non-empty subset of the modalities it was trained on, as
the missing-modality literature reports them (BraTS: the 15 subsets of 4 MR sequences),
by masking the absent modalities out of each batch (:func:`mask_modalities`): their
inputs are zeroed and, where the model has a presence input (``"<name>_present"``, see
:func:`~medmulti.spec.present_input_name`), that input is set to 0, so the fusion
ignores them. A model built without presence inputs (every modality required, no
``on_missing="zeros"``) cannot be told a modality is absent: it is fed zeros only, and
the result says so (``"masking": "zeros"``).
"""

from __future__ import annotations

import itertools
import logging
from os import PathLike
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ManifestError
from ..models.metrics import bootstrap_intervals, classification_metrics
from ..spec import present_input_name
from ..text import printable
from .apply import policies, run_manifest
from .batches import make_sequence, predict_sequence
from .report import write_run_report
from .run_folder import folder_error, open_run, run_cache, write_json

__all__ = ["MASKINGS", "modality_subsets", "subset_name", "mask_modalities", "masking_of", "evaluate_subsets",
           "plot_subsets"]

log = logging.getLogger("medmulti.training")

#: How absent modalities are masked: ``"presence"`` (inputs zeroed and ``<name>_present = 0``),
#: ``"zeros"`` (inputs zeroed only: the model has no presence input for any of them), ``"mixed"``
#: (some of the modalities have presence inputs, the others are zeroed only).
MASKINGS = ("presence", "zeros", "mixed")


def modality_subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``names``: the full set first, then by decreasing size.

    Parameters
    ----------
    names : sequence of str
        Modality names, in spec order.

    Returns
    -------
    list of tuple of str
        ``2**len(names) - 1`` subsets; each keeps the order of ``names``.

    Examples
    --------
    >>> modality_subsets(["ct", "mr", "xray"])
    [('ct', 'mr', 'xray'), ('ct', 'mr'), ('ct', 'xray'), ('mr', 'xray'), ('ct',), ('mr',), ('xray',)]
    """
    names = list(dict.fromkeys(names))
    return [s for k in range(len(names), 0, -1) for s in itertools.combinations(names, k)]


def subset_name(subset: Iterable[str]) -> str:
    """The key of a subset in ``subsets_<split>.json``: names joined by ``+``.

    Examples
    --------
    >>> subset_name(("ct", "xray"))
    'ct+xray'
    """
    return "+".join(subset)


def mask_modalities(inputs: Mapping[str, Any], absent: Iterable[str]) -> dict[str, Any]:
    """Return a batch with the ``absent`` modalities masked out.

    Parameters
    ----------
    inputs : Mapping
        Input name -> array ``(batch, ...)``, as a model takes them (modality names and
        ``"<name>_present"`` flags).
    absent : iterable of str
        Modality names to mask out.

    Returns
    -------
    dict
        A new mapping: each absent modality's input replaced by zeros of the same shape
        and dtype, its ``"<name>_present"`` input (where ``inputs`` has one) by zeros;
        every other entry is the same object as in ``inputs``.

    Examples
    --------
    >>> import numpy as np
    >>> out = mask_modalities({"ct": np.ones((2, 3)), "ct_present": np.ones((2, 1)), "xray": np.ones((2, 4))}, ["ct"])
    >>> [float(out[k].sum()) for k in ("ct", "ct_present", "xray")]
    [0.0, 0.0, 8.0]
    """
    out = dict(inputs)
    for name in absent:
        for key in (name, present_input_name(name)):
            if key in out:
                out[key] = np.zeros_like(np.asarray(out[key]))
    return out


class _SubsetModel:
    """A callable that runs ``model`` once per subset and concatenates the probabilities.

    :func:`~medmulti.training.batches.predict_sequence` applies it batch by batch, so every
    subset is scored on the same batches, read once.
    """

    def __init__(self, model: Any, names: Sequence[str], subsets: Sequence[tuple[str, ...]]) -> None:
        self.model = model
        self.absent = [[n for n in names if n not in s] for s in subsets]

    def __call__(self, inputs: Mapping[str, Any], training: bool = False) -> np.ndarray:
        return np.concatenate([np.asarray(self.model(mask_modalities(inputs, absent), training=training), np.float64)
                               for absent in self.absent], axis=1)


def masking_of(names: Sequence[str], input_keys: Sequence[str]) -> str:
    """Which of :data:`MASKINGS` a model with inputs ``input_keys`` gets for modalities ``names``.

    Parameters
    ----------
    names : sequence of str
        The modalities that may be masked out.
    input_keys : sequence of str
        The model's input names (the run card's ``input_keys``).

    Returns
    -------
    str
        ``"presence"`` when every modality has a ``"<name>_present"`` input, ``"zeros"``
        when none has, ``"mixed"`` otherwise.

    Examples
    --------
    >>> masking_of(["ct", "xray"], ["ct", "xray", "xray_present"])
    'mixed'
    """
    flagged = [present_input_name(n) in input_keys for n in names]
    return "presence" if all(flagged) else "zeros" if not any(flagged) else "mixed"


def evaluate_subsets(
    run_dir: str | PathLike[str],
    manifest: Any = None,
    *,
    split: str = "test",
    cache_dir: str | PathLike[str] | None = None,
    batch_size: int = 8,
    data_root: str | PathLike[str] | None = None,
    on_missing: str | None = None,
    on_corrupt: str | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    write: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained run with every non-empty subset of its modalities.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`~medmulti.training.train`.
    manifest : Manifest or str or PathLike, optional
        Default: the manifest the run was trained on (from the run card).
    split : {"train", "val", "test"}
        Which rows to score.
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the run's, when it lies inside the run folder).
    batch_size : int
        Patients per batch.
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        Policies for missing / unreadable inputs (default: the run's, from its card).
    n_resamples : int
        Bootstrap replicates (resampling patients) of the 95% intervals; 0: no intervals.
    seed : int
        Bootstrap seed; every subset is resampled with the same replicates.
    write : bool
        Also write ``subsets_<split>.json`` and the bar chart ``subsets_<split>.png``
        into the run folder, and refresh its ``report.html``
        (:func:`~medmulti.training.report.write_run_report`).
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        ``{"split", "modalities", "masking", "note", "subsets"}``: ``modalities`` are the
        run's, in spec order; ``masking`` one of :data:`MASKINGS`; ``subsets`` maps each
        subset's name (:func:`subset_name`, the full set first) to ``{"modalities",
        "auc", "auc_ci", "accuracy", "accuracy_ci", "n"}`` (``auc`` ``None`` where the split
        has one class; intervals ``[low, high]`` from
        :func:`~medmulti.models.metrics.bootstrap_intervals`, ``None`` without replicates).

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a usable run folder, or (``write=True``) cannot be written.
    ManifestError
        The manifest has no rows in ``split``.
    MedmultiError
        Data problems, typed.

    Notes
    -----
    Every subset is scored on the same batches, each read once. A patient who already
    lacks a modality in the data keeps it absent in every subset. With ``masking`` other
    than ``"presence"`` the model cannot tell an absent modality from an all-zero image:
    train with ``required: false`` modalities (or ``on_missing="zeros"``) to give it
    presence inputs.
    """
    run, card, spec, model = open_run(run_dir)
    options = policies(card, on_missing, on_corrupt)
    man = run_manifest(run, card, manifest, spec, data_root, options)
    if not man.split(split):
        raise ManifestError(f"the manifest has no {split!r} rows", path=getattr(man, "path", None))
    keys = card["input_keys"]
    names = [n for n in spec.names if n in keys]
    subsets = modality_subsets(names)
    seq = make_sequence(man, spec, split, options=options, batch_size=batch_size, seed=card.get("seed", 0),
                        cache_dir=run_cache(run, card, cache_dir), progress=progress)
    _, y, p = predict_sequence(_SubsetModel(model, names, subsets), seq, keys, progress)
    k = spec.labels.num_classes
    masking = masking_of(names, keys)
    result: dict[str, Any] = {
        "split": split,
        "modalities": names,
        "masking": masking,
        "note": _NOTES[masking],
        "subsets": {},
    }
    multi_label = spec.labels.multi_label
    for j, subset in enumerate(subsets):
        probs = p[:, j * k:(j + 1) * k]
        m = classification_metrics(y, probs, spec.labels.classes, multi_label=multi_label)
        ci = (bootstrap_intervals(y, probs, spec.labels.classes, multi_label=multi_label, n_resamples=n_resamples,
                                  seed=seed) if n_resamples > 0 else {})
        result["subsets"][subset_name(subset)] = {"modalities": list(subset), "auc": m["auc"],
                                                  "auc_ci": ci.get("auc_ci"), "accuracy": m["accuracy"],
                                                  "accuracy_ci": ci.get("accuracy_ci"), "n": m["n"]}
    if masking != "presence":
        log.info("%s", _NOTES[masking])
    if write:
        try:
            write_json(run / f"subsets_{split}.json", result)
            plot_subsets(result, run / f"subsets_{split}.png", title=f"{card.get('model', 'model')}: {split}")
            write_run_report(run)
        except OSError as exc:
            raise folder_error(exc, run, "the subset evaluation into the run folder") from None
    return result


_NOTES = {
    "presence": "absent modalities: inputs zeroed and <modality>_present = 0",
    "zeros": "no presence inputs: absent modalities fed as zeros only, which the model cannot tell from an "
             "all-zero image",
    "mixed": "absent modalities with a presence input: zeroed and <modality>_present = 0; the others are fed "
             "as zeros only",
}


def plot_subsets(result: Mapping[str, Any], path: str | PathLike[str], *, title: str = "") -> None:
    """Draw the subset table as a horizontal bar chart of ROC AUC (with its interval) and accuracy.

    Parameters
    ----------
    result : Mapping
        As returned by :func:`evaluate_subsets`.
    path : str or PathLike
        The PNG to write.
    title : str
        Figure title (drawn literally: no mathtext, control characters escaped).
    """
    from matplotlib.figure import Figure

    literal = {"parse_math": False, "usetex": False}
    rows = list(result["subsets"].items())
    fig = Figure(figsize=(7.4, 1.2 + 0.42 * len(rows)), layout="constrained")
    ax = fig.subplots()
    at = np.arange(len(rows))[::-1]
    auc = [np.nan if r["auc"] is None else r["auc"] for _, r in rows]
    acc = [r["accuracy"] for _, r in rows]
    ax.barh(at + 0.2, auc, height=0.4, label="ROC AUC", color="tab:blue")
    for y, (_, r) in zip(at, rows):
        if r.get("auc_ci"):
            ax.plot(r["auc_ci"], [y + 0.2, y + 0.2], color="k", lw=1.2, marker="|")
    ax.barh(at - 0.2, acc, height=0.4, label="accuracy", color="tab:gray")
    for y, a in zip(at, auc):
        ax.text(0.01, y + 0.2, "n/a" if np.isnan(a) else f"{a:.3f}", va="center", fontsize=8, color="white",
                **literal)
    ax.set_yticks(at)
    ax.set_yticklabels([printable(" + ".join(r["modalities"])) for _, r in rows])
    for label in ax.get_yticklabels():
        label.set(**literal)
    ax.set_xlim(0.0, 1.0)
    ax.axvline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xlabel(f"score on the {printable(result['split'])} split (n={rows[0][1]['n'] if rows else 0}); "
                  f"absent modalities masked ({printable(result['masking'])})", **literal)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for text in legend.get_texts():
        text.set(**literal)
    if title:
        ax.set_title(printable(title), **literal)
    fig.savefig(path, dpi=100)
