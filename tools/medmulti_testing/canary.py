"""The PHI canary study: every identifying attribute holds a unique, searchable string.

:func:`make_canary_cohort` generates the sample cohort and rewrites every file so
that each attribute of DICOM PS3.15 Annex E (Basic Application Level
Confidentiality Profile) that the files carry, plus private tags, holds a
canary, and each NIfTI file carries canaries in ``descrip``, ``aux_file``,
``intent_name``, ``db_name`` and a comment extension. One value is deliberately
invalid for its VR (a UID with letters) so that pydicom logs and warns with it.

:func:`find_canaries` then searches text or bytes (also UTF-16, case-folded, and
ISO-reformatted dates) and returns every canary found. The privacy battery runs
the whole pipeline on the cohort and expects it to find none.
"""

from __future__ import annotations

import re
import shutil
import zlib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Iterable

__all__ = ["ANNEX_E_KEYWORDS", "CanaryCohort", "make_canary_cohort", "find_canaries", "scan_tree",
           "canarize_dicom", "canarize_nifti"]

#: Annex E attributes written as top-level elements (a representative superset of
#: what scanners put in CT/MR/X-ray objects: identities, dates/times, people,
#: institutions, devices, descriptions, free text and UIDs).
ANNEX_E_KEYWORDS = (
    # patient
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientNames",
    "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate", "PatientBirthTime", "PatientAge",
    "PatientSize", "PatientWeight", "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank",
    "BranchOfService", "Occupation", "EthnicGroup", "PatientReligiousPreference", "AdditionalPatientHistory",
    "PatientComments", "MedicalRecordLocator", "CountryOfResidence", "RegionOfResidence",
    "MedicalAlerts", "Allergies", "PregnancyStatus", "SmokingStatus", "PatientState",
    # visit / request
    "AccessionNumber", "AdmissionID", "AdmittingDiagnosesDescription", "CurrentPatientLocation",
    "PatientInstitutionResidence", "RequestedProcedureDescription", "RequestedProcedureID",
    "ReasonForStudy", "RequestingService",
    # study / series / instance
    "StudyID", "StudyDescription", "SeriesDescription", "ProtocolName", "StudyComments", "ImageComments",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "DerivationDescription",
    "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent", "ScheduledProcedureStepDescription",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
    "PerformedProcedureStepStartDate", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
    "InstanceCreationTime", "PerformedProcedureStepStartTime", "AcquisitionDateTime",
    # people
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord",
    "RequestingPhysician", "ScheduledPerformingPhysicianName", "ResponsiblePerson", "ResponsibleOrganization",
    # institution / device
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "PlateID", "DetectorID", "GantryID", "CassetteID", "GeneratorID",
    "ManufacturerModelName",
    # UIDs
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "InstanceCreatorUID",
    "IrradiationEventUID", "SynchronizationFrameOfReferenceUID", "StorageMediaFileSetUID",
    "DimensionOrganizationUID", "DeviceUID",
)
#: sequences whose items carry canaries too
SEQUENCE_CANARIES = {
    "OtherPatientIDsSequence": ("PatientID", "IssuerOfPatientID"),
    "ReferencedStudySequence": ("ReferencedSOPInstanceUID",),
    "RequestAttributesSequence": ("RequestedProcedureID", "ScheduledProcedureStepID", "AccessionNumber"),
    "ReferencedPatientSequence": ("ReferencedSOPInstanceUID",),
}
#: UIDs the readers use for grouping/identity: kept consistent within a series / study / patient
_UID_SCOPE = {"StudyInstanceUID": "study", "SeriesInstanceUID": "series", "FrameOfReferenceUID": "series",
              "SOPInstanceUID": "instance", "SynchronizationFrameOfReferenceUID": "study"}
_TEXT_RE = re.compile(r"QZX\d{5}Q", re.IGNORECASE)
UID_ROOT = "2.25.31415926535897932384"  # every canary UID starts with this (20 digits no float repr can hold)


def _text(patient: int, k: int) -> str:
    return f"QZX{patient:02d}{k:03d}Q"


def _date(patient: int, k: int) -> str:
    return f"1873{(patient % 12) + 1:02d}{(k % 28) + 1:02d}" if k < 28 * 12 else "18730101"


