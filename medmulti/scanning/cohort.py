"""The scanned cohort: series parts merged into series, series into studies, studies into patients.

A series is the files sharing a (PatientID, SeriesInstanceUID). Its files are usually
in one folder and read in one batch (one :class:`~medmulti.scanning.headers.SeriesPart`);
a series spread over several folders or batches is merged here. A SOPInstanceUID met
twice in one series is one instance copied twice: the copies outside the folder holding
most of the series are left out (and counted), so a stray copy of a slice in another
patient's folder does not drag the series out of its own folder.

Everything here is pure: parts in, :class:`Patient` records out.
"""

from __future__ import annotations

import datetime as _dt
import posixpath
from dataclasses import dataclass, field

from .headers import SeriesPart
from .keys import normalise_patient_id

__all__ = ["Series", "Study", "Patient", "build_patients", "study_datetime"]


@dataclass
class Series:
    """One DICOM series of one patient (identifying fields for rules only, never shown).

    Attributes
    ----------
    number : int
        1-based index of the series within its patient (report order: study, SeriesNumber, folder).
    study : int
        1-based index of its study within the patient (oldest first).
    first : SeriesPart
        The part its header fields come from.
    files : list of str
        Its files (relative to the root), duplicates left out.
    frames : list of int
        Images per file.
    views, pixels, file_problems : list
        Per file, as in :class:`SeriesPart` (projection series only).
    folder : str
        The folder holding all its files (their deepest common folder), relative to the root.
    n_images : int
        Images (frames) in all its files.
    geometry : {"ok", "problem", "unknown"}
        ``unknown`` when its files came from several batches and no part failed.
    problem : str or None
        The readers' verdict when ``geometry`` is ``"problem"``.
    mixed_orientations : bool
    n_volumes : int
    volume_key : str or None
    slice_spacing : float or None
    duplicates : list of str
        Copies of instances left out (relative paths).
    no_pixels : int
        Files without PixelData.
    """

    number: int
    study: int
    first: SeriesPart
    files: list[str]
    frames: list[int]
    views: list[str]
    pixels: list[int]
    file_problems: list[str | None]
    folder: str
    n_images: int
    geometry: str
    problem: str | None
    mixed_orientations: bool
    n_volumes: int
    volume_key: str | None
    slice_spacing: float | None
    duplicates: list[str] = field(default_factory=list)
    no_pixels: int = 0

    @property
    def label(self) -> str:
        """How the report names it: ``series <SeriesNumber>`` (or ``series #<index>`` without a number)."""
        n = self.first.series_number
        return f"series {n}" if n is not None else f"series #{self.number}"


@dataclass
class Study:
    """One study of a patient (no date or UID is shown; studies are numbered oldest first).

    Attributes
    ----------
    number : int
        1-based, oldest first (undated studies first).
    uid : str
        StudyInstanceUID (grouping only).
    when : datetime.datetime or None
        StudyDate + StudyTime (rules only).
    accessions : set of str
        AccessionNumbers seen in it (label joins only).
    """

    number: int
    uid: str
    when: _dt.datetime | None
    accessions: set[str] = field(default_factory=set)


@dataclass
class Patient:
    """One patient of the export (by normalised PatientID; PHI fields for keys and rules only).

    Attributes
    ----------
    patient_id : str
        Normalised PatientID (never shown unless keys are PatientIDs).
    names : set of str
        PatientName values seen (to recognise a name in a path; never shown).
    studies : list of Study
    series : list of Series
    nifti : dict
        Spec modality -> NIfTI files (relative to the root) matched to this patient.
    """

    patient_id: str
    names: set[str] = field(default_factory=set)
    studies: list[Study] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    nifti: dict[str, list[str]] = field(default_factory=dict)

    @property
    def accessions(self) -> set[str]:
        """Every AccessionNumber of the patient's studies."""
        return {a for s in self.studies for a in s.accessions}


def study_datetime(date: str, time: str = "") -> _dt.datetime | None:
    """StudyDate (``YYYYMMDD``) and StudyTime (``HHMMSS.FFFFFF``, any prefix) as a datetime.

    Parameters
    ----------
    date, time : str
        DICOM DA and TM texts (PS3.5 6.2); ``YYYY.MM.DD`` (ACR-NEMA) is read too.

    Returns
    -------
    datetime.datetime or None
        None for an absent or malformed date; a malformed time counts as midnight.

    Examples
    --------
    >>> study_datetime("20030505", "1215")
    datetime.datetime(2003, 5, 5, 12, 15)
    >>> study_datetime("") is None
    True
    """
    d = date.replace(".", "").strip()
    if len(d) != 8 or not d.isdigit():
        return None
    try:
        day = _dt.datetime(int(d[:4]), int(d[4:6]), int(d[6:8]))
    except ValueError:
        return None
    t = time.replace(":", "").split(".")[0].strip()
    if t.isdigit() and len(t) in (2, 4, 6):
        h, m, s = int(t[:2]), int(t[2:4] or 0), int(t[4:6] or 0)
        if h < 24 and m < 60 and s < 60:
            return day.replace(hour=h, minute=m, second=s)
    return day


