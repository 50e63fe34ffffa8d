"""Where the model looked: Grad-CAM per branch, and the fusion's weight per modality.

:func:`grad_cam` follows Selvaraju et al. (2017, "Grad-CAM: visual explanations from deep
networks via gradient-based localization"): for each modality branch, the gradient of the
class score with respect to the branch's last convolutional feature map (the ``relu``
output of the last ``<modality>_conv<i>`` block of :func:`~medmulti.models.branches.conv_branch`),
averaged over space, weighs the feature channels; their weighted sum, rectified and
resampled onto the modality's input grid, is the heat map. 2D and 3D branches alike.

:func:`fusion_weights` reads the per-modality weights of an attention or gated fusion from
the fusion layer itself, fed by a sub-model that stops at the fusion's inputs.
:func:`explain` does both for one patient of a run folder and writes PNGs (three orthogonal
views through the heat map's maximum for 3D) and ``explain.json``. Patients are named by
their manifest key only; nothing here reads a header value.
"""

from __future__ import annotations

import dataclasses
import re
from os import PathLike
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ManifestError, OutputError, SpecError, os_error_reason
from ..models.layers import AttentionFusion, ConcatFusion, GatedFusion
from ..spec import present_input_name
from ..text import printable
from .apply import policies, run_manifest
from .batches import make_sequence
from .run_folder import open_run, run_cache, write_json

__all__ = ["EXPLAIN_FILE", "feature_layer", "model_modalities", "grad_cam", "fusion_weights", "gate_shares",
           "explain", "plot_heatmap"]

#: What :func:`explain` writes into its out folder, besides ``gradcam_<modality>.png``.
EXPLAIN_FILE = "explain.json"


def model_modalities(model: Any) -> list[str]:
    """The modality inputs of a fusion model, in the model's order (presence flags left out).

    Parameters
    ----------
    model : keras.Model
        A model of :func:`~medmulti.models.build_fusion_model` (dict inputs).

    Returns
    -------
    list of str
    """
    keys = list(model.input)
    return [k for k in keys if not any(k == present_input_name(n) for n in keys if n != k)]


def feature_layer(model: Any, modality: str) -> Any:
    """The layer whose output is the last convolutional feature map of a modality's branch.

    Parameters
    ----------
    model : keras.Model
        A fusion model.
    modality : str
        The branch (modality name).

    Returns
    -------
    keras.layers.Layer or None
        ``<modality>_relu<i>`` after the last ``<modality>_conv<i>`` (a ``Conv2D`` /
        ``Conv3D``), or that convolution when it has no activation layer; ``None`` when
        the branch has no such convolution (a ``keras.applications`` backbone).
    """
    import keras

    pattern = re.compile(rf"{re.escape(modality)}_conv(\d+)")
    convs = [(int(m.group(1)), layer) for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D))
             and (m := pattern.fullmatch(layer.name))]
    if not convs:
        return None
    index, conv = max(convs, key=lambda item: item[0])
    names = {layer.name for layer in model.layers}
    return model.get_layer(f"{modality}_relu{index}") if f"{modality}_relu{index}" in names else conv


