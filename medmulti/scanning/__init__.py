"""Scan an export folder into a manifest: series chosen per modality by the spec's rules, keys without PHI.

``scan(root, spec, out="manifest.csv")`` walks a DICOM export in any nesting (a
DICOMDIR is used when present, never required), recognises DICOM and NIfTI by content,
reads headers only in worker processes, groups patient -> study -> series, chooses one
series per spec modality and patient by the modality's ``select`` rules, keys patients
by a keyed hash of their PatientID, and writes the manifest and a scan report.
"""

from __future__ import annotations

from .keys import default_secret_path, load_secret, pseudonym
from .report import PatientResult, ScanResult
from .scanner import parse_split, scan

__all__ = ["scan", "ScanResult", "PatientResult", "pseudonym", "load_secret", "default_secret_path", "parse_split"]
