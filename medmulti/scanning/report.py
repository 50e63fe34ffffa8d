"""The scan's result: per patient the choice per modality and why, the manifest rows, the report.

A :class:`ScanResult` holds one :class:`PatientResult` per patient of the export. It
writes the manifest (today's format: ``<modality>`` a path relative to the manifest,
``<modality>_series`` the SeriesInstanceUID when the path is a folder) and the scan
report as text, JSON and HTML: every series seen per patient, the one chosen per
modality and why, each one left out and why, the patients with a modality missing or
ambiguous, and the files passed over.

No PHI reaches the report: patients are named by their manifest key (a pseudonym by
default), studies by number (oldest first, no date), series by SeriesNumber, modality,
image count and plane, never by description, UID, date, accession number, name or
PatientID. Paths are relative to the folder scanned, and a path component holding a
patient's PatientID or name (an export's folders are often named so) is shown as
``[patient]``. The manifest must name the files as they are: when its paths hold a
patient's identity the report says so, and the user decides before sharing it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import UnsafePathError
from ..io.safe_files import is_within
from ..manifest.report import write_text_atomic
from ..manifest.schema import MANIFEST_FORMAT
from ..spec import StudySpec
from ..text import printable
from .cohort import Patient
from .headers import FileNote
from .labels import LabelTable
from .select import ModalityChoice

__all__ = ["PatientResult", "ScanResult", "IdentityMask", "identity_pattern", "MASK"]

#: What a path component holding a patient's PatientID or name is shown as.
MASK = "[patient]"
_MIN_ID = 4    # shorter PatientIDs are not looked for in paths (they would match everywhere)
_MIN_NAME = 3


def _id_token(patient: Patient) -> str | None:
    return patient.patient_id.lower() if len(patient.patient_id) >= _MIN_ID else None


def _name_tokens(patient: Patient) -> set[str]:
    return {part.lower() for name in patient.names for part in re.findall(r"[^\W\d_]+", name)
            if len(part) >= _MIN_NAME}


class IdentityMask:
    """Find and mask patients' PatientIDs and name parts in paths (for everything the report shows).

    A PatientID of at least 4 characters is found anywhere in a text (case-insensitive);
    a part of a PatientName of at least 3 letters is found as a whole run of letters
    (``DOE_JOHN`` holds ``Doe`` and ``John``, ``Doerr`` does not hold ``Doe``). Lookups
    are set lookups over the text's substrings of the IDs' lengths, so masking costs the
    same for 10 patients or 100,000.

    Parameters
    ----------
    patients : iterable of Patient
    """

    def __init__(self, patients: Iterable[Patient]) -> None:
        self._ids: set[str] = set()
        self._names: set[str] = set()
        for p in patients:
            token = _id_token(p)
            if token:
                self._ids.add(token)
            self._names |= _name_tokens(p)
        self._lengths = sorted({len(t) for t in self._ids})
        self._memo: dict[str, str] = {}

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where identities lie in ``text``: merged ``(start, end)`` spans, in order."""
        low = text.lower()
        found = [(i, i + n) for n in self._lengths for i in range(len(low) - n + 1) if low[i : i + n] in self._ids]
        found += [m.span() for m in re.finditer(r"[^\W\d_]+", text) if m.group().lower() in self._names]
        merged: list[tuple[int, int]] = []
        for a, b in sorted(found):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def mask(self, text: str) -> str:
        """``text`` with every identity replaced by :data:`MASK`."""
        hit = self._memo.get(text)
        if hit is None:
            out, last = [], 0
            for a, b in self.spans(text):
                out += [text[last:a], MASK]
                last = b
            hit = "".join(out) + text[last:]
            if len(self._memo) < 1_000_000:
                self._memo[text] = hit
        return hit


def identity_pattern(patients: Iterable[Patient]) -> IdentityMask:
    """The :class:`IdentityMask` of a cohort's patients.

    Parameters
    ----------
    patients : iterable of Patient

    Returns
    -------
    IdentityMask
    """
    return IdentityMask(patients)