def _resize(cam: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of a feature-grid map onto the input grid (cell centres aligned)."""
    from scipy import ndimage

    shape = tuple(int(s) for s in shape)
    if cam.shape == shape:
        return cam.astype(np.float32)
    zoomed = ndimage.zoom(cam, [s / c for s, c in zip(shape, cam.shape)], order=1, mode="nearest", grid_mode=True)
    out = np.zeros(shape, np.float32)  # zoom may round a size by one: crop or edge-pad to the exact grid
    crop = tuple(slice(0, min(a, b)) for a, b in zip(shape, zoomed.shape))
    out[crop] = zoomed[crop]
    pad = [(0, max(0, s - z)) for s, z in zip(shape, zoomed.shape)]
    return np.pad(out[crop], pad, mode="edge") if any(p[1] for p in pad) else out


def grad_cam(
    model: Any,
    inputs: Mapping[str, Any],
    *,
    class_index: int | None = None,
    modalities: Sequence[str] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Grad-CAM heat maps per modality branch, on each modality's input grid.

    Parameters
    ----------
    model : keras.Model
        A fusion model (:func:`~medmulti.models.build_fusion_model`, or loaded from a run).
    inputs : Mapping
        One batch, as the model takes it: input name -> float32 ``(batch, *spatial, channels)``
        and ``(batch, 1)`` presence flags.
    class_index : int, optional
        The class explained (default: each sample's predicted class).
    modalities : sequence of str, optional
        Branches to explain (default: every modality whose branch is a plain CNN).

    Returns
    -------
    heat : dict
        Modality -> float32 ``(batch, *spatial)`` in [0, 1] (each sample scaled by its
        maximum; all zeros where nothing in that branch raises the score, e.g. an absent
        modality).
    probabilities : numpy.ndarray
        The model's output for ``inputs``, float64 ``(batch, classes)``.

    Raises
    ------
    ValueError
        A requested modality has no convolutional branch, or ``class_index`` is out of range.

    Notes
    -----
    The score is the class's logit taken from the ``diagnosis`` layer, centred over the
    classes for a softmax head (a softmax is unchanged by a shift common to every logit,
    so only the centred logit is identified). Gradients are taken with
    :class:`tf.GradientTape` in inference mode.
    """
    import keras
    import tensorflow as tf

    names = model_modalities(model) if modalities is None else list(modalities)
    layers = {n: feature_layer(model, n) for n in names}
    if modalities is not None and any(v is None for v in layers.values()):
        raise ValueError(f"no convolutional branch for {[n for n, v in layers.items() if v is None]}")
    layers = {n: v for n, v in layers.items() if v is not None}
    head = model.get_layer("diagnosis")
    if class_index is not None and not 0 <= class_index < head.units:
        raise ValueError(f"class_index must be in [0, {head.units}), got {class_index}")
    grad_model = keras.Model(model.input, [*(layers[n].output for n in layers), head.input])
    batch = {k: tf.convert_to_tensor(np.asarray(v, np.float32)) for k, v in inputs.items() if k in model.input}
    softmax = getattr(head.activation, "__name__", "") == "softmax"
    with tf.GradientTape() as tape:
        *features, fused = grad_model(batch, training=False)
        logits = tf.matmul(fused, head.kernel) + head.bias
        probs = tf.nn.softmax(logits) if softmax else tf.sigmoid(logits)
        chosen = tf.argmax(probs, axis=-1) if class_index is None else tf.fill(tf.shape(logits)[:1], class_index)
        scores = logits - tf.reduce_mean(logits, axis=-1, keepdims=True) if softmax else logits
        score = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
    grads = tape.gradient(score, features)
    heat: dict[str, np.ndarray] = {}
    for name, fmap, grad in zip(layers, features, grads):
        fmap = fmap.numpy().astype(np.float32)  # 16-bit in a mixed-precision model
        grad = np.zeros_like(fmap) if grad is None else grad.numpy().astype(np.float32)
        spatial = tuple(range(1, fmap.ndim - 1))
        weights = grad.mean(axis=spatial, keepdims=True)
        cams = np.maximum((weights * fmap).sum(axis=-1), 0.0)
        grid = tuple(int(s) for s in model.input[name].shape[1:-1])
        maps = []
        for cam in cams:
            cam = _resize(cam, grid)
            top = float(cam.max())
            maps.append(cam / top if top > 0 else np.zeros_like(cam))
        heat[name] = np.stack(maps).astype(np.float32)
    return heat, probs.numpy().astype(np.float64)


def fusion_weights(model: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The weight the fusion gives each modality, per sample, where the fusion has weights.

    Parameters
    ----------
    model : keras.Model
        A fusion model.
    inputs : Mapping
        One batch, as the model takes it.

    Returns
    -------
    dict
        ``{"method", "modalities", "weights"}``: ``method`` is ``"attention"``,
        ``"gated"`` or ``"concat"``; ``weights`` float64 ``(batch, n_modalities)`` summing to
        1 over the present modalities (0 for absent ones), or ``None`` for ``"concat"``
        (a concatenation has no per-modality weight). Attention: the layer's attention
        weights (its output with ``return_weights=True``). Gated: each modality's share of
        the gates, ``g_m / sum_m g_m`` averaged over the embedding features (the
        gate-weighted mean the layer outputs uses exactly these shares per feature).

    Raises
    ------
    ValueError
        The model has no medmulti fusion layer.
    """
    import keras

    fusion = next((layer for layer in model.layers if isinstance(layer, (AttentionFusion, GatedFusion, ConcatFusion))),
                  None)
    if fusion is None:
        raise ValueError("the model has no medmulti fusion layer (AttentionFusion, GatedFusion, ConcatFusion)")
    names = model_modalities(model)
    if isinstance(fusion, ConcatFusion):
        return {"method": "concat", "modalities": names, "weights": None}
    sub = keras.Model(model.input, fusion.input)
    stack, mask = sub({k: np.asarray(v, np.float32) for k, v in inputs.items() if k in model.input}, training=False)
    if isinstance(fusion, AttentionFusion):
        _, weights = fusion([stack, mask], return_weights=True)
        return {"method": "attention", "modalities": names, "weights": np.asarray(weights, np.float64)}
    shares = gate_shares(fusion, stack, mask)
    return {"method": "gated", "modalities": names, "weights": shares.mean(axis=-1)}


def gate_shares(layer: Any, stack: Any, mask: Any) -> np.ndarray:
    """Per-feature share of each modality's gate in a :class:`~medmulti.models.layers.GatedFusion`.

    Parameters
    ----------
    layer : GatedFusion
        A built gated fusion layer (its ``kernel`` and ``bias`` are read).
    stack : array_like
        Float ``(batch, n_modalities, dim)``: the layer's first input.
    mask : array_like
        Float ``(batch, n_modalities)``: the layer's second input (> 0 present).

    Returns
    -------
    numpy.ndarray
        Float64 ``(batch, n_modalities, dim)``: ``g_m / sum_m g_m`` with
        ``g_m = sigmoid(W e_m + b)`` for present modalities and 0 for absent ones, so that
        the layer's output is ``sum_m share_m * e_m`` (a test holds it to the layer).
    """
    stack = np.asarray(stack, np.float64)
    mask = np.asarray(mask, np.float64)[..., None]
    stack = np.where(mask > 0, stack, 0.0)
    gates = mask / (1.0 + np.exp(-(stack @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias, np.float64))))
    return gates / np.maximum(gates.sum(axis=1, keepdims=True), 1e-6)


def _find_row(man: Any, patient_id: str) -> Any:
    rows = [r for r in man.rows if r.key == patient_id]
    if not rows:  # a patient key alone, when the patient has one study
        rows = [r for r in man.rows if r.patient_id == patient_id]
        if len(rows) > 1:
            raise ManifestError("the patient has several studies; name one as patient_id/study_id",
                                patient_id=patient_id, path=getattr(man, "path", None))
    if not rows:
        raise ManifestError("no such patient in the manifest", patient_id=patient_id, path=getattr(man, "path", None),
                            hint="pass a key of the manifest's patient_id column (patient_id/study_id with studies)")
    return rows[0]


def explain(
    run_dir: str | PathLike[str],
    patient_id: str,
    manifest: Any = None,
    *,
    out: str | PathLike[str] | None = None,
    target: str | None = None,
    cache_dir: str | PathLike[str] | None = None,
    data_root: str | PathLike[str] | None = None,
    on_missing: str | None = None,
    on_corrupt: str | None = None,
) -> dict[str, Any]:
    """Explain a run's prediction for one patient: Grad-CAM per modality and fusion weights.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`~medmulti.training.train`.
    patient_id : str
        The patient's manifest key (``patient_id``, or ``patient_id/study_id`` with studies).
    manifest : Manifest or str or PathLike, optional
        Default: the manifest the run was trained on (from the run card).
    out : str or PathLike, optional
        The folder to write into (default ``RUN_DIR/explain``); created if needed.
    target : str, optional
        The class explained (default: the predicted class).
    cache_dir : str or PathLike, optional
        Preprocessing cache (default: the run's, when it lies inside the run folder).
    data_root : str or PathLike, optional
        Passed to :func:`~medmulti.manifest.load_manifest`.
    on_missing, on_corrupt : {"error", "skip", "zeros"}, optional
        Policies for missing / unreadable inputs (default: the run's).

    Returns
    -------
    dict
        What ``OUT/explain.json`` holds: ``patient_id``, ``split``, ``probabilities``
        (class -> probability), ``predicted_class``, ``target_class``, ``modalities``
        (modality -> ``{"present", "layer", "grid", "peak_index", "png"}``: the heat map's
        maximum in input-array index order, ``None`` for an absent modality), and
        ``fusion`` (``{"method", "weights"}``: modality -> weight, ``None`` for concat).

    Raises
    ------
    ManifestError
        The patient is not in the manifest (or the policies leave it out).
    SpecError
        ``target`` is not one of the spec's classes.
    RunFolderError
        ``run_dir`` is not a usable run folder.
    OutputError
        ``out`` cannot be written.
    MedmultiError
        Data problems, typed.
    """
    run, card, spec, model = open_run(run_dir)
    classes = list(spec.labels.classes)
    if target is not None and target not in classes:
        raise SpecError(f"target class {target!r} is not one of the spec's classes {classes}", keyword="classes")
    options = policies(card, on_missing, on_corrupt)
    man = run_manifest(run, card, manifest, spec, data_root, options)
    row = _find_row(man, patient_id)
    try:
        seq = make_sequence(dataclasses.replace(man, rows=[row]), spec, row.split, options=options, batch_size=1,
                            seed=card.get("seed", 0), cache_dir=run_cache(run, card, cache_dir), progress=False)
        patient = seq.get_patient(row.key)
    except ManifestError as exc:
        raise exc.with_context(patient_id=row.key) from None
    keys = card["input_keys"]
    batch = {k: patient[k][None] for k in keys}
    heat, probs = grad_cam(model, batch, class_index=None if target is None else classes.index(target))
    predicted = classes[int(np.argmax(probs[0]))]
    fusion = fusion_weights(model, batch)
    folder = Path(out) if out is not None else run / "explain"
    doc: dict[str, Any] = {
        "patient_id": row.key,
        "split": row.split,
        "probabilities": {c: float(p) for c, p in zip(classes, probs[0])},
        "predicted_class": predicted,
        "target_class": target or predicted,
        "method": "Grad-CAM (last convolutional feature map of each branch)",
        "modalities": {},
        "fusion": {"method": fusion["method"],
                   "weights": None if fusion["weights"] is None else
                   {m: float(w) for m, w in zip(fusion["modalities"], fusion["weights"][0])}},
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in model_modalities(model):
            present = bool(patient.get(present_input_name(name), np.ones(1))[0] > 0)
            entry: dict[str, Any] = {"present": present, "layer": None, "grid": None, "peak_index": None, "png": None}
            doc["modalities"][name] = entry
            if name not in heat:
                entry["note"] = "no convolutional branch (a keras.applications backbone): no Grad-CAM"
                continue
            cam = heat[name][0]
            entry["layer"] = feature_layer(model, name).name
            entry["grid"] = list(cam.shape)
            if present and cam.max() > 0:
                entry["peak_index"] = [int(i) for i in np.unravel_index(int(np.argmax(cam)), cam.shape)]
            entry["png"] = f"gradcam_{name}.png"
            plot_heatmap(batch[name][0], cam, folder / entry["png"],
                         title=f"patient {row.key}, {name}: Grad-CAM for {doc['target_class']}")
        write_json(folder / EXPLAIN_FILE, doc)
    except OSError as exc:
        reason = os_error_reason(exc)
        raise OutputError(f"cannot write the explanation: {reason}", path=folder,
                          hint="choose a writable out folder with free space") from None
    return doc


def plot_heatmap(image: np.ndarray, heat: np.ndarray, path: str | PathLike[str], *, title: str = "") -> None:
    """Draw a heat map over its input: one panel for 2D, three orthogonal views for 3D.

    Parameters
    ----------
    image : numpy.ndarray
        The model input of one modality, ``(*spatial, channels)`` (channel 0 is drawn).
    heat : numpy.ndarray
        ``spatial`` heat map in [0, 1] on the same grid.
    path : str or PathLike
        The PNG to write.
    title : str
        Figure title (drawn literally: no mathtext, control characters escaped).

    Notes
    -----
    3D views pass through the heat map's maximum ``(z, y, x)``: the axial slice ``z``, the
    coronal slice ``y`` and the sagittal slice ``x`` of the input array (index order, as
    the model sees it), each marked with a cross at the maximum. An all-zero map (nothing
    in the branch raises the class score, or the modality is absent) is drawn through the
    centre, unmarked, and the title says so.
    """
    from matplotlib.figure import Figure

    literal = {"parse_math": False, "usetex": False}
    img = np.asarray(image, np.float32)[..., 0]
    heat = np.asarray(heat, np.float32)
    flat = not heat.max() > 0  # nothing in this branch raised the score: centre views, no marker
    peak = tuple(s // 2 for s in heat.shape) if flat else np.unravel_index(int(np.argmax(heat)), heat.shape)
    if heat.ndim == 2:
        views = [("image (row, column)", img, heat, (peak[1], peak[0]), "upper")]
    else:
        z, y, x = peak
        views = [(f"axial z={z}", img[z], heat[z], (x, y), "upper"),
                 (f"coronal y={y}", img[:, y, :], heat[:, y, :], (x, z), "lower"),
                 (f"sagittal x={x}", img[:, :, x], heat[:, :, x], (y, z), "lower")]
    fig = Figure(figsize=(3.2 * len(views) + 0.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    shown = None
    for ax, (label, base, hmap, (px, py), origin) in zip(axes, views):
        ax.imshow(base, cmap="gray", origin=origin, interpolation="nearest")
        shown = ax.imshow(hmap, cmap="inferno", alpha=0.5, vmin=0.0, vmax=1.0, origin=origin, interpolation="bilinear")
        if not flat:
            ax.plot([px], [py], marker="+", color="cyan", ms=12, mew=1.5)
        ax.set_title(label, **literal)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label="Grad-CAM")
    if title or flat:
        note = " (empty map: no region raises the score)" if flat else ""
        fig.suptitle(printable(title) + note, **literal)
    fig.savefig(path, dpi=100)
