"""Who a DICOM input belongs to, as keyed digests: the same person under two manifest keys.

One person exported twice (two MRNs, two research IDs after a re-export) is the
leakage that matters most in a real cohort: the manifest keys differ, the UIDs and
even the pixels may differ, but the headers still carry the same PatientID, or the
same PatientName + PatientBirthDate (+ PatientSex). :func:`person_digests` reads
those few attributes from one file of an input and returns HMAC-SHA256 digests of
their normalised values under a key drawn at random for each run
(:func:`new_run_key`): two inputs of one run can be compared, but no digest can be
matched against a list of names, and none outlives the run (they are never written
to a report, a cache or a log).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from os import PathLike
from typing import Any

from ..io.safe_files import open_regular

__all__ = ["PersonDigests", "person_digests", "new_run_key", "normalise_identity", "is_placeholder",
           "PLACEHOLDER_VALUES"]

#: Identity values that name nobody (after :func:`normalise_identity`): never compared.
PLACEHOLDER_VALUES = frozenset({
    "", "ANONYMOUS", "ANONYMIZED", "ANONYMISED", "ANON", "UNKNOWN", "NONE", "NULL", "NA", "N A", "X", "XXX",
    "PATIENT", "TEST", "REMOVED", "DELETED",
})

_TAGS = (0x00080008, 0x00100010, 0x00100020, 0x00100030, 0x00100040)  # ImageType, name, ID, birth date, sex
_LAST = max(_TAGS)


def new_run_key() -> bytes:
    """Return a fresh random HMAC key for one run's identity digests (32 bytes)."""
    return secrets.token_bytes(32)


def normalise_identity(value: Any) -> str:
    """Normalise a PatientID or PatientName for comparison.

    Parameters
    ----------
    value : any
        The header value (``None`` counts as empty).

    Returns
    -------
    str
        Upper case, ``^`` (name component separator) and ``=`` (name groups) as
        spaces, runs of spaces and punctuation collapsed, trimmed:
        ``"Doe^John "`` and ``"DOE  JOHN"`` give ``"DOE JOHN"``.
    """
    text = "" if value is None else str(value)
    text = re.sub(r"[\^=,._\-/\\]+", " ", text.upper())
    return " ".join(text.split())


def is_placeholder(normalised: str) -> bool:
    """True for an empty or placeholder identity (``ANONYMOUS``, ``0000``, ...).

    Parameters
    ----------
    normalised : str
        A value from :func:`normalise_identity`.

    Returns
    -------
    bool
        True when the value names nobody: empty, in :data:`PLACEHOLDER_VALUES`,
        or one character repeated (``0000``, ``XXXX``, ``9``).
    """
    compact = normalised.replace(" ", "")
    return normalised in PLACEHOLDER_VALUES or compact in PLACEHOLDER_VALUES or len(set(compact)) <= 1


@dataclass(frozen=True)
class PersonDigests:
    """Keyed digests of one input's header identity, and what the header says the image is.

    Attributes
    ----------
    patient_id : str or None
        HMAC of the normalised PatientID; ``None`` when empty or a placeholder.
    demographics : str or None
        HMAC of the normalised PatientName + PatientBirthDate (+ PatientSex when
        present); ``None`` unless both name and birth date are real values.
    placeholder : bool
        True when an identity was present but only as placeholders (not compared).
    localizer : bool
        ``ImageType`` holds ``LOCALIZER`` (a scout, not a diagnostic volume).
    """

    patient_id: str | None = None
    demographics: str | None = None
    placeholder: bool = False
    localizer: bool = False

    @property
    def digests(self) -> tuple[str, ...]:
        """The digests present (compare them; never print them)."""
        return tuple(d for d in (self.patient_id, self.demographics) if d)


def _mac(key: bytes, what: str, value: str) -> str:
    return hmac.new(key, f"{what}\x1f{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]


def person_digests(path: str | PathLike[str], key: bytes) -> PersonDigests:
    """Read the identity of one DICOM file (header only) as keyed digests.

    Parameters
    ----------
    path : str or PathLike
        A DICOM file (one file of a series is enough: a mixed series is found by
        the row check).
    key : bytes
        The run's HMAC key (:func:`new_run_key`).

    Returns
    -------
    PersonDigests
        Empty when the file cannot be parsed (the reader reports that).
    """
    from pydicom.filereader import read_partial

    def stop(tag: Any, vr: Any, length: Any) -> bool:  # the identity tags come early
        return bool(tag > _LAST)

    try:
        with open_regular(path) as fh:
            ds = read_partial(fh, stop_when=stop, specific_tags=list(_TAGS))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader
        return PersonDigests()
    try:
        image_type = [str(v).upper() for v in (ds.get("ImageType", None) or [])]
        pid = normalise_identity(ds.get("PatientID", None))
        name = normalise_identity(ds.get("PatientName", None))
        birth = re.sub(r"\D", "", str(ds.get("PatientBirthDate", "") or ""))
        sex = normalise_identity(ds.get("PatientSex", None))
    except Exception:  # noqa: BLE001 - a malformed value: compare nothing
        return PersonDigests()
    pid_ok = not is_placeholder(pid)
    demo_ok = not is_placeholder(name) and len(birth) == 8 and len(set(birth)) > 1
    placeholder = bool(pid or name) and not pid_ok and not demo_ok
    return PersonDigests(
        patient_id=_mac(key, "id", pid) if pid_ok else None,
        demographics=_mac(key, "demo", f"{name}\x1f{birth}\x1f{sex if sex in ('M', 'F') else ''}") if demo_ok else None,
        placeholder=placeholder or (not pid and not name),
        localizer="LOCALIZER" in image_type,
    )
