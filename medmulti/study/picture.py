"""A picture of one preprocessed study, to see at a glance whether it is aligned.

:func:`render_study` (alias :func:`inspect_study`) draws a montage: for each 3D
modality a row of three orthogonal slices (axial, coronal, sagittal) through the
same world point of the study grid, then a row where the CT and the MR alternate
as a checkerboard (the MR tiles tinted), so that co-registration can be judged by
eye: edges that run on from a grey tile into a tinted one are aligned. The MR's
outline (Otsu foreground) is drawn over the CT, and each X-ray is shown beside
them.

CT is shown in a display window where the anatomy is visible: ``render_study``
adds the soft-tissue window (centre 50, width 400 HU) for display only; for
already preprocessed arrays the widest of the spec's windows is shown. Every CT
panel title names its window. A 3D modality whose field of view covers only part
of the study grid says so in its title (the covered fraction) and the panels
shade the part it does not cover, instead of showing it as silent black.

Radiological convention: patient left on the viewer's right in axial and coronal
views, superior at the top. Text is literal: the patient key and modality names
are drawn with ``parse_math=False`` (``$`` is a dollar sign) and control
characters escaped (:func:`medmulti.text.printable`).
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import MedmultiError, SpecError
from ..geometry import Grid, resample_to
from ..image import Image
from ..intensity import foreground_mask
from ..intensity.windows import CT_WINDOWS, resolve_window
from ..io import inspect_source
from ..spec import StudySpec
from ..text import printable
from .preprocess import Preprocessed, Source, preprocess_study

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["render_study", "inspect_study", "plot_preprocessed"]

_OUTLINE_COLOR = "#ff3b30"
#: RGB tint of the MR tiles of the checkerboard (grey CT tiles alternate with them).
_FUSION_TINT = np.array([1.0, 0.62, 0.2], np.float32)
#: RGBA drawn over the part of a panel outside the modality's field of view.
_OUTSIDE_FOV_RGBA = (0.25, 0.35, 0.75, 0.45)
#: Checkerboard squares per panel side (along its longer side, in millimetres).
_TILES = 8
#: The display window ``render_study`` adds to CT modalities (a soft-tissue window).
DISPLAY_WINDOW = "soft_tissue"

#: Text properties for every string drawn: literal text, no mathtext, no TeX.
_LITERAL = {"parse_math": False, "usetex": False}


# -- display values --------------------------------------------------------------


def _windows(p: Preprocessed) -> list[tuple[float, float]]:
    try:
        return [resolve_window(w) for w in p.meta["intensity"]["windows"]]
    except (KeyError, TypeError, ValueError, SpecError):
        return []


def _ct_channel(p: Preprocessed) -> int:
    """The CT channel to show: ``meta["display_channel"]``, else the widest window."""
    wins = _windows(p)
    chosen = p.meta.get("display_channel")
    if isinstance(chosen, int) and 0 <= chosen < p.array.shape[-1]:
        return chosen
    if len(wins) != p.array.shape[-1]:
        return 0
    return int(np.argmax([w for _, w in wins]))


def _window_label(p: Preprocessed, channel: int) -> str:
    wins = _windows(p)
    if channel >= len(wins):
        return f"channel {channel}"
    center, width = wins[channel]
    names = [k.replace("_", " ") + " " for k, v in CT_WINDOWS.items() if v == (center, width)]
    if channel == p.meta.get("display_channel") and p.meta.get("display_only"):
        role = ", display only"
    else:
        role = f" (spec window {channel + 1})"
    return f"{names[0] if names else ''}window C{center:g} W{width:g} HU{role}"


def _display(p: Preprocessed) -> tuple[np.ndarray, str]:
    """The volume to show scaled to [0, 1], and how (the CT window, the MR's display range)."""
    if p.meta.get("kind") == "ct":
        channel = _ct_channel(p)
        return np.clip(p.array[..., channel], 0, 1), _window_label(p, channel)
    a = p.array[..., 0]
    body = a[foreground_mask(a)]
    lo, hi = np.percentile(body if body.size else a, [1, 99])
    return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1), "1st-99th percentile of the foreground"