@dataclass
class PatientResult:
    """One patient of the scan.

    Attributes
    ----------
    key : str
        The manifest key.
    patient : Patient
        The series and studies found (identifying fields stay in memory).
    choices : dict
        Spec modality -> :class:`~medmulti.scanning.select.ModalityChoice`.
    sources : dict
        Spec modality -> ``(path relative to the root, SeriesInstanceUID or "", volume or "")``
        for the chosen inputs.
    row : dict or None
        The manifest cells besides the key and the sources (``split``, label and
        ``x_*`` columns); None when nothing was chosen (the patient is not written).
    labelled : bool
        A labels row was joined.
    identity_in_paths : bool
        A chosen input's path holds the patient's PatientID or name.
    """

    key: str
    patient: Patient
    choices: dict[str, ModalityChoice]
    sources: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    row: dict[str, str] | None = None
    labelled: bool = False
    identity_in_paths: bool = False

    @classmethod
    def build(cls, key: str, patient: Patient, choices: dict[str, ModalityChoice], spec: StudySpec,
              label_cells: Mapping[str, str] | None) -> "PatientResult":
        """Assemble a patient's result and manifest cells from its choices.

        Parameters
        ----------
        key : str
        patient : Patient
        choices : dict
        spec : StudySpec
        label_cells : mapping, optional
            The joined labels row (label and ``x_*`` columns).

        Returns
        -------
        PatientResult
        """
        out = cls(key=key, patient=patient, choices=choices, labelled=label_cells is not None)
        for name, choice in choices.items():
            cells = choice.cells()
            if cells is not None:
                out.sources[name] = cells
        if out.sources:
            out.row = {"split": ""}
            for col in spec.labels.manifest_columns:
                out.row[col] = ""
            out.row.update(label_cells or {})
            own = IdentityMask([patient])
            out.identity_in_paths = any(own.spans(src[0]) for src in out.sources.values())
        return out

    @property
    def missing(self) -> list[str]:
        """Modalities with nothing chosen."""
        return [n for n, c in self.choices.items() if c.missing]

    @property
    def ambiguous(self) -> list[str]:
        """Modalities whose choice was ambiguous."""
        return [n for n, c in self.choices.items() if c.ambiguous]