def _common_folder(files: list[str]) -> str:
    folders = {f.rpartition("/")[0] for f in files}
    if len(folders) == 1:
        return folders.pop()
    common = posixpath.commonpath(list(folders)) if "" not in folders else ""
    return common


def _merge(parts: list[SeriesPart]) -> dict:
    """Merged per-file lists and geometry of one series' parts, duplicates of instances left out."""
    if len(parts) > 1:
        parts = sorted(parts, key=lambda p: -len(p.files))
    seen: set[str] = set()
    out: dict = {"files": [], "frames": [], "views": [], "pixels": [], "file_problems": [], "duplicates": []}
    kept_parts = []
    for part in parts:
        kept = 0
        for i, name in enumerate(part.files):
            uid = part.sop_uids[i]
            if uid and uid in seen:
                out["duplicates"].append(name)
                continue
            if uid:
                seen.add(uid)
            kept += 1
            out["files"].append(name)
            out["frames"].append(part.frames[i])
            out["pixels"].append(part.pixels[i])
            if part.projection:
                out["views"].append(part.views[i])
                out["file_problems"].append(part.file_problems[i])
        if kept:
            kept_parts.append((part, kept == len(part.files)))
    whole = [p for p, complete in kept_parts]
    if len(whole) == 1 and kept_parts[0][1]:
        p = whole[0]
        out.update(geometry=p.geometry, problem=p.problem, mixed=p.mixed_orientations, n_volumes=p.n_volumes,
                   volume_key=p.volume_key, spacing=p.slice_spacing)
    else:
        bad = next((p for p in whole if p.geometry == "problem"), None)
        orientations = {p.orientation for p in whole}
        out.update(geometry="problem" if bad else "unknown", problem=bad.problem if bad else None,
                   mixed=any(p.mixed_orientations for p in whole) or len(orientations) > 1,
                   n_volumes=max(p.n_volumes for p in whole), volume_key=whole[0].volume_key,
                   spacing=whole[0].slice_spacing)
    out["no_pixels"] = sum(p.no_pixels for p, _ in kept_parts)
    return out


def build_patients(parts: list[SeriesPart]) -> list[Patient]:
    """Group series parts into patients, studies and series (pure).

    Parameters
    ----------
    parts : list of SeriesPart
        From every batch, in walk order.

    Returns
    -------
    list of Patient
        Ordered by first appearance in the walk. Studies are numbered oldest first
        (undated first), series by study, SeriesNumber (none last) and folder.
    """
    by_series: dict[tuple[str, str], list[SeriesPart]] = {}
    for part in parts:
        pid = normalise_patient_id(part.patient_id)
        uid = part.series_uid or f"\x00{part.files[0]}"
        by_series.setdefault((pid, uid), []).append(part)
    patients: dict[str, Patient] = {}
    merged: dict[str, list[tuple[SeriesPart, dict]]] = {}
    for (pid, _), group in by_series.items():
        patient = patients.setdefault(pid, Patient(patient_id=pid))
        for part in group:
            if part.patient_name:
                patient.names.add(part.patient_name)
        first = max(group, key=lambda p: len(p.files))
        merged.setdefault(pid, []).append((first, _merge(group)))
    for pid, patient in patients.items():
        studies: dict[str, list[SeriesPart]] = {}
        for first, _ in merged[pid]:
            studies.setdefault(first.study_uid, []).append(first)
        ordered = sorted(studies.items(), key=lambda kv: (
            study_datetime(kv[1][0].study_date, kv[1][0].study_time) or _dt.datetime.min, kv[0]))
        number_of = {}
        for i, (uid, firsts) in enumerate(ordered, 1):
            study = Study(number=i, uid=uid, when=study_datetime(firsts[0].study_date, firsts[0].study_time))
            study.accessions = {f.accession for f in firsts if f.accession}
            patient.studies.append(study)
            number_of[uid] = i
        for _, m in merged[pid]:
            m["folder"] = _common_folder(m["files"])
        rows = sorted(merged[pid], key=lambda fm: (number_of[fm[0].study_uid], fm[0].series_number is None,
                                                   fm[0].series_number or 0, fm[1]["folder"], fm[1]["files"][0]))
        for n, (first, m) in enumerate(rows, 1):
            patient.series.append(Series(
                number=n, study=number_of[first.study_uid], first=first, files=m["files"], frames=m["frames"],
                views=m["views"], pixels=m["pixels"], file_problems=m["file_problems"],
                folder=m["folder"], n_images=sum(m["frames"]), geometry=m["geometry"],
                problem=m["problem"], mixed_orientations=m["mixed"], n_volumes=m["n_volumes"],
                volume_key=m["volume_key"], slice_spacing=m["spacing"], duplicates=m["duplicates"],
                no_pixels=m["no_pixels"]))
    return list(patients.values())