def _value(keyword: str, vr: str, patient: int, k: int, scope_key: str) -> str:
    if vr == "PN":
        return f"{_text(patient, k)}^Given"
    if vr == "DA":
        return _date(patient, k)
    if vr == "TM":
        return f"{patient % 24:02d}{k % 60:02d}17.135791"
    if vr == "DT":
        return _date(patient, k) + "101517.135791"
    if vr == "UI":
        return f"{UID_ROOT}.{patient}.{k}.{scope_key}"
    if vr == "AS":
        return "093Y"
    if vr == "DS":
        return "909.0909090909"
    return _text(patient, k)


@dataclass
class CanaryCohort:
    """A generated cohort whose files are full of canaries.

    Attributes
    ----------
    root, manifest, spec : pathlib.Path
        As for the sample cohort.
    patient_ids : list of str
        Manifest keys (pseudonyms, not canaries).
    canaries : set of str
        Every canary string written (text, dates, times, UIDs...).
    invalid_uid : str
        The deliberately invalid UID value (it makes pydicom warn).
    """

    root: Path
    manifest: Path
    spec: Path
    patient_ids: list[str]
    canaries: set[str] = field(default_factory=set)
    invalid_uid: str = ""


def canarize_dicom(path: str | PathLike[str], patient: int, *, series: str, instance: int,
                   invalid_uid: bool = True) -> set[str]:
    """Rewrite one DICOM file with canaries in every Annex E attribute; return the canaries.

    Parameters
    ----------
    path : str or PathLike
        The file (rewritten in place, same transfer syntax).
    patient : int
        Patient number (canaries are unique per patient and attribute).
    series : str
        Series key: files sharing it get the same series-level UIDs.
    instance : int
        Instance number within the series (SOPInstanceUID differs per file).
    invalid_uid : bool
        Write InstanceCreatorUID and SeriesInstanceUID with letters (invalid for
        VR UI), which pydicom warns about, quoting the value, when it is read.
    """
    import pydicom
    from pydicom.datadict import dictionary_VR
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(path)
    written: set[str] = set()
    scopes = {"study": f"{patient}", "series": f"{zlib.crc32(series.encode()) % 10**6}", "instance": f"{instance}"}
    for k, kw in enumerate(ANNEX_E_KEYWORDS):
        vr = dictionary_VR(kw)
        scope = _UID_SCOPE.get(kw, "study")
        scope_key = {"study": scopes["study"], "series": scopes["series"] + "1",
                     "instance": scopes["series"] + "2." + scopes["instance"]}[scope]
        value = _value(kw, vr, patient, k, scope_key)
        if vr == "US":  # PregnancyStatus: an enumerated number, no canary possible
            setattr(ds, kw, 4)
            continue
        setattr(ds, kw, value)
        written.add(value.split("^")[0])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    base = len(ANNEX_E_KEYWORDS)
    for j, (seq_kw, inner) in enumerate(SEQUENCE_CANARIES.items()):
        item = Dataset()
        for i, kw in enumerate(inner):
            value = _value(kw, dictionary_VR(kw), patient, base + 10 * j + i, f"9{j}{i}")
            setattr(item, kw, value)
            written.add(value)
        setattr(ds, seq_kw, Sequence([item]))
    # private tags: a creator and values, and a private sequence, all canaries
    creator = _text(patient, 900)
    block = ds.private_block(0x0011, creator, create=True)
    block.add_new(0x01, "LO", _text(patient, 901))
    block.add_new(0x02, "LT", "free text " + _text(patient, 902))
    item = Dataset()
    item.add_new(0x00111003, "LO", _text(patient, 903))
    block.add_new(0x10, "SQ", Sequence([item]))
    written |= {creator, _text(patient, 901), _text(patient, 902), _text(patient, 903)}
    if invalid_uid:  # letters are invalid in a UID: pydicom warns (with the value) whenever it is read
        ds.InstanceCreatorUID = f"{UID_ROOT}.QZX{patient:02d}999Q"
        ds.SeriesInstanceUID = f"{ds.SeriesInstanceUID}.QZX{patient:02d}998Q"  # read by every reader
        written |= {ds.InstanceCreatorUID, ds.SeriesInstanceUID}
    ds.save_as(path, enforce_file_format=True)
    return written