@dataclass
class ScanResult:
    """Everything a scan found and chose (see :func:`medmulti.scanning.scan`).

    Attributes
    ----------
    root : str
        The folder scanned, as given.
    spec : StudySpec
    patients : list of PatientResult
    walk_passed_over : list of (str, str)
        Entries the walk did not list, and why.
    notes : list of FileNote
        Files that are not DICOM images (NIfTI, other files, non-image objects, damaged files).
    dicomdirs : list of dict
        Per DICOMDIR: ``path``, ``readable``, ``referenced``, ``missing`` (paths),
        ``not_dicom`` (referenced files that are not readable DICOM), ``unreferenced``
        (DICOM files beside it that it does not list).
    nifti_unkeyed : list of str
        NIfTI files matching a pattern whose path names no patient.
    n_files : int
    key_kind : str
        ``pseudonym`` or ``patient-id``.
    labels : LabelTable or None
    split : tuple of float or None
    seed : int
    workers : int
    identity : IdentityMask or None
        Masks identities in shown paths.
    secret : str or None
        The secret file of the pseudonyms (None for PatientID keys); a manifest is
        never written into the folder that holds it.
    seconds : float
    manifest : pathlib.Path or None
        The manifest written.
    """

    root: str
    spec: StudySpec
    patients: list[PatientResult]
    walk_passed_over: list[tuple[str, str]] = field(default_factory=list)
    notes: list[FileNote] = field(default_factory=list)
    dicomdirs: list[dict[str, Any]] = field(default_factory=list)
    nifti_unkeyed: list[str] = field(default_factory=list)
    n_files: int = 0
    key_kind: str = "pseudonym"
    labels: LabelTable | None = None
    split: tuple[float, ...] | None = None
    seed: int = 0
    workers: int = 1
    identity: IdentityMask | None = None
    secret: str | None = None
    seconds: float = 0.0
    manifest: Path | None = None
    _paths_leave: bool = False

    # -- queries -----------------------------------------------------------------
    @property
    def rows(self) -> list[PatientResult]:
        """The patients written to the manifest (something chosen)."""
        return [p for p in self.patients if p.row is not None]

    @property
    def ok(self) -> bool:
        """Every written patient has every required modality, and no choice was ambiguous."""
        required = [m.name for m in self.spec.modalities if m.required]
        return bool(self.rows) and not any(
            (set(p.missing) & set(required)) or p.ambiguous for p in self.rows)

    def show(self, path: str) -> str:
        """A path as the report shows it: identities masked, control characters escaped.

        Parameters
        ----------
        path : str
            Relative to the folder scanned.

        Returns
        -------
        str
        """
        text = self.identity.mask(path) if self.identity is not None else path
        return printable(text)

    def _note_counts(self) -> Counter:
        return Counter(n.kind for n in self.notes)

    def warnings(self) -> list[str]:
        """What the user should know before using the manifest (no PHI)."""
        out = []
        if self.key_kind == "patient-id":
            out.append("keys are the patients' PatientIDs (--key patient-id): the manifest identifies patients")
        n_id = sum(1 for p in self.rows if p.identity_in_paths)
        if n_id:
            out.append(f"{n_id} patient(s): the manifest's paths hold the patient's PatientID or name (the export's "
                       "folder or file names); rename or copy the folders before sharing the manifest")
        if self._paths_leave:
            out.append(f"the manifest's paths leave its folder: pass --data-root {self.show(self.root)} to validate, "
                       "preprocess and train (or write the manifest inside the folder scanned)")
        if self.labels is not None:
            unmatched = len(self.labels.rows) - len(self.labels.used)
            if unmatched:
                out.append(f"{unmatched} row(s) of the labels file matched no patient")
            out.extend(self.labels.problems[:20])
            unlabelled = sum(1 for p in self.rows if not p.labelled)
            if unlabelled:
                out.append(f"{unlabelled} patient(s) have no row in the labels file (label left empty)")
        else:
            out.append("no labels file: the label column(s) are empty")
        if self.split is None:
            out.append("the split column is empty: run `medmulti split` (or scan with --split)")
        if self.nifti_unkeyed:
            out.append(f"{len(self.nifti_unkeyed)} NIfTI file(s) match a pattern but name no patient "
                       "(use {key} in the pattern)")
        for d in self.dicomdirs:
            if not d["readable"]:
                out.append(f"{self.show(d['path'])}: the DICOMDIR cannot be read (every file was scanned anyway)")
            elif d["missing"]:
                out.append(f"{self.show(d['path'])}: {len(d['missing'])} file(s) it references are missing")
        counts = self._note_counts()
        if counts.get("corrupt") or counts.get("unreadable"):
            out.append(f"{counts.get('corrupt', 0) + counts.get('unreadable', 0)} DICOM file(s) could not be read "
                       "(listed in the report)")
        if counts.get("no_identity"):
            out.append(f"{counts['no_identity']} DICOM image(s) without PatientID were left out")
        return out

    # -- text ----------------------------------------------------------------------
    def summary(self) -> str:
        """The summary: counts, what was written, the patients with a modality missing or ambiguous.

        Returns
        -------
        str
        """
        n_series = sum(len(p.patient.series) for p in self.patients)
        rate = self.n_files / self.seconds if self.seconds > 0 else 0.0
        lines = [f"scanned {self.n_files} files in {self.seconds:.1f} s ({rate:,.0f} files/s, {self.workers} "
                 f"worker(s)): {len(self.patients)} patient(s), {n_series} DICOM series"]
        head = ("modality", "chosen", "missing", "ambiguous")
        table = [head]
        for m in self.spec.modalities:
            chosen = sum(1 for p in self.rows if not p.choices[m.name].missing)
            table.append((m.name, str(chosen), str(sum(1 for p in self.rows if m.name in p.missing)),
                          str(sum(1 for p in self.rows if m.name in p.ambiguous))))
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        left = len(self.patients) - len(self.rows)
        where = f" to {self.show(str(self.manifest))}" if self.manifest is not None else ""
        lines.append(f"manifest: {len(self.rows)} row(s){where}" +
                     (f"; {left} patient(s) with no usable input left out" if left else ""))
        lines += [f"warning: {w}" for w in self.warnings()]
        return "\n".join(lines)

    def lines(self) -> list[str]:
        """One line per patient with a modality missing or ambiguous, or left out: ``key  modality  what``."""
        out = []
        for p in self.patients:
            if p.row is None:
                out.append(f"{printable(p.key)}  -  left out: no usable input for any modality")
                continue
            for name in p.missing:
                out.append(f"{printable(p.key)}  {name}  missing: {self._reason(p.choices[name])}")
            for name in p.ambiguous:
                out.append(f"{printable(p.key)}  {name}  ambiguous: {self._reason(p.choices[name])}")
        return out

    def _reason(self, choice: ModalityChoice) -> str:
        return printable(choice.reason)

    def _candidate_text(self, p: PatientResult, choice: ModalityChoice) -> str:
        if choice.nifti is not None:
            return f"NIfTI {self.show(choice.nifti)}"
        c = choice.chosen
        if c is None:
            return "-"
        return f"{c.label} (study {c.series.study}, {c.series.first.modality}, {self.show(p.sources[choice.modality][0])})"

    def to_text(self) -> str:
        """The whole report as text: the summary, then every patient's series and choices.

        Returns
        -------
        str
        """
        out = [self.summary(), ""]
        for p in self.patients:
            d = self._patient_record(p)
            state = "in the manifest" if p.row is not None else "NOT in the manifest (no usable input)"
            out.append(f"patient {printable(p.key)}: {len(d['studies'])} stud{'y' if len(d['studies']) == 1 else 'ies'}"
                       f", {len(d['series'])} series, {state}")
            for name, m in d["modalities"].items():
                tag = "MISSING" if m["missing"] else ("AMBIGUOUS " if m["ambiguous"] else "") + m["chosen"]
                extra = f"; {m['study_note']}" if m["study_note"] else ""
                out.append(f"  {name}: {tag} -- {printable(m['reason'])}{printable(extra)}")
            for s in d["series"]:
                desc = (f"  {s['label']} (study {s['study']}, {s['modality']}, {s['images']} image(s), {s['plane']}, "
                        f"{s['folder']}): geometry {s['geometry']}")
                if s["problem"]:
                    desc += f" [{s['problem']}]"
                out.append(desc)
                for name, v in s["verdicts"].items():
                    out.append(f"      {name}: {'chosen' if v['chosen'] else 'left out'} -- {v['reason']}")
                if not s["verdicts"]:
                    out.append("      not wanted by any modality of the spec")
            out.append("")
        if self.walk_passed_over or self.notes:
            out.append("files passed over:")
            for name, why in self.walk_passed_over:
                out.append(f"  {self.show(name)}: {printable(why)}")
            counts = self._note_counts()
            for kind in ("corrupt", "unreadable", "no_identity"):
                for n in self.notes:
                    if n.kind == kind:
                        out.append(f"  {self.show(n.name)}: {kind}: {printable(n.reason)}")
            others = {k: v for k, v in counts.items() if k not in ("corrupt", "unreadable", "no_identity")}
            if others:
                out.append("  other files: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(others.items())))
        for d in self.dicomdirs:
            out.append(f"DICOMDIR {self.show(d['path'])}: " + (
                "cannot be read" if not d["readable"] else
                f"{d['referenced']} file(s) referenced, {len(d['missing'])} missing, {d['not_dicom']} not readable "
                f"DICOM, {d['unreferenced']} file(s) beside it not referenced"))
            for m in d["missing"][:20]:
                out.append(f"  missing: {self.show(m)}")
        return "\n".join(out) + "\n"

    # -- records -------------------------------------------------------------------
    def _patient_record(self, p: PatientResult) -> dict[str, Any]:
        verdicts: dict[int, dict[str, dict[str, Any]]] = {}
        for name, choice in p.choices.items():
            for v in choice.verdicts:
                slot = verdicts.setdefault(v.candidate.series.number, {})
                label = name if v.candidate.file is None or len(v.candidate.series.files) == 1 else \
                    f"{name} (image {v.candidate.file + 1})"
                slot[label] = {"chosen": v.chosen, "reason": printable(v.reason)}
            if choice.nifti is not None:
                for s in p.patient.series:
                    if s.first.modality in self.spec.modality(name).selection.modalities:
                        verdicts.setdefault(s.number, {})[name] = {
                            "chosen": False, "reason": "a NIfTI file is taken for this modality"}
        studies = [{"study": st.number, "series": sum(1 for s in p.patient.series if s.study == st.number),
                    "modalities": sorted({s.first.modality for s in p.patient.series if s.study == st.number}),
                    "dated": st.when is not None}
                   for st in p.patient.studies]
        series = [{"series": s.number, "label": s.label, "study": s.study, "number": s.first.series_number,
                   "modality": s.first.modality, "images": s.n_images, "files": len(s.files),
                   "plane": s.first.plane, "folder": self.show(s.folder or "."),
                   "example": self.show(s.files[0]), "geometry": s.geometry,
                   "problem": None if s.problem is None else self.show(s.problem),
                   "volumes": s.n_volumes, "duplicates": len(s.duplicates),
                   "verdicts": verdicts.get(s.number, {})}
                  for s in p.patient.series]
        modalities = {}
        for name, choice in p.choices.items():
            src = p.sources.get(name)
            modalities[name] = {
                "chosen": self._candidate_text(p, choice),
                "source": "nifti" if choice.nifti is not None else ("dicom" if choice.chosen is not None else None),
                "path": self.show(src[0]) if src else None,
                "volume": (src[2] or None) if src else None,
                "reason": printable(choice.reason), "study_note": printable(choice.study_note),
                "missing": choice.missing, "ambiguous": choice.ambiguous,
            }
        return {"key": p.key, "in_manifest": p.row is not None, "labelled": p.labelled,
                "identity_in_paths": p.identity_in_paths, "studies": studies, "series": series,
                "modalities": modalities}

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (keys: ``format``, ``root``, ``summary``, ``warnings``,
        ``patients``, ``passed_over``, ``files``, ``dicomdirs``).

        Returns
        -------
        dict
        """
        counts = self._note_counts()
        return {
            "format": 1,
            "root": self.show(self.root),
            "manifest": None if self.manifest is None else self.show(str(self.manifest)),
            "summary": {"files": self.n_files, "patients": len(self.patients), "rows": len(self.rows),
                        "seconds": round(self.seconds, 3), "workers": self.workers, "keys": self.key_kind,
                        "modalities": {m.name: {"chosen": sum(1 for p in self.rows if not p.choices[m.name].missing),
                                                "missing": sum(1 for p in self.rows if m.name in p.missing),
                                                "ambiguous": sum(1 for p in self.rows if m.name in p.ambiguous)}
                                       for m in self.spec.modalities}},
            "warnings": self.warnings(),
            "patients": [self._patient_record(p) for p in self.patients],
            "passed_over": [{"path": self.show(n), "reason": w} for n, w in self.walk_passed_over],
            "files": {"counts": dict(sorted(counts.items())),
                      "unread": [{"path": self.show(n.name), "kind": n.kind, "reason": printable(n.reason)}
                                 for n in self.notes if n.kind in ("corrupt", "unreadable", "no_identity")]},
            "dicomdirs": [dict(d, path=self.show(d["path"]), missing=[self.show(m) for m in d["missing"]])
                          for d in self.dicomdirs],
        }

    def to_json(self, path: str | PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomically).

        Parameters
        ----------
        path : str or PathLike

        Returns
        -------
        pathlib.Path
        """
        p = Path(path)
        write_text_atomic(p, json.dumps(self.to_dict(), indent=1) + "\n")
        return p

    def to_html(self, path: str | PathLike[str]) -> Path:
        """Write the report as one self-contained HTML page (atomically).

        Parameters
        ----------
        path : str or PathLike

        Returns
        -------
        pathlib.Path
        """
        def esc(text: object) -> str:
            return html.escape(printable(text))

        d = self.to_dict()
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>medmulti scan</title>",
                 "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}"
                 "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
                 ".missing{background:#fdd}.ambiguous{background:#ffd}.chosen{background:#dfd}</style></head><body>",
                 "<h1>medmulti scan</h1>", f"<pre>{esc_block(self.summary())}</pre>"]
        for rec in d["patients"]:
            parts.append(f"<h2>{esc(rec['key'])}{'' if rec['in_manifest'] else ' (not in the manifest)'}</h2>")
            parts.append("<table><tr><th>modality</th><th>chosen</th><th>why</th></tr>")
            for name, m in rec["modalities"].items():
                cls = "missing" if m["missing"] else ("ambiguous" if m["ambiguous"] else "chosen")
                why = m["reason"] + (f"; {m['study_note']}" if m["study_note"] else "")
                parts.append(f"<tr class='{cls}'><td>{esc(name)}</td><td>{esc(m['chosen'])}</td><td>{esc(why)}</td></tr>")
            parts.append("</table><table><tr><th>series</th><th>study</th><th>modality</th><th>images</th>"
                         "<th>plane</th><th>folder</th><th>geometry</th><th>verdicts</th></tr>")
            for s in rec["series"]:
                verdicts = "<br>".join(f"{esc(n)}: {'chosen' if v['chosen'] else 'left out'} &mdash; {esc(v['reason'])}"
                                       for n, v in s["verdicts"].items()) or "not wanted by the spec"
                geo = s["geometry"] + (f" ({s['problem']})" if s["problem"] else "")
                parts.append(f"<tr><td>{esc(s['label'])}</td><td>{s['study']}</td><td>{esc(s['modality'])}</td>"
                             f"<td>{s['images']}</td><td>{esc(s['plane'])}</td><td>{esc(s['folder'])}</td>"
                             f"<td>{esc(geo)}</td><td>{verdicts}</td></tr>")
            parts.append("</table>")
        if d["passed_over"] or d["files"]["unread"]:
            parts.append("<h2>Files passed over</h2><ul>")
            parts += [f"<li>{esc(x['path'])}: {esc(x['reason'])}</li>" for x in d["passed_over"]]
            parts += [f"<li>{esc(x['path'])}: {esc(x['kind'])}: {esc(x['reason'])}</li>" for x in d["files"]["unread"]]
            parts.append("</ul>")
        parts.append("</body></html>\n")
        p = Path(path)
        write_text_atomic(p, "".join(parts))
        return p

    # -- the manifest --------------------------------------------------------------
    @staticmethod
    def report_paths(manifest: str | PathLike[str]) -> dict[str, Path]:
        """Where the report goes beside a manifest: ``<stem>.scan.txt``, ``.scan.json``, ``.scan.html``.

        Parameters
        ----------
        manifest : str or PathLike

        Returns
        -------
        dict
            ``{"text": ..., "json": ..., "html": ...}``.
        """
        m = Path(manifest)
        stem = m.name[: -len(m.suffix)] if m.suffix else m.name
        return {kind: m.with_name(f"{stem}.scan.{ext}") for kind, ext in
                (("text", "txt"), ("json", "json"), ("html", "html"))}

    @staticmethod
    def check_outputs(manifest: str | PathLike[str], *, overwrite: bool) -> None:
        """Refuse to replace existing outputs without ``overwrite``, or to write into a missing folder.

        Parameters
        ----------
        manifest : str or PathLike
        overwrite : bool

        Raises
        ------
        ValueError
            An output exists (and ``overwrite`` is False), or the manifest's folder does not exist.
        """
        m = Path(manifest)
        if not m.parent.is_dir() and str(m.parent):
            raise ValueError(f"the folder of {printable(m)} does not exist")
        if overwrite:
            return
        for p in [m, *ScanResult.report_paths(m).values()]:
            if os.path.lexists(p):
                raise ValueError(f"{printable(p)} exists; choose another output or allow overwriting")

    def manifest_text(self, manifest: str | PathLike[str]) -> str:
        """The manifest CSV for a manifest written at ``manifest`` (paths relative to its folder).

        Parameters
        ----------
        manifest : str or PathLike
            Where it will be written.

        Returns
        -------
        str
        """
        folder = os.path.realpath(Path(manifest).parent)
        root = os.path.realpath(self.root)
        names = self.spec.names
        volumes = {n for p in self.rows for n, src in p.sources.items() if src[2]}
        extra = [c for c in (self.labels.columns if self.labels is not None else [])
                 if c not in self.spec.labels.manifest_columns]
        header = ["patient_id", "split", *self.spec.labels.manifest_columns]
        for n in names:
            header += [n, f"{n}_series"] + ([f"{n}_volume"] if n in volumes else [])
        header += extra
        buf = io.StringIO(newline="")
        buf.write(f"# format: {MANIFEST_FORMAT}\n")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        leave = False
        for p in self.rows:
            assert p.row is not None
            cells = [p.key, p.row.get("split", "")] + [p.row.get(c, "") for c in self.spec.labels.manifest_columns]
            for n in names:
                src = p.sources.get(n)
                if src is None:
                    cells += ["", ""] + ([""] if n in volumes else [])
                    continue
                rel = os.path.relpath(os.path.join(root, src[0]), folder).replace(os.sep, "/")
                leave = leave or rel == ".." or rel.startswith("../")
                cells += [rel, src[1]] + ([src[2]] if n in volumes else [])
            cells += [p.row.get(c, "") for c in extra]
            writer.writerow(cells)
        self._paths_leave = leave
        return buf.getvalue()

    def write_manifest(self, manifest: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the manifest (atomically; paths relative to its folder).

        Parameters
        ----------
        manifest : str or PathLike
        overwrite : bool
            Replace an existing file.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        ValueError
            It exists and ``overwrite`` is False.
        UnsafePathError
            The scan secret lies in the manifest's folder.
        """
        m = Path(manifest)
        if os.path.lexists(m) and not overwrite:
            raise ValueError(f"{printable(m)} exists; choose another output or allow overwriting")
        if self.secret is not None and is_within(Path(os.path.realpath(self.secret)),
                                                 Path(os.path.realpath(m.parent))):
            raise UnsafePathError("the scan secret lies inside the manifest's folder: whoever gets the manifest "
                                  "would get the key to the pseudonyms", path=str(m),
                                  hint="write the manifest elsewhere, or keep the secret elsewhere")
        write_text_atomic(m, self.manifest_text(m))
        self.manifest = m
        return m

    def write(self, manifest: str | PathLike[str], *, overwrite: bool = False) -> dict[str, Path]:
        """Write the manifest and the report beside it (text, JSON, HTML).

        Parameters
        ----------
        manifest : str or PathLike
        overwrite : bool

        Returns
        -------
        dict
            ``{"manifest": ..., "text": ..., "json": ..., "html": ...}``.
        """
        self.check_outputs(manifest, overwrite=overwrite)
        out = {"manifest": self.write_manifest(manifest, overwrite=overwrite)}
        paths = self.report_paths(manifest)
        write_text_atomic(paths["text"], self.to_text())
        out["text"] = paths["text"]
        out["json"] = self.to_json(paths["json"])
        out["html"] = self.to_html(paths["html"])
        return out


def esc_block(text: str) -> str:
    """HTML-escape a multi-line text, each line made printable (for a ``<pre>`` block).

    Parameters
    ----------
    text : str

    Returns
    -------
    str
    """
    return "\n".join(html.escape(printable(line)) for line in text.splitlines())
