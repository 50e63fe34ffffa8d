"""One patient's folder given for one modality: the series the spec's rules take from it.

What ``predict_patient`` (``medmulti predict RUN --source NAME=DIR``) does with a
folder that holds several series (a patient's export: a CT with its scout, a study
with an MR localizer, several radiographs): the folder is scanned as ``medmulti scan``
scans an export (:func:`~medmulti.scanning.walk.walk_root`, headers only with
:func:`~medmulti.scanning.headers.read_batch`, in this process, grouped by
:func:`~medmulti.scanning.cohort.build_patients`) and the modality's ``select`` rules
choose one series or X-ray image (:func:`~medmulti.scanning.select.choose`), the choice
``scan`` makes for that patient. A folder holding one series is left to the readers,
as given.

What is said of the choice is fixed words, SeriesNumbers and image counts, and the
chosen input's path inside the folder with the patient's PatientID or name masked: no
header value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

from ..errors import error_class_of
from ..io.limits import DEFAULT_LIMITS, Limits
from ..io.source_ref import SourceRef
from ..spec import ModalitySpec, StudySpec
from .cohort import build_patients
from .headers import read_batch
from .report import identity_pattern
from .scanner import batches_of
from .select import ModalityChoice, choose
from .walk import walk_root

__all__ = ["FolderChoice", "choose_in_folder", "choose_sources"]


@dataclass
class FolderChoice:
    """The series (or X-ray image) a modality's rules took from a folder of several.

    Attributes
    ----------
    folder : pathlib.Path
        The folder, as given.
    source : SourceRef or None
        What to read: the chosen series' folder with its SeriesInstanceUID (and
        volume 0 when it holds several volumes), or the chosen file; None when no
        series of the folder passes the rules.
    choice : ModalityChoice
        The choice, its reason and a verdict per candidate.
    n_series : int
        DICOM image series found in the folder (of any Modality).
    shown_path : str or None
        The chosen input's path relative to the folder, the patient's PatientID or
        name parts masked (``[patient]``).
    """

    folder: Path
    source: SourceRef | None
    choice: ModalityChoice
    n_series: int
    shown_path: str | None

    def to_dict(self) -> dict[str, Any]:
        """The choice as JSON-ready values, with no header value.

        Returns
        -------
        dict
            ``chosen`` (``"series 5"``, ``"series 2, image 1 of 3"``; None when
            nothing passes), ``images``, ``path`` (inside the folder, masked),
            ``reason``, ``study`` (how the study was chosen among several, or
            None), ``ambiguous``, ``series_in_folder`` and ``left_out``: per
            candidate not taken ``{"series", "study", "images", "reason"}`` (the
            study numbered within the folder, oldest first).
        """
        c = self.choice.chosen
        return {
            "chosen": None if c is None else c.label,
            "images": None if c is None else c.n_images,
            "path": self.shown_path,
            "reason": self.choice.reason,
            "study": self.choice.study_note or None,
            "ambiguous": self.choice.ambiguous,
            "series_in_folder": self.n_series,
            "left_out": [{"series": v.candidate.label, "study": v.candidate.series.study,
                          "images": v.candidate.n_images, "reason": v.reason}
                         for v in self.choice.verdicts if not v.chosen],
        }


def choose_in_folder(
    folder: str | PathLike[str],
    modality: ModalitySpec,
    *,
    patient_id: str | None = None,
    limits: Limits | None = None,
) -> FolderChoice | None:
    """Choose the series of one modality in one patient's folder by the modality's ``select`` rules.

    Parameters
    ----------
    folder : str or PathLike
        A folder of one patient's DICOM files, in any nesting (a series folder, a
        study, a patient's export).
    modality : ModalitySpec
        The spec modality; its ``selection`` gives the rules and preferences.
    patient_id : str, optional
        The key naming the patient in an error (never a header value).
    limits : Limits, optional
        The readers' caps.

    Returns
    -------
    FolderChoice or None
        None when the folder holds at most one DICOM image series, of one volume
        (or no DICOM image at all): the folder is then read as given, and the
        readers say what is wrong with it, if anything.

    Raises
    ------
    MissingFileError
        ``folder`` is not a folder.
    ManifestError
        The folder holds images of several patients (check ``patient_identity``).
    ResourceLimitError
        More files than a scan lists.

    Notes
    -----
    The rules are those of ``medmulti scan`` (docs/scan.md): among several studies
    the most recent is taken. A series with gaps may be the one chosen, as in a
    scan: the readers then refuse it and the run's ``on_corrupt`` policy decides.
    """
    walk = walk_root(folder)
    parts = [p for batch in batches_of(walk, limits or DEFAULT_LIMITS) for p in read_batch(batch).parts]
    patients = build_patients(parts)
    if not patients:
        return None
    if len(patients) > 1:
        raise error_class_of("patient_identity")(
            f"the folder holds the images of {len(patients)} patients (by PatientID); one patient is scored",
            path=os.fspath(folder), modality=modality.name, patient_id=patient_id, keyword="PatientID",
            check="patient_identity", hint="give a folder holding this patient's files only")
    patient = patients[0]
    if len(patient.series) == 1 and patient.series[0].n_volumes == 1:
        return None
    choice = choose(patient, modality)
    cells = choice.cells()
    source = shown = None
    if cells is not None:
        path, uid, volume = cells
        source = SourceRef(Path(folder) / path, series=uid or None, volume=int(volume) if volume else None)
        shown = identity_pattern([patient]).mask(path)
    return FolderChoice(folder=Path(folder), source=source, choice=choice, n_series=len(patient.series),
                        shown_path=shown)


def choose_sources(
    sources: Mapping[str, Any],
    spec: StudySpec,
    *,
    patient_id: str | None = None,
    limits: Limits | None = None,
) -> tuple[dict[str, Any], dict[str, FolderChoice]]:
    """One patient's sources with every folder of several series replaced by the series its rules choose.

    Parameters
    ----------
    sources : Mapping
        Spec modality name -> a path (str or PathLike) or a
        :class:`~medmulti.io.SourceRef`, as ``predict_patient`` takes them.
    spec : StudySpec
        The modalities' ``select`` rules.
    patient_id : str, optional
        The key naming the patient in an error.
    limits : Limits, optional
        The readers' caps.

    Returns
    -------
    (dict, dict)
        The sources, each folder of several series replaced by its chosen
        :class:`~medmulti.io.SourceRef` (or by None when no series passes the
        rules); and per such modality its :class:`FolderChoice`. Files, folders of
        one series, a :class:`~medmulti.io.SourceRef` (its choice is the caller's),
        None and names that are not the spec's are passed through as given.

    Raises
    ------
    ManifestError
        A folder holding the images of several patients.
    ResourceLimitError
        A folder with more files than a scan lists.
    """
    out: dict[str, Any] = {}
    chosen: dict[str, FolderChoice] = {}
    for name, given in sources.items():
        out[name] = given
        if name not in spec.names or given is None or isinstance(given, SourceRef) or not os.path.isdir(given):
            continue
        picked = choose_in_folder(given, spec.modality(name), patient_id=patient_id, limits=limits)
        if picked is not None:
            chosen[name] = picked
            out[name] = picked.source
    return out, chosen
