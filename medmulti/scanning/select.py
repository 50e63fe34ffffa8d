"""Choose one series (or X-ray image) per spec modality and patient, and say why.

The rules of a modality (:attr:`medmulti.spec.ModalitySpec.selection`) are applied in
a fixed order; the first one a series fails is the reason it is left out:

1. its Modality is not one of ``select.modalities``;
2. it holds no image (no PixelData in any file);
3. its kind does not fit: projection radiographs for a 3D modality, or a 3D series
   for an X-ray modality;
4. its ImageType holds a value of ``select.exclude_image_type`` (localizers,
   derived, secondary and projection images for CT/MR by default);
5. its SeriesDescription or ProtocolName matches an ``exclude`` pattern, or none of
   the ``include`` patterns;
6. it has fewer images than ``select.min_images`` (a localizer, a tiny series);
7. (3D) its files are oriented differently (a localizer with its three planes).

The candidates left are grouped by study. Several studies: the one whose date is
closest to the patient's reference date (``date=``: a date column of the labels file)
is taken, else the most recent. Within it, ``select.prefer`` ranks the candidates,
preference by preference; the first preference that separates two candidates decides
between them. When the best two are equal on every preference the choice is
**ambiguous**: the one with the lowest SeriesNumber (then path) is taken and the
report says so.

For an X-ray (2D) modality every file of a projection series is a candidate of its own
(a series may hold a PA and a lateral view).

Everything here is pure; the reasons are fixed words and numbers, never a header
value (a description is reported as matching a pattern, never quoted).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..spec import ModalitySpec, SeriesSelect
from .cohort import Patient, Series, Study

__all__ = ["Candidate", "Verdict", "ModalityChoice", "choose", "rule_verdict", "matches"]


@dataclass(frozen=True)
class Candidate:
    """A series, or one file of a projection series, that a modality could take.

    Attributes
    ----------
    series : Series
    file : int or None
        Index into ``series.files`` for an X-ray candidate; None for a whole series.
    """

    series: Series
    file: int | None = None

    @property
    def label(self) -> str:
        """``series 3`` or ``series 3, image 2 of 3`` (no header text)."""
        if self.file is None or len(self.series.files) == 1:
            return self.series.label
        return f"{self.series.label}, image {self.file + 1} of {len(self.series.files)}"

    @property
    def n_images(self) -> int:
        """Images (frames) in the candidate."""
        return self.series.frames[self.file] if self.file is not None else self.series.n_images


@dataclass
class Verdict:
    """What one modality's rules said about one candidate.

    Attributes
    ----------
    candidate : Candidate
    chosen : bool
    reason : str
        Why chosen or left out (fixed words and numbers).
    """

    candidate: Candidate
    chosen: bool
    reason: str


@dataclass
class ModalityChoice:
    """The choice for one spec modality of one patient.

    Attributes
    ----------
    modality : str
        The spec modality name.
    chosen : Candidate or None
        None: missing.
    reason : str
        Why it was chosen (or why nothing was).
    study_note : str
        How the study was chosen when several had a candidate ("" otherwise).
    ambiguous : bool
        The best candidates tied on every preference.
    verdicts : list of Verdict
        One per candidate seen (series of the modality's DICOM Modality codes).
    nifti : str or None
        The NIfTI file taken instead of a DICOM series (relative to the root).
    """

    modality: str
    chosen: Candidate | None = None
    reason: str = ""
    study_note: str = ""
    ambiguous: bool = False
    verdicts: list[Verdict] = field(default_factory=list)
    nifti: str | None = None

    @property
    def missing(self) -> bool:
        """Nothing was chosen."""
        return self.chosen is None and self.nifti is None

    def cells(self) -> tuple[str, str, str] | None:
        """What the manifest says of the choice: path, ``<modality>_series``, ``<modality>_volume``.

        Returns
        -------
        (str, str, str) or None
            The path relative to the root scanned (the NIfTI file, the X-ray image's
            file, a single-file series' file, or the series' folder, ``"."`` for the
            root itself); the SeriesInstanceUID when the path is a folder (else
            ``""``); ``"0"`` when the series holds several volumes (else ``""``).
            None when nothing was chosen.
        """
        if self.nifti is not None:
            return self.nifti, "", ""
        c = self.chosen
        if c is None:
            return None
        s = c.series
        if c.file is not None:
            return s.files[c.file], "", ""
        if len(s.files) == 1:
            return s.files[0], "", ""
        return s.folder or ".", s.first.series_uid, "0" if s.n_volumes > 1 else ""


def matches(text: str, pattern: str) -> bool:
    """Whether a description matches a ``select`` pattern.

    Parameters
    ----------
    text : str
        SeriesDescription or ProtocolName.
    pattern : str
        Case-insensitive; ``*`` and ``?`` are wildcards over the whole text; a pattern
        without them matches anywhere in the text.

    Returns
    -------
    bool

    Examples
    --------
    >>> matches("CT Scout 2", "scout"), matches("T1 MPRAGE", "t1*"), matches("AX T2", "t1*")
    (True, True, False)
    """
    t, p = text.lower(), pattern.lower()
    if "*" not in p and "?" not in p:
        return p in t
    return fnmatch.fnmatchcase(t, p)


def _described(series: Series, pattern: str) -> bool:
    return any(matches(t, pattern) for t in (series.first.description, series.first.protocol) if t)


def rule_verdict(series: Series, sel: SeriesSelect, dims: int, file: int | None = None) -> str | None:
    """The first rule a series (or one file of it) fails, in words; None when it passes.

    Parameters
    ----------
    series : Series
    sel : SeriesSelect
        The modality's rules.
    dims : {2, 3}
        The modality's dimensions (2: X-ray images, one file each).
    file : int, optional
        For a 2D modality, the file judged.

    Returns
    -------
    str or None
    """
    first = series.first
    if first.modality not in sel.modalities:
        return f"Modality {first.modality} is not one of {list(sel.modalities)}"
    if series.no_pixels == len(series.files):
        return "no image: no file of the series holds PixelData"
    if dims == 3 and first.projection:
        return "projection radiographs, not a 3D series"
    if dims == 2 and not first.projection:
        return "a 3D series, not a projection radiograph"
    hit = [v for v in sel.exclude_image_type if v in first.image_type]
    if hit:
        return f"ImageType holds {hit[0]}"
    for pattern in sel.exclude:
        if _described(series, pattern):
            return f"its description matches the exclude pattern {pattern!r}"
    if sel.include and not any(_described(series, p) for p in sel.include):
        return "its description matches none of the include patterns"
    n = series.frames[file] if file is not None else series.n_images
    if dims == 3 and series.n_volumes > 1:
        n = n // series.n_volumes
    if n < sel.min_images:
        return f"{n} image(s), fewer than min_images {sel.min_images} (a localizer or a tiny series)"
    if dims == 3 and series.mixed_orientations:
        return "its images are oriented differently (a localizer)"
    if file is not None and series.file_problems and series.file_problems[file] is not None:
        return "the image cannot be read: " + str(series.file_problems[file])
    return None


# -- preferences: each gives a value (larger is better) and how to show it -----------------


def _pref(name: str) -> Callable[[Candidate], tuple[Any, str]]:
    lower = name.lower()
    if lower == "readable":
        return lambda c: ({"ok": 1, "unknown": 0}.get(c.series.geometry, -1),
                          {"ok": "assembles", "unknown": "not checked"}.get(c.series.geometry, "does not assemble"))
    if lower == "original":
        return lambda c: (int(c.series.first.original), "ORIGINAL" if c.series.first.original else "not ORIGINAL")
    if lower in ("axial", "coronal", "sagittal"):
        return lambda c: (int(c.series.first.plane == lower), c.series.first.plane)
    if lower == "3d":
        return lambda c: (int(c.series.first.mr_3d), "3D" if c.series.first.mr_3d else "2D")
    if lower == "most_images":
        return lambda c: (c.n_images // max(1, c.series.n_volumes), f"{c.n_images // max(1, c.series.n_volumes)} images")
    if lower == "fewest_images":
        return lambda c: (-(c.n_images // max(1, c.series.n_volumes)),
                          f"{c.n_images // max(1, c.series.n_volumes)} images")
    if lower == "thinnest":
        def thin(c: Candidate) -> tuple[Any, str]:
            mm = c.series.slice_spacing or c.series.first.slice_thickness
            return (-mm if mm else float("-inf"), f"{mm:g} mm slices" if mm else "slice spacing unknown")
        return thin
    if lower == "largest":
        def size(c: Candidate) -> tuple[Any, str]:
            px = c.series.pixels[c.file] if c.file is not None else c.series.first.rows * c.series.first.columns
            return px, f"{px:,} pixels"
        return size
    if lower.startswith("view:"):
        view = name.split(":", 1)[1].strip().upper()
        word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(view)}(?![A-Za-z0-9])", re.IGNORECASE)

        def by_view(c: Candidate) -> tuple[Any, str]:
            own = c.series.views[c.file] if c.file is not None and c.series.views else ""
            if own:
                return int(own == view), f"ViewPosition {own}"
            hit = any(word.search(t) for t in (c.series.first.description, c.series.first.protocol) if t)
            return int(hit), f"description {'names' if hit else 'does not name'} {view} (no ViewPosition)"
        return by_view
    if lower.startswith("description:"):
        pattern = name.split(":", 1)[1]
        return lambda c: (int(_described(c.series, pattern)),
                          f"description {'matches' if _described(c.series, pattern) else 'does not match'} "
                          f"{pattern!r}")
    raise ValueError(f"unknown preference {name!r}")  # the spec refuses these first


def _tie_break(c: Candidate) -> tuple:
    n = c.series.first.series_number
    return (n is None, n or 0, c.series.folder, c.file or 0)


def _study_order(studies: list[Study], reference: _dt.date | None) -> tuple[Callable[[Study], tuple], str]:
    if reference is None:
        return (lambda s: (s.when is not None, s.when or _dt.datetime.min, s.number)), "the most recent"
    ref = _dt.datetime(reference.year, reference.month, reference.day)
    return (lambda s: (s.when is not None, -abs((s.when - ref).total_seconds()) if s.when else 0.0,
                       s.when or _dt.datetime.min, s.number)), "the closest to the patient's date"


def choose(patient: Patient, modality: ModalitySpec, *, date: _dt.date | None = None) -> ModalityChoice:
    """Choose the series (or image) of one modality for one patient.

    Parameters
    ----------
    patient : Patient
    modality : ModalitySpec
        Its ``selection`` gives the rules and preferences.
    date : datetime.date, optional
        The patient's reference date: among several studies, the closest is taken
        (else the most recent).

    Returns
    -------
    ModalityChoice
        ``nifti`` set when the patient has a NIfTI file for the modality (the first in
        path order; several are ambiguous); else ``chosen`` (None when nothing passes
        the rules) and one verdict per candidate seen.
    """
    sel = modality.selection
    out = ModalityChoice(modality=modality.name)
    niftis = sorted(patient.nifti.get(modality.name, []))
    if niftis:
        out.nifti = niftis[0]
        out.ambiguous = len(niftis) > 1
        out.reason = ("the NIfTI file matching select.nifti" if len(niftis) == 1 else
                      f"the first of {len(niftis)} NIfTI files matching select.nifti (in path order)")
        return out
    passed: list[Candidate] = []
    for series in patient.series:
        if series.first.modality not in sel.modalities:
            continue
        files = range(len(series.files)) if modality.dims == 2 and series.first.projection else [None]
        for i in files:
            cand = Candidate(series, i)
            why = rule_verdict(series, sel, modality.dims, i)
            if why is None:
                passed.append(cand)
            else:
                out.verdicts.append(Verdict(cand, False, why))
    if not passed:
        seen = len(out.verdicts)
        out.reason = (f"none of the {seen} {'image' if modality.dims == 2 else 'series'}(s) of "
                      f"{'/'.join(sel.modalities)} passes the rules" if seen else
                      f"no {'/'.join(sel.modalities)} {'image' if modality.dims == 2 else 'series'} found")
        return out
    studies = {s.number: s for s in patient.studies}
    with_candidates = sorted({c.series.study for c in passed})
    if len(with_candidates) > 1:
        key, how = _study_order([studies[n] for n in with_candidates], date)
        best = max((studies[n] for n in with_candidates), key=key)
        if best.when is None:
            how = "the one listed last (no study carries a date)" if all(
                studies[n].when is None for n in with_candidates) else how
        out.study_note = f"study {best.number} of the {len(with_candidates)} studies with a candidate: {how}"
        for c in [c for c in passed if c.series.study != best.number]:
            out.verdicts.append(Verdict(c, False, f"in study {c.series.study}; {out.study_note}"))
        passed = [c for c in passed if c.series.study == best.number]
    prefs = [(p, _pref(p)) for p in sel.prefer]
    scored = [(tuple(f(c)[0] for _, f in prefs), c) for c in passed]
    scored.sort(key=lambda sc: _tie_break(sc[1]))
    scored.sort(key=lambda sc: sc[0], reverse=True)  # stable: ties keep the tie-break order
    best_score, winner = scored[0]
    out.chosen = winner
    out.ambiguous = len(scored) > 1 and scored[1][0] == best_score
    shown = ", ".join(dict.fromkeys(f(winner)[1] for _, f in prefs)) or "no preferences"
    if len(scored) == 1:
        out.reason = f"the only candidate ({shown})"
    elif out.ambiguous:
        n_tied = sum(1 for s, _ in scored if s == best_score)
        out.reason = (f"{n_tied} candidates equal on every preference ({shown}); "
                      "the lowest SeriesNumber was taken")
    else:
        out.reason = f"best of {len(scored)} candidates on {', '.join(sel.prefer)} ({shown})"
    if winner.series.n_volumes > 1:
        out.reason += (f"; it holds {winner.series.n_volumes} volumes (by {winner.series.volume_key}): volume 0 is "
                       f"written in {modality.name}_volume")
    out.verdicts.append(Verdict(winner, True, out.reason))
    for score, c in scored[1:]:
        if score == best_score:
            out.verdicts.append(Verdict(c, False, "tied with the chosen one on every preference"))
            continue
        k = next(i for i, (a, b) in enumerate(zip(score, best_score)) if a != b)
        name, f = prefs[k]
        out.verdicts.append(Verdict(c, False, f"lost on {name}: {f(c)[1]} vs {f(winner)[1]}"))
    return out
