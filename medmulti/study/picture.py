"""A picture of one preprocessed study, to see at a glance whether it is aligned.

:func:`inspect_study` draws a montage: for each 3D modality a row of three
orthogonal slices (axial, coronal, sagittal) through the same world point of the
study grid, with the MR's outline (Otsu foreground) drawn over the CT window,
and each X-ray beside them. Radiological convention: patient left on the viewer's
right in axial and coronal views, superior at the top. Text is literal: the patient
key and modality names are drawn with ``parse_math=False`` (``$`` is a dollar sign)
and control characters escaped (:func:`medmulti.text.printable`).
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from ..errors import SpecError
from ..image import Image
from .preprocess import Preprocessed, Source, preprocess_study
from ..spec import StudySpec
from ..text import printable

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["render_study", "inspect_study", "plot_preprocessed"]

_OUTLINE_COLOR = "#ff3b30"

#: Text properties for every string drawn: literal text, no mathtext, no TeX.
_LITERAL = {"parse_math": False, "usetex": False}


def _display(p: Preprocessed) -> np.ndarray:
    """First channel scaled to [0, 1] for display (z-scores by their 1st/99th percentiles)."""
    a = p.array[..., 0]
    if a.min() >= 0.0 and a.max() <= 1.0:
        return a
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def _views(vol: np.ndarray, center: tuple[int, int, int]):
    z, y, x = center
    return [("axial", vol[z], "upper"), ("coronal", vol[:, y, :], "lower"), ("sagittal", vol[:, :, x], "lower")]


def _aspects(spacing) -> list[float]:
    sz, sy, sx = spacing
    return [sy / sx, sz / sx, sz / sy]


def _outline_on(outline: Preprocessed, target: Preprocessed) -> np.ndarray | None:
    """The outline modality's foreground on the target's grid (resampled when the grids differ)."""
    from ..intensity import foreground_mask

    values = outline.array[..., 0]
    if outline.array.shape[:3] != target.array.shape[:3] or not np.allclose(outline.affine, target.affine, atol=1e-6):
        from ..geometry import Grid, resample_to

        values = resample_to(Image(values, outline.affine, outline.spacing, "MR"),
                             Grid(target.array.shape[:3], target.affine), fill_value=float(values.min())).array
    return foreground_mask(values)


def plot_preprocessed(
    results: Mapping[str, Preprocessed],
    *,
    title: str | None = None,
    outline: str | None = "auto",
) -> "Figure":
    """Draw a montage of already preprocessed modalities.

    Parameters
    ----------
    results : Mapping[str, Preprocessed]
        What :func:`~medmulti.study.preprocess_study` returned.
    title : str, optional
        Figure title (e.g. the manifest's patient key; never header values).
    outline : str or None
        Name of the 3D modality whose outline is drawn over the others;
        ``"auto"`` picks the first MR, ``None`` draws none.

    Returns
    -------
    matplotlib.figure.Figure
        A figure not attached to pyplot (no global state); save it with
        ``fig.savefig(path)``.

    Raises
    ------
    SpecError
        When ``results`` is empty.
    """
    from matplotlib.figure import Figure

    vols = {k: p for k, p in results.items() if p.affine is not None and p.array.ndim == 4}
    flats = {k: p for k, p in results.items() if p.affine is None}
    if outline == "auto":
        outline = next((k for k, p in vols.items() if p.meta.get("kind") == "mr"), None)
    rows = max(1, len(vols))
    xcol = 3 if vols else 0  # the X-ray column
    cols = xcol + (1 if flats else 0)
    if not cols:
        raise SpecError("nothing to draw: no modality of the spec has a source",
                        hint="pass sources as {modality name: path or Image}")
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows + 0.4), layout="constrained")
    grid = fig.add_gridspec(rows, cols)
    # one world point (the reference grid's centre) for every row
    ref = next(iter(vols.values()), None)
    point = None if ref is None else ref.affine @ np.r_[(np.asarray(ref.array.shape[:3]) - 1) / 2.0, 1.0]
    for r, (name, p) in enumerate(vols.items()):
        vol = _display(p)
        idx = np.linalg.solve(p.affine, point)[:3] if point is not None else (np.asarray(vol.shape) - 1) / 2
        center = tuple(int(np.clip(np.rint(i), 0, n - 1)) for i, n in zip(idx, vol.shape))
        mask = None
        if outline is not None and outline in vols and outline != name:
            mask = _outline_on(vols[outline], p).astype(np.float32)
        for c, ((view, img, origin), aspect) in enumerate(zip(_views(vol, center), _aspects(p.spacing))):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, origin=origin, aspect=aspect, interpolation="nearest")
            if mask is not None:
                m = _views(mask, center)[c][1]
                if 0 < m.sum() < m.size:
                    ax.contour(m, levels=[0.5], colors=_OUTLINE_COLOR, linewidths=0.8, origin=origin)
            label = f"{name} ({p.meta.get('kind', '?')})" if c == 0 else ""
            ax.set_title(printable(f"{label} {view}".strip()), fontsize=9, **_LITERAL)
            ax.set_xticks([])
            ax.set_yticks([])
    for i, (name, p) in enumerate(flats.items()):
        ax = fig.add_subplot(grid[min(i, rows - 1), xcol] if len(flats) > 1 else grid[:, xcol])
        ax.imshow(p.array[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(printable(f"{name} ({p.meta.get('kind', '?')})"), fontsize=9, **_LITERAL)
        ax.set_xticks([])
        ax.set_yticks([])
    if outline is not None and outline in vols and len(vols) > 1:
        fig.text(0.01, 0.005, printable(f"outline: {outline} foreground (Otsu)"), color=_OUTLINE_COLOR, fontsize=8,
                 **_LITERAL)
    if title:
        fig.suptitle(printable(title), fontsize=11, **_LITERAL)
    return fig


def render_study(
    sources: Mapping[str, Source],
    spec: StudySpec,
    out: str | PathLike[str] | None = None,
    *,
    patient_id: str | None = None,
    only: Iterable[str] | None = None,
    dpi: int = 100,
) -> "Figure":
    """Preprocess one study and draw the montage (optionally saved as PNG).

    Parameters
    ----------
    sources : Mapping[str, path or Image or None]
        Spec modality name -> source, as for :func:`~medmulti.study.preprocess_study`.
    spec : StudySpec
        The study spec.
    out : str or PathLike, optional
        Write the montage here (PNG).
    patient_id : str, optional
        The manifest key, used in the title and in errors.
    only : iterable of str, optional
        Draw only these modalities.
    dpi : int
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The montage (shows inline in notebooks).

    Raises
    ------
    MedmultiError
        Whatever :func:`~medmulti.study.preprocess_study` raises.
    """
    results = preprocess_study(sources, spec, patient_id=patient_id, only=only)
    fig = plot_preprocessed(results, title=patient_id)
    if out is not None:
        fig.savefig(out, dpi=dpi, format="png")
    return fig


#: The name this picture had first (``medmulti inspect`` draws it); kept as an alias.
#: Not to be confused with :func:`medmulti.io.inspect_source`, a header summary.
inspect_study = render_study

