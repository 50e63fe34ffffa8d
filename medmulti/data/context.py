"""Give a reader/preprocessing error the manifest's names: patient key, spec modality, relative path.

Readers name the DICOM Modality (``"CT"``) and a path as they saw it; users need the
manifest's patient key, the spec's modality name (``"ct"``, the manifest column) and
the path relative to the manifest folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import MedmultiError
from ..manifest.checks import HEADER_MODALITIES
from ..spec import StudySpec

__all__ = ["name_error"]


def name_error(exc: MedmultiError, row: Any, spec: StudySpec, root: Any,
               present: Iterable[str] | None = None) -> MedmultiError:
    """Fill in the patient key, the spec modality name and a manifest-relative path.

    Parameters
    ----------
    exc : MedmultiError
        The error (updated in place).
    row : ManifestRow
        The patient's row.
    spec : StudySpec
        The study spec.
    root : path
        The manifest folder.
    present : iterable of str, optional
        The spec modalities that were read (default: those with a source).

    Returns
    -------
    MedmultiError
        ``exc``, for ``raise name_error(...)``.
    """
    names = spec.names
    present = [n for n in (present if present is not None else names) if row.sources.get(n) is not None]
    if exc.modality not in names:
        header = str(exc.modality or "").upper()
        fits = [n for n in present
                if header in HEADER_MODALITIES[spec.modality(n).kind] or header == n.upper()]
        if len(fits) == 1:
            exc.modality = fits[0]
    src = row.sources.get(exc.modality) if exc.modality in names else None
    if exc.path is not None:
        p = Path(exc.path)
        if not p.is_absolute() and src is not None and Path(src).is_dir() and os.path.lexists(Path(src) / p):
            p = Path(src) / p  # a reader naming a file inside the series folder
        try:
            # resolve the folder only: the file itself may be a refused symlink, never followed
            exc.path = (p.parent.resolve() / p.name).relative_to(Path(root).resolve()).as_posix()
        except (ValueError, OSError):
            pass
    elif exc.modality in names:
        exc.path = row.paths.get(exc.modality)
    return exc.with_context(patient_id=row.key)
