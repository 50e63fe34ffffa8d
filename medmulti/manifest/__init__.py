"""Manifests: load a cohort CSV against a study spec, check it, report every problem.

Public names: :func:`load_manifest`, :class:`Manifest`, :class:`ManifestRow`,
:func:`check_row`, :class:`Problem`, :class:`ValidationReport`,
:func:`admit` (one verdict per patient), :func:`validate_manifest`, :func:`split_manifest` (and its pure rule :func:`assign_splits`).
"""

from __future__ import annotations

from .admission import Admission, Verdict, admit
from .checks import RowCheck, check_row, cross_row_checks, sha256_of
from .load import load_manifest, patient_manifest, resolve_path
from .report import Problem, ValidationReport
from .schema import MANIFEST_FORMAT, SPLITS, Manifest, ManifestRow
from .split import SplitResult, assign_splits, split_manifest
from .validate import validate_manifest

__all__ = [
    "load_manifest",
    "patient_manifest",
    "admit",
    "Admission",
    "Verdict",
    "resolve_path",
    "Manifest",
    "ManifestRow",
    "check_row",
    "cross_row_checks",
    "RowCheck",
    "sha256_of",
    "Problem",
    "ValidationReport",
    "validate_manifest",
    "split_manifest",
    "assign_splits",
    "SplitResult",
    "MANIFEST_FORMAT",
    "SPLITS",
]