def _views(vol: np.ndarray, center: tuple[int, int, int]):
    z, y, x = center
    return [("axial", vol[z], "upper"), ("coronal", vol[:, y, :], "lower"), ("sagittal", vol[:, :, x], "lower")]


def _view_spacings(spacing) -> list[tuple[float, float]]:
    """(row, column) pixel size in mm of each view of :func:`_views`."""
    sz, sy, sx = (float(s) for s in spacing)
    return [(sy, sx), (sz, sx), (sz, sy)]


def _on_grid(values: Preprocessed, target: Preprocessed, array: np.ndarray) -> np.ndarray:
    """``array`` (on ``values``' grid) resampled onto the target's grid when the grids differ."""
    if array.shape[:3] == target.array.shape[:3] and np.allclose(values.affine, target.affine, atol=1e-6):
        return array
    return resample_to(Image(np.asarray(array, np.float32), values.affine, values.spacing, "MR"),
                       Grid(target.array.shape[:3], target.affine), fill_value=float(array.min())).array


def _checkerboard(ct: np.ndarray, mr: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """RGB: grey CT squares alternating with tinted MR squares, about 1/8 of the panel each."""
    rows, cols = ct.shape
    tile = max(rows * pixel_mm[0], cols * pixel_mm[1]) / _TILES
    r = (np.arange(rows) * pixel_mm[0] // tile).astype(int)
    c = (np.arange(cols) * pixel_mm[1] // tile).astype(int)
    mr_tiles = ((r[:, None] + c[None, :]) % 2).astype(bool)
    rgb = np.repeat(ct[..., None], 3, axis=-1)
    rgb[mr_tiles] = mr[mr_tiles, None] * _FUSION_TINT
    return rgb


def _plain(ax: "Axes", title: Sequence[str]) -> None:
    """Title lines (each escaped) and no ticks."""
    ax.set_title("\n".join(printable(t) for t in title if t), fontsize=8.5, **_LITERAL)
    ax.set_xticks([])
    ax.set_yticks([])


def _coverage_note(fov: np.ndarray | None) -> str:
    if fov is None or fov.all():
        return ""
    return f"field of view covers {fov.mean():.0%} of the grid"


def plot_preprocessed(
    results: Mapping[str, Preprocessed],
    *,
    title: str | None = None,
    outline: str | None = "auto",
    fusion: str | None = "auto",
    fov: Mapping[str, np.ndarray] | None = None,
) -> "Figure":
    """Draw a montage of already preprocessed modalities.

    Parameters
    ----------
    results : Mapping[str, Preprocessed]
        What :func:`~medmulti.study.preprocess_study` returned. A CT is shown in
        the channel ``meta["display_channel"]`` names, else in its widest window.
    title : str, optional
        Figure title (e.g. the manifest's patient key; never header values).
    outline : str or None
        Name of the 3D modality whose outline is drawn over the others;
        ``"auto"`` picks the first MR, ``None`` draws none.
    fusion : str or None
        Name of the 3D modality shown as a checkerboard with the first 3D
        modality (the reference) in an extra row; ``"auto"`` picks the first MR
        when there is another 3D modality, ``None`` draws no such row.
    fov : Mapping[str, numpy.ndarray], optional
        Modality name -> bool mask on its grid, True inside its source's field of
        view (:func:`render_study` computes it). Where the mask is not all True the
        row title gives the covered fraction and the panels shade the rest.

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

    fov = dict(fov or {})
    vols = {k: p for k, p in results.items() if p.affine is not None and p.array.ndim == 4}
    flats = {k: p for k, p in results.items() if p.affine is None}
    mrs = [k for k, p in vols.items() if p.meta.get("kind") == "mr"]
    if outline == "auto":
        outline = mrs[0] if mrs else None
    base = next(iter(vols), None)
    if fusion == "auto":
        fusion = next((k for k in mrs if k != base), None)
    if fusion is not None and (fusion not in vols or fusion == base):
        fusion = None
    rows = max(1, len(vols) + (fusion is not None))
    xcol = 3 if vols else 0  # the X-ray column
    cols = xcol + (1 if flats else 0)
    if not cols:
        raise SpecError("nothing to draw: no modality of the spec has a source",
                        hint="pass sources as {modality name: path or Image}")
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows + 0.5), layout="constrained")
    grid = fig.add_gridspec(rows, cols)
    # one world point (the reference grid's centre) for every row
    point = None if base is None else vols[base].affine @ np.r_[(np.asarray(vols[base].array.shape[:3]) - 1) / 2, 1]
    shown: dict[str, tuple[np.ndarray, str]] = {}
    for r, (name, p) in enumerate(vols.items()):
        shown[name] = _display(p)
        mask = None
        if outline is not None and outline in vols and outline != name:
            mask = foreground_mask(_on_grid(vols[outline], p, vols[outline].array[..., 0])).astype(np.float32)
        head = [f"{name} ({p.meta.get('kind', '?')})", _coverage_note(fov.get(name))]
        _volume_row(fig, grid, r, p, shown[name][0], point, head, shown[name][1], mask, fov.get(name))
    if fusion is not None and base is not None:
        p = vols[base]
        mr = _on_grid(vols[fusion], p, shown[fusion][0])
        head = [f"{base} | {fusion} checkerboard", f"{fusion} tiles tinted"]
        _volume_row(fig, grid, len(vols), p, shown[base][0], point, head, shown[base][1], None, None, fused=mr)
    for i, (name, p) in enumerate(flats.items()):
        ax = fig.add_subplot(grid[min(i, rows - 1), xcol] if len(flats) > 1 else grid[:, xcol])
        ax.imshow(p.array[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        _plain(ax, [f"{name} ({p.meta.get('kind', '?')})"])
    notes = []
    if outline is not None and outline in vols and len(vols) > 1:
        notes.append(f"red outline: {outline} foreground (Otsu)")
    if any(not m.all() for m in fov.values()):
        notes.append("shaded blue: outside the modality's field of view")
    if notes:
        fig.supxlabel(printable("   ".join(notes)), fontsize=8, **_LITERAL)
    if title:
        fig.suptitle(printable(title), fontsize=11, **_LITERAL)
    return fig


def _volume_row(fig: "Figure", grid, r: int, p: Preprocessed, vol: np.ndarray, point, head: list[str], window: str,
                mask: np.ndarray | None, fov: np.ndarray | None, fused: np.ndarray | None = None) -> None:
    """One row of three orthogonal views through ``point`` (world, LPS mm)."""
    idx = np.linalg.solve(p.affine, point)[:3] if point is not None else (np.asarray(vol.shape) - 1) / 2
    z, y, x = (int(np.clip(np.rint(i), 0, n - 1)) for i, n in zip(idx, vol.shape))
    center = (z, y, x)
    layers = [_views(a, center) if a is not None else [None] * 3 for a in (fused, mask, fov)]
    for c, ((view, img, origin), pixel_mm, mr, m, inside) in enumerate(
            zip(_views(vol, center), _view_spacings(p.spacing), *layers)):
        ax = fig.add_subplot(grid[r, c])
        aspect = pixel_mm[0] / pixel_mm[1]
        if mr is not None:
            ax.imshow(_checkerboard(img, mr[1], pixel_mm), origin=origin, aspect=aspect, interpolation="nearest")
        else:
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, origin=origin, aspect=aspect, interpolation="nearest")
        if m is not None and 0 < m[1].sum() < m[1].size:
            ax.contour(m[1], levels=[0.5], colors=_OUTLINE_COLOR, linewidths=0.8, origin=origin)
        if inside is not None and not inside[1].all():
            shade = np.zeros((*inside[1].shape, 4), np.float32)
            shade[~inside[1]] = _OUTSIDE_FOV_RGBA
            ax.imshow(shade, origin=origin, aspect=aspect, interpolation="nearest")
        first = " ".join(t for t in (head[0] if c == 0 else "", view) if t)
        _plain(ax, [first, head[1] if c == 0 else "", window])


# -- the study -------------------------------------------------------------------


def _with_display_window(spec: StudySpec, window: Any) -> tuple[StudySpec, dict[str, int]]:
    """The spec with ``window`` appended to each CT's windows; CT name -> its channel."""
    data = spec.to_dict()
    added: dict[str, int] = {}
    if window is None:
        return spec, added
    target = resolve_window(window)
    for m in data["modalities"]:
        if m["kind"] != "ct" or "windows" not in m.get("intensity", {}):
            continue
        wins = [resolve_window(w) for w in m["intensity"]["windows"]]
        if target not in wins:
            m["intensity"]["windows"] = [*m["intensity"]["windows"], list(target)]
            wins.append(target)
        added[m["name"]] = wins.index(target)
    return StudySpec.from_dict(data), added


def _source_geometry(source: Source, modality: str | None) -> tuple[np.ndarray | None, tuple[int, ...]] | None:
    """Affine and 3D shape of a source from its headers (an Image: its own)."""
    if isinstance(source, Image):
        return (None if source.affine is None else np.asarray(source.affine)), tuple(source.shape[:3])
    try:
        info = inspect_source(source, modality=modality)  # type: ignore[arg-type]
    except MedmultiError:  # preprocess_study read it already; a header oddity only loses the shading
        return None
    return (None if info.affine is None else np.asarray(info.affine)), tuple(info.shape[:3])


def _field_of_view(p: Preprocessed, source_affine: np.ndarray, source_shape: Sequence[int]) -> np.ndarray:
    """Where on ``p``'s grid the source has voxels (through the registration, if any).

    Parameters
    ----------
    p : Preprocessed
        A 3D modality on its grid.
    source_affine : numpy.ndarray
        4x4 array-order LPS affine of the source image.
    source_shape : sequence of int
        The source's 3D shape.

    Returns
    -------
    numpy.ndarray
        bool of shape ``p.array.shape[:3]``; True where a grid voxel centre lies
        within half a voxel of the source's voxels.
    """
    shape = p.array.shape[:3]
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    to_source = np.linalg.inv(source_affine) @ p.affine
    registration = p.meta.get("registration") or {}
    if registration.get("matrix") is not None:  # reference LPS -> image LPS
        to_source = np.linalg.inv(source_affine) @ np.asarray(registration["matrix"], np.float64) @ p.affine
    src = idx @ to_source[:3, :3].T + to_source[:3, 3]
    n = np.asarray(source_shape[:3], np.float64)
    return np.all((src >= -0.5 - 1e-6) & (src <= n - 0.5 + 1e-6), axis=-1)


def render_study(
    sources: Mapping[str, Source],
    spec: StudySpec,
    out: str | PathLike[str] | None = None,
    *,
    patient_id: str | None = None,
    only: Iterable[str] | None = None,
    dpi: int = 100,
    display_window: str | Sequence[float] | None = DISPLAY_WINDOW,
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
    display_window : str or (center, width), optional
        CT window shown (a preset name of
        :data:`~medmulti.intensity.CT_WINDOWS` or HU); added to the CT's windows
        for the picture only. ``None`` shows the widest of the spec's windows.

    Returns
    -------
    matplotlib.figure.Figure
        The montage (shows inline in notebooks).

    Raises
    ------
    MedmultiError
        Whatever :func:`~medmulti.study.preprocess_study` raises.
    """
    shown_spec, channels = _with_display_window(spec, display_window)
    results = preprocess_study(sources, shown_spec, patient_id=patient_id, only=only)
    own = {m.name: m for m in spec.modalities}
    fov: dict[str, np.ndarray] = {}
    for name, p in results.items():
        if name in channels:
            p.meta["display_channel"] = channels[name]
            p.meta["display_only"] = channels[name] >= len(own[name].intensity.get("windows", []))
        if p.affine is not None and sources.get(name) is not None:
            geometry = _source_geometry(sources[name], str(p.meta.get("modality") or "") or None)
            if geometry is not None and geometry[0] is not None:
                fov[name] = _field_of_view(p, geometry[0], geometry[1])
    fig = plot_preprocessed(results, title=patient_id, fov=fov)
    if out is not None:
        fig.savefig(out, dpi=dpi, format="png")
    return fig


#: The name this picture had first (``medmulti inspect`` draws it); kept as an alias.
#: Not to be confused with :func:`medmulti.io.inspect_source`, a header summary.
inspect_study = render_study