def canarize_nifti(path: str | PathLike[str], patient: int) -> set[str]:
    """Put canaries in a NIfTI file's text fields and a comment extension; return them."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    hdr = img.header.copy()
    values = {"descrip": _text(patient, 950), "aux_file": _text(patient, 951), "intent_name": _text(patient, 952)}
    for key, value in values.items():
        hdr[key] = value.encode()
    if "db_name" in hdr:
        hdr["db_name"] = _text(patient, 953).encode()
        values["db_name"] = _text(patient, 953)
    ext = nib.nifti1.Nifti1Extension(6, ("comment " + _text(patient, 954)).encode())
    hdr.extensions.append(ext)
    values["extension"] = _text(patient, 954)
    out = type(img)(data, img.affine, header=hdr)
    out.set_qform(img.get_qform(), code=int(img.header["qform_code"]))
    out.set_sform(img.get_sform(), code=int(img.header["sform_code"]))
    nib.save(out, str(path))
    return set(values.values())


def make_canary_cohort(out: str | PathLike[str], *, n_patients: int = 6, ct_slices: int = 12,
                       seed: int = 0) -> CanaryCohort:
    """Generate the sample cohort (no faults) and fill every file with canaries.

    Parameters
    ----------
    out : str or PathLike
        Output folder (replaced).
    n_patients : int
        Patients (the manifest splits them over train/val/test).
    ct_slices : int
        CT slices per patient (small keeps tests fast).
    seed : int
        Cohort seed.

    Returns
    -------
    CanaryCohort
    """
    from medmulti.examples.cohort import make_sample_cohort

    root = Path(out)
    if root.exists():
        shutil.rmtree(root)
    cohort = make_sample_cohort(root, n_patients=n_patients, seed=seed, faults=False, progress=False,
                                overwrite=True, ct_slices=ct_slices)
    canaries: set[str] = set()
    for p, pid in enumerate(cohort.patient_ids):
        folder = root / pid
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            if path.name.endswith((".nii", ".nii.gz")):
                canaries |= canarize_nifti(path, p)
            else:
                series = str(path.parent.relative_to(root)) if path.parent != folder else str(path.relative_to(root))
                instance = int(re.sub(r"\D", "", path.stem) or 0)
                canaries |= canarize_dicom(path, p, series=series, instance=instance)
    return CanaryCohort(root=root, manifest=cohort.manifest, spec=cohort.spec, patient_ids=list(cohort.patient_ids),
                        canaries=canaries, invalid_uid=f"{UID_ROOT}.QZX00999Q")


def _variants(canary: str) -> list[str]:
    out = [canary]
    if re.fullmatch(r"1873\d{4}", canary):
        out.append(f"{canary[:4]}-{canary[4:6]}-{canary[6:]}")
    if canary.endswith(".135791"):
        out.append(canary.split(".")[0][-6:] + ".135791")
    return out


def find_canaries(data: str | bytes, canaries: Iterable[str]) -> list[str]:
    """Return the canaries that occur in ``data``.

    Text canaries (``QZX#####Q``) are matched case-insensitively and also in
    UTF-16; dates also in ISO form; any ``QZX#####Q``-shaped string counts even
    if it is not in ``canaries`` (a canary from another run or patient).

    Parameters
    ----------
    data : str or bytes
        Text (logs, reports, messages) or raw file bytes.
    canaries : iterable of str
        The canaries written (:attr:`CanaryCohort.canaries`).

    Returns
    -------
    list of str
        Sorted canaries found (empty means clean).
    """
    if isinstance(data, bytes):
        texts = [data.decode("latin-1")]
        if b"\0" in data:
            texts.append(data.replace(b"\0", b"").decode("latin-1"))
    else:
        texts = [data]
    found: set[str] = set()
    for text in texts:
        low = text.lower()
        found |= {m.group(0).upper() for m in _TEXT_RE.finditer(text)}
        if UID_ROOT in text:
            found.add(UID_ROOT + "...")
        for c in canaries:
            for v in _variants(c):
                if v.lower() in low:
                    found.add(c)
    return sorted(found)


def scan_tree(folder: str | PathLike[str], canaries: Iterable[str]) -> dict[str, list[str]]:
    """Search every file under ``folder`` (its name and every byte); return ``{relative path: canaries}``."""
    root = Path(folder)
    canaries = list(canaries)
    hits: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found = set(find_canaries(rel, canaries))
        if path.is_file():
            found |= set(find_canaries(path.read_bytes(), canaries))
        if found:
            hits[rel] = sorted(found)
    return hits
