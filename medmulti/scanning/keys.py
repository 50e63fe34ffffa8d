"""Patient keys without PHI: a keyed hash of the PatientID, with a secret kept apart.

The manifest key of a scanned patient is, by default, a pseudonym:
``"P" + HMAC-SHA256(secret, PatientID)`` cut to 16 hex digits (64 bits; two of a
million patients collide with a probability below 3e-8, and :func:`patient_keys`
refuses a collision). The PatientID is first put in the canonical form manifest
keys are compared in (:func:`medmulti.manifest.schema.canonical_key`: invisible
characters removed, NFKC, surrounding spaces stripped), so the same patient
exported twice gets the same key. Without the secret the key cannot be traced back
to the PatientID by hashing candidate IDs; with the same secret, the next export
gives the same keys.

The secret is a file of random text (64 hex digits) created on first use with mode
0600 in a folder of mode 0700, by default ``~/.config/medmulti/scan-secret``
(``$XDG_CONFIG_HOME/medmulti/scan-secret`` when that is set). It must lie outside the
manifest's folder and the folder scanned: whoever gets those must not get the key.

Notes
-----
RFC 2104 (HMAC), FIPS 180-4 (SHA-256).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import secrets
import stat
from os import PathLike
from pathlib import Path
from typing import Iterable

from ..errors import MedmultiError, MissingFileError, UnsafePathError
from ..io.safe_files import is_within, open_regular
from ..manifest.schema import canonical_key

__all__ = ["default_secret_path", "load_secret", "pseudonym", "patient_keys", "normalise_patient_id",
           "KEY_KINDS", "PSEUDONYM_HEX"]

log = logging.getLogger("medmulti.scanning")

#: How scan keys patients: ``pseudonym`` (default) or ``patient-id`` (the header's PatientID, with a warning).
KEY_KINDS = ("pseudonym", "patient-id")
#: Hex digits of the HMAC kept in a pseudonym.
PSEUDONYM_HEX = 16
_MIN_SECRET_BYTES = 16
_MAX_SECRET_BYTES = 4096


def default_secret_path() -> Path:
    """Where the scan secret lives unless ``secret=`` says otherwise.

    Returns
    -------
    pathlib.Path
        ``$XDG_CONFIG_HOME/medmulti/scan-secret``, or ``~/.config/medmulti/scan-secret``.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "medmulti" / "scan-secret"


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # another process created it meanwhile: use that one
        return
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning("created a new scan secret in %s (mode 0600): keep it, and keep it private; the same secret gives "
                "the same patient keys on the next export", path)


def load_secret(path: str | PathLike[str] | None = None, *, create: bool = True,
                outside: Iterable[str | PathLike[str]] = ()) -> bytes:
    """Read (or create) the secret that keys the pseudonyms.

    Parameters
    ----------
    path : str or PathLike, optional
        The secret file (default :func:`default_secret_path`).
    create : bool
        Create it (random, mode 0600) when it does not exist.
    outside : iterable of path
        Folders the secret must not lie in (the manifest's folder, the folder scanned).

    Returns
    -------
    bytes
        The file's content without surrounding white space (at least 16 bytes).

    Raises
    ------
    UnsafePathError
        The secret lies inside one of ``outside``.
    MissingFileError
        It does not exist (``create=False``) or cannot be read or created; it is a FIFO
        or device (never opened).
    MedmultiError
        It holds fewer than 16 or more than 4,096 bytes.
    """
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path)))) if path is not None else default_secret_path()
    real = Path(os.path.realpath(p))
    for folder in outside:
        if is_within(real, Path(os.path.realpath(folder))):
            raise UnsafePathError("the scan secret lies inside the manifest's folder or the folder scanned: whoever "
                                  "gets the data would get the key to the pseudonyms", path=str(p),
                                  hint="keep the secret elsewhere (the default is ~/.config/medmulti/scan-secret)",
                                  cli_hint="pass --secret FILE outside both folders")
    if create and not os.path.lexists(p):
        try:
            _create(p)
        except OSError as exc:
            raise MissingFileError(f"the scan secret cannot be created ({errno.errorcode.get(exc.errno or 0, 'error')})",
                                   path=str(p)) from None
    try:
        with open_regular(p) as fh:
            mode = os.fstat(fh.fileno()).st_mode
            data = fh.read(_MAX_SECRET_BYTES + 1).strip()
    except FileNotFoundError:
        raise MissingFileError("the scan secret does not exist", path=str(p),
                               hint="pass the secret file of the earlier scans, or let scan create one") from None
    except OSError:
        raise MissingFileError("the scan secret cannot be read", path=str(p)) from None
    if not _MIN_SECRET_BYTES <= len(data) <= _MAX_SECRET_BYTES:
        raise MedmultiError(f"the scan secret must hold {_MIN_SECRET_BYTES} to {_MAX_SECRET_BYTES:,} bytes of "
                            "random text", path=str(p), hint="delete it to have a new one created (new keys)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the scan secret %s can be read by other users (mode %o): chmod 600 it", p, mode & 0o777)
    return data


def normalise_patient_id(patient_id: str) -> str:
    """The form in which a PatientID is keyed and compared (:func:`~medmulti.manifest.schema.canonical_key`).

    Parameters
    ----------
    patient_id : str
        As read from a header, a labels file or a NIfTI path.

    Returns
    -------
    str

    Examples
    --------
    >>> normalise_patient_id(" 12345\\u200b ")
    '12345'
    """
    return canonical_key(patient_id)


def pseudonym(patient_id: str, secret: bytes) -> str:
    """The pseudonymous key of a patient: ``"P"`` + 16 hex digits of HMAC-SHA256(secret, PatientID).

    Parameters
    ----------
    patient_id : str
        The PatientID (normalised here, :func:`normalise_patient_id`).
    secret : bytes
        From :func:`load_secret`.

    Returns
    -------
    str
        E.g. ``"P3f9a0c1d2e4b5a69"``; the same for the same PatientID and secret.

    Examples
    --------
    >>> pseudonym("12345", b"0123456789abcdef") == pseudonym("12345 ", b"0123456789abcdef")
    True
    >>> len(pseudonym("12345", b"0123456789abcdef"))
    17
    """
    digest = hmac.new(secret, normalise_patient_id(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return "P" + digest[:PSEUDONYM_HEX]


def patient_keys(patient_ids: Iterable[str], *, kind: str = "pseudonym", secret: bytes | None = None) -> dict[str, str]:
    """Manifest keys for normalised PatientIDs.

    Parameters
    ----------
    patient_ids : iterable of str
        Normalised PatientIDs (:func:`normalise_patient_id`).
    kind : {"pseudonym", "patient-id"}
        ``pseudonym``: :func:`pseudonym`; ``patient-id``: the PatientID itself.
    secret : bytes, optional
        Needed for ``pseudonym``.

    Returns
    -------
    dict
        PatientID -> key.

    Raises
    ------
    ValueError
        An unknown ``kind``, or ``pseudonym`` without a secret.
    MedmultiError
        Two PatientIDs with one pseudonym (never seen; the message names neither).
    """
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {KEY_KINDS}, got {kind!r}")
    ids = list(dict.fromkeys(patient_ids))
    if kind == "patient-id":
        return {pid: pid for pid in ids}
    if secret is None:
        raise ValueError("pseudonymous keys need the secret")
    out = {pid: pseudonym(pid, secret) for pid in ids}
    if len(set(out.values())) != len(out):
        raise MedmultiError("two patients got the same pseudonym (a 64-bit collision)",
                            hint="use another secret (the keys will change)")
    return out
