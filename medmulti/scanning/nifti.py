"""NIfTI files of an export: taken by glob patterns, keyed by the patient named in their path.

A pattern (``select.nifti`` in the spec, or ``--nifti MODALITY=PATTERN``) is a path
relative to the folder scanned, with ``*`` (any text within one path component),
``?`` (one character), ``**`` (any number of components) and ``{key}`` (the patient's
identifier, one component or part of one). Without ``{key}``, the patient is named by
the first ``sub-<label>`` component of the path, as in BIDS
(``sub-01/anat/sub-01_T1w.nii.gz`` is patient ``01``). The identifier is compared with
the DICOM patients' PatientID in canonical form, so a NIfTI MR joins the CT and X-ray
of the same patient; it is keyed the same way (pseudonym or PatientID).

Patterns are matched against the files the walk found and the header read recognised
as NIfTI by content; nothing outside the root is ever matched (no ``glob`` on disk).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

__all__ = ["compile_pattern", "nifti_identity", "match_nifti"]

_BIDS_SUBJECT = re.compile(r"sub-([^/_.]+)")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a NIfTI pattern (matched against the whole relative path).

    Parameters
    ----------
    pattern : str
        As ``select.nifti`` takes it (checked by the spec: relative, no ``..``,
        ``{key}`` at most once).

    Returns
    -------
    re.Pattern
        With a group ``key`` when the pattern has ``{key}``.

    Examples
    --------
    >>> compile_pattern("sub-{key}/**/*_T1w.nii.gz").fullmatch("sub-07/ses-1/anat/sub-07_ses-1_T1w.nii.gz")["key"]
    '07'
    >>> compile_pattern("{key}/mr.nii.gz").fullmatch("SYN0001/mr.nii.gz")["key"]
    'SYN0001'
    """
    out = []
    parts = pattern.replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append("(?:[^/]+/)*" if not last else ".*")
            continue
        piece = []
        for token in re.split(r"(\{key\}|\*|\?)", part):
            if token == "{key}":
                piece.append("(?P<key>[^/]+?)")
            elif token == "*":
                piece.append("[^/]*")
            elif token == "?":
                piece.append("[^/]")
            elif token:
                piece.append(re.escape(token))
        out.append("".join(piece) + ("" if last else "/"))
    return re.compile("".join(out))


def nifti_identity(path: str, match: re.Match[str]) -> str | None:
    """The patient identifier of a matched NIfTI path: the ``{key}`` part, else a BIDS ``sub-<label>``.

    Parameters
    ----------
    path : str
        Relative to the root, ``/``-separated.
    match : re.Match
        Of :func:`compile_pattern`'s expression on ``path``.

    Returns
    -------
    str or None
        None when the path names no patient.

    Examples
    --------
    >>> p = "data/sub-A12/anat/sub-A12_T1w.nii.gz"
    >>> nifti_identity(p, compile_pattern("**/*_T1w.nii.gz").fullmatch(p))
    'A12'
    """
    if "key" in match.re.groupindex:
        return match.group("key") or None
    for part in path.split("/")[:-1]:
        m = _BIDS_SUBJECT.fullmatch(part)
        if m:
            return m.group(1)
    m = _BIDS_SUBJECT.match(path.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def match_nifti(files: Iterable[str], patterns: Mapping[str, Iterable[str]]) -> tuple[dict[str, dict[str, list[str]]],
                                                                                        list[str]]:
    """Assign NIfTI files to modalities and patient identifiers.

    Parameters
    ----------
    files : iterable of str
        NIfTI files (recognised by content), relative to the root.
    patterns : mapping
        Spec modality name -> its patterns.

    Returns
    -------
    (found, unkeyed)
        ``found[modality][identifier]`` lists the matching files (path order);
        ``unkeyed`` the matching files whose path names no patient. A file matching
        patterns of several modalities counts for each.
    """
    compiled = {m: [compile_pattern(p) for p in ps] for m, ps in patterns.items()}
    found: dict[str, dict[str, list[str]]] = {m: {} for m in compiled}
    unkeyed: list[str] = []
    for path in sorted(files):
        for modality, regexes in compiled.items():
            for rx in regexes:
                match = rx.fullmatch(path)
                if match is None:
                    continue
                ident = nifti_identity(path, match)
                if ident is None:
                    unkeyed.append(path)
                else:
                    found[modality].setdefault(ident, []).append(path)
                break
    return found, unkeyed
