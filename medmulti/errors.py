"""The medmulti exception tree.

Every failure a user can cause raises a subclass of :class:`MedmultiError`. Each
error carries context (patient key, modality, path relative to the manifest root,
DICOM keyword involved) but never a value read from a header, so messages can be
logged and shared without leaking PHI. Errors survive :mod:`pickle`, which Keras
process workers use to send them back to the parent.
"""

from __future__ import annotations

import errno
import os
from os import PathLike
from typing import Any

from .text import printable

__all__ = [
    "MedmultiError",
    "MissingFileError",
    "CorruptFileError",
    "UnsupportedDataError",
    "SeriesGeometryError",
    "ResourceLimitError",
    "ManifestError",
    "UnsafePathError",
    "SpecError",
    "RegistrationError",
    "GeometryError",
    "CacheError",
    "RunFolderError",
    "OutputError",
    "ExecutorError",
    "DeviceError",
    "CHECK_ERRORS",
    "error_class_of",
]


class MedmultiError(Exception):
    """Root of every error medmulti raises for a problem the user can cause.

    Parameters
    ----------
    message : str
        What happened, what was expected and how to fix it. Must not contain
        values read from a DICOM/NIfTI header.
    path : str or PathLike, optional
        The file or folder involved (relative to the manifest root when known).
    modality : str, optional
        The modality name (spec name such as ``"ct"``, or a DICOM Modality).
    patient_id : str, optional
        The patient key from the manifest (never the header's PatientID).
    keyword : str, optional
        The DICOM keyword (e.g. ``"ImagePositionPatient"``) or NIfTI field involved.
    hint : str, optional
        How to fix it; appended to the message.
    cli_hint : str, optional
        The same advice in the ``medmulti`` command's syntax (``--overwrite``
        rather than ``overwrite=True``); :meth:`cli_text` uses it.
    check : str, optional
        The validation check name this fault is reported under
        (``"corrupt_file"``, ``"sha256_mismatch"``...); default: the class's
        :attr:`default_check`. A :class:`~medmulti.manifest.Problem` and this
        error convert into each other through it (``Problem.from_error`` /
        ``Problem.to_error``), never by reading the message.
    argument : str, optional
        The reader argument the fault is about (``"series"``, ``"volume"``),
        so that a manifest can name its column (``ct_series``) instead.
    """

    #: The check name an error of this class is reported under unless ``check=`` says otherwise.
    default_check = "read_error"

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        modality: str | None = None,
        patient_id: str | None = None,
        keyword: str | None = None,
        hint: str | None = None,
        cli_hint: str | None = None,
        check: str | None = None,
        argument: str | None = None,
    ) -> None:
        self.message = str(message)
        self.check = check or type(self).default_check
        self.argument = argument
        self.path = None if path is None else str(path)
        self.modality = modality
        self.patient_id = patient_id
        self.keyword = keyword
        self.hint = hint
        self.cli_hint = cli_hint
        super().__init__(self._render())

    # -- context -----------------------------------------------------------
    def with_context(
        self,
        *,
        path: str | PathLike[str] | None = None,
        modality: str | None = None,
        patient_id: str | None = None,
    ) -> "MedmultiError":
        """Return this error with missing context fields filled in.

        Parameters
        ----------
        path, modality, patient_id : optional
            Values used only where the error does not already carry one.

        Returns
        -------
        MedmultiError
            ``self``, updated in place (so ``raise err.with_context(...)`` keeps
            the type and traceback).
        """
        if self.path is None and path is not None:
            self.path = str(path)
        if self.modality is None and modality is not None:
            self.modality = modality
        if self.patient_id is None and patient_id is not None:
            self.patient_id = patient_id
        self.args = (self._render(),)
        return self

    def context(self) -> dict[str, Any]:
        """Return the context as a JSON-serialisable dict (no header values)."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "patient_id": self.patient_id,
            "modality": self.modality,
            "path": self.path,
            "keyword": self.keyword,
            "hint": self.hint,
            "check": self.check,
        }

    def _render(self) -> str:
        parts = []
        if self.patient_id is not None:
            parts.append(f"patient {self.patient_id!r}")
        if self.modality is not None:
            parts.append(f"modality {self.modality!r}")
        if self.path is not None:
            parts.append(f"file {self.path!r}")
        if self.keyword is not None:
            parts.append(f"({printable(self.keyword)})")
        where = ", ".join(parts)
        # message and hint may quote a manifest key, path or label: one line, no control characters
        message = printable(self.message)
        text = f"{where}: {message}" if where else message
        if self.hint:
            text += f" Hint: {printable(self.hint)}"
        return text

    def __str__(self) -> str:
        return self._render()

    def cli_text(self) -> str:
        """Return the message as the ``medmulti`` command prints it.

        Returns
        -------
        str
            Like ``str(err)``, with :attr:`cli_hint` (command-line syntax) in place
            of :attr:`hint` (Python syntax) where the error carries one.
        """
        cli_hint = getattr(self, "cli_hint", None)
        if not cli_hint:
            return self._render()
        python_hint, self.hint = self.hint, cli_hint
        try:
            return self._render()
        finally:
            self.hint = python_hint

    def __reduce__(self) -> tuple[Any, ...]:  # keep type, message and context across pickle
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "path": self.path,
                    "modality": self.modality,
                    "patient_id": self.patient_id,
                    "keyword": self.keyword,
                    "hint": self.hint,
                    "check": self.check,
                    "argument": self.argument,
                },
                self.__dict__.copy(),
            ),
        )


def _rebuild(cls: type[MedmultiError], message: str, context: dict[str, Any], state: dict[str, Any]) -> MedmultiError:
    err = cls.__new__(cls)
    MedmultiError.__init__(err, message, **context)
    err.__dict__.update(state)
    err.args = (err._render(),)
    return err


class MissingFileError(MedmultiError, FileNotFoundError):
    """A path named by the user (or a manifest) does not exist or is unreadable."""

    default_check = "missing_file"


class CorruptFileError(MedmultiError):
    """A file exists but cannot be parsed or its pixels cannot be decoded."""

    default_check = "corrupt_file"


class UnsupportedDataError(MedmultiError):
    """A valid file that medmulti does not handle (SR, RT plan, RGB CT, 4D without ``volume=``...)."""

    default_check = "unsupported_data"


class SeriesGeometryError(MedmultiError):
    """A DICOM series does not assemble into one regular volume.

    Raised for missing slices (gaps), duplicate positions, mixed orientations,
    differing Rows/Columns/PixelSpacing, non-uniform spacing, several series in
    one folder, or a gantry tilt.
    """

    default_check = "series_geometry"


class ResourceLimitError(MedmultiError):
    """Declared sizes exceed the data present or a configured cap (see :mod:`medmulti.io.limits`)."""

    default_check = "resource_limit"


class ManifestError(MedmultiError):
    """A manifest CSV is malformed (unknown column, bad split, bad label...)."""

    default_check = "manifest"

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None, **kwargs: Any) -> None:
        self.row = row
        self.column = column
        if row is not None or column is not None:
            where = []
            if row is not None:
                where.append(f"row {row}")
            if column is not None:
                where.append(f"column {column!r}")
            message = f"{', '.join(where)}: {message}"
        super().__init__(message, **kwargs)


class UnsafePathError(ManifestError):
    """A manifest path leaves the data root (``..``, absolute path, symlink pointing out)."""

    default_check = "unsafe_path"


class SpecError(MedmultiError):
    """A study spec (YAML or dataclass) has unknown keys or bad values."""

    default_check = "spec"


class RegistrationError(MedmultiError):
    """A rigid registration failed or diverged."""

    default_check = "registration"


class GeometryError(MedmultiError):
    """Images that should share a grid do not (see ``check_coregistered``)."""

    default_check = "geometry"


class CacheError(MedmultiError):
    """The preprocessing cache is unusable (unwritable folder, refused entry)."""

    default_check = "cache"


class RunFolderError(MedmultiError):
    """A run folder cannot be used: not a run, a failed run, a model that does not load,
    or a folder that cannot be written."""

    default_check = "run_folder"


class OutputError(MedmultiError):
    """An output file the user asked for (a report, a JSON summary, a PNG) cannot be
    written: a read-only folder, a full disk, a folder in the way. ``errno`` is kept."""

    default_check = "output"


class ExecutorError(MedmultiError):
    """Per-patient work cannot run where it was sent: ``executor="dask"`` without dask
    installed, a Dask scheduler that cannot be reached, or a worker process that died
    every time it ran one patient (see :mod:`medmulti.executor`)."""

    default_check = "executor"


class DeviceError(MedmultiError):
    """Training cannot run on the devices it was given as asked: a batch that the
    replicas of a distribution strategy cannot share evenly (see ``docs/scaling.md``)."""

    default_check = "device"


#: Every check name a fault can be reported under -> the error class it raises as.
#: Validation (``medmulti.manifest``) reports a fault as a ``Problem`` with its check
#: name; a policy of ``"error"`` raises it again as this class. The one table.
CHECK_ERRORS: dict[str, type[MedmultiError]] = {
    "missing_modality": MissingFileError,
    "missing_file": MissingFileError,
    "corrupt_file": CorruptFileError,
    "sha256_mismatch": CorruptFileError,
    "read_error": CorruptFileError,
    "series_geometry": SeriesGeometryError,
    "unsupported_data": UnsupportedDataError,
    "modality_mismatch": UnsupportedDataError,
    "wrong_dims": UnsupportedDataError,
    "not_a_volume": UnsupportedDataError,
    "no_overlap": GeometryError,
    "geometry": GeometryError,
    "registration": RegistrationError,
    "resource_limit": ResourceLimitError,
    "unsafe_path": UnsafePathError,
}


def error_class_of(check: str) -> type[MedmultiError]:
    """Return the error class a fault reported under ``check`` raises as.

    Parameters
    ----------
    check : str
        A check name (``"corrupt_file"``, ``"patient_in_two_splits"``...).

    Returns
    -------
    type
        From :data:`CHECK_ERRORS`; :class:`ManifestError` for the row- and
        cohort-level checks (leakage, duplicates, bad cells).
    """
    return CHECK_ERRORS.get(check, ManifestError)


def os_error_reason(exc: OSError) -> str:
    """Say in words why a file operation failed, for a typed error's message.

    Parameters
    ----------
    exc : OSError
        The error from the operating system.

    Returns
    -------
    str
        ``"no space left on the device"`` for ``ENOSPC``, else the system's text for
        the errno, else the exception's class name. Never the file name.

    Examples
    --------
    >>> os_error_reason(OSError(28, "No space left on device", "/secret/name"))
    'no space left on the device'
    >>> os_error_reason(PermissionError(13, "Permission denied"))
    'Permission denied'
    """
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__
