"""Validation problems and the report that collects them.

A :class:`Problem` is one finding about one patient (and modality, and file); a
:class:`ValidationReport` holds every problem of a manifest, renders the summary
table and the one-line-per-problem listing, and writes the JSON and HTML files.
Problems never hold values read from a header: messages are written by the checks
from fixed text plus manifest-given names (patient key, modality column, path as
written in the manifest). Those names are kept as given in the records and the JSON
file; the text and HTML renderings pass them through :func:`medmulti.text.printable`,
so a hostile key cannot drive the terminal or forge a report line.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import MedmultiError, error_class_of
from ..text import printable

__all__ = ["Problem", "ValidationReport", "SEVERITIES", "PROBLEM_KEYS", "UNREADABLE_CHECKS", "write_text_atomic"]

#: Side of a "not readable" tile in the HTML report, pixels (as large as the smallest thumbnail).
_TILE_PX = 128

SEVERITIES = ("error", "warning")

#: Keys of every JSON problem record, in this order. Stable: other tools read them.
PROBLEM_KEYS = ("patient_id", "modality", "path", "check", "severity", "message", "hint")

#: Checks meaning an input could not be read at all: the HTML report shows a
#: "not readable: <check>" tile for it beside the patient's thumbnail.
UNREADABLE_CHECKS = ("missing_modality", "missing_file", "corrupt_file", "series_geometry", "unsupported_data",
                     "resource_limit", "unsafe_path", "read_error")


@dataclass(frozen=True)
class Problem:
    """One validation finding.

    Parameters
    ----------
    patient_id : str or None
        The patient key from the manifest (``patient_id`` or ``patient_id/study_id``);
        ``None`` for cohort-level findings (e.g. class imbalance).
    modality : str or None
        The spec modality name (manifest column), or ``None``.
    path : str or None
        The path as written in the manifest (relative to its folder), or ``None``.
    check : str
        Check name, e.g. ``"missing_file"``, ``"patient_in_two_splits"``.
    severity : {"error", "warning"}
        Errors fail validation; warnings do not.
    message : str
        What was found. Never a header value.
    hint : str
        What to do about it.
    """

    patient_id: str | None
    modality: str | None
    path: str | None
    check: str
    severity: str
    message: str
    hint: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @classmethod
    def from_error(cls, exc: BaseException, *, patient_id: str | None = None, modality: str | None = None,
                   path: str | None = None, hint: str | None = None) -> "Problem":
        """Record a fault raised by a reader, a check or preprocessing.

        The one conversion from an exception to a record: the check name comes
        from the error's ``check`` field, never from its message.

        Parameters
        ----------
        exc : BaseException
            The fault. A :class:`~medmulti.errors.MedmultiError` keeps its check,
            message and hint; any other exception is a ``read_error`` whose text
            is not kept (a library's message may quote header values).
        patient_id, modality, path : str, optional
            Used where the error does not carry its own.
        hint : str, optional
            Used where the error carries no hint.

        Returns
        -------
        Problem
            Severity ``"error"``.
        """
        if not isinstance(exc, MedmultiError):
            return cls(patient_id, modality, path, "read_error", "error",
                       f"unexpected {type(exc).__name__} while reading",
                       "please report this as a medmulti bug, with the file if you can share it")
        return cls(exc.patient_id if exc.patient_id is not None else patient_id,
                   modality if modality is not None else exc.modality,
                   path if path is not None else exc.path,
                   exc.check, "error", exc.message, exc.hint or hint or "")

    def to_error(self) -> MedmultiError:
        """Return the typed error this problem raises as under the ``"error"`` policy.

        Returns
        -------
        MedmultiError
            Of the class :func:`medmulti.errors.error_class_of` gives for the
            check, carrying the patient, modality, path, message, hint and check.
        """
        return error_class_of(self.check)(f"{self.message} [{self.check}]", path=self.path, modality=self.modality,
                                          patient_id=self.patient_id, hint=self.hint or None, check=self.check)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON record (keys :data:`PROBLEM_KEYS`)."""
        d = asdict(self)
        return {k: d[k] for k in PROBLEM_KEYS}

    @property
    def is_error(self) -> bool:
        """True when the problem fails validation."""
        return self.severity == "error"

    def line(self) -> str:
        """One text line: ``patient_id  modality  path  check  what happened -> what to do``.

        Control and format characters in any field are escaped
        (:func:`medmulti.text.printable`): the result is always one line.
        """
        if not self.hint or self.hint.startswith(self.message):
            todo = self.hint or self.message
        else:
            todo = f"{self.message} -> {self.hint}"
        return "  ".join(printable(v) if v is not None else "-" for v in
                         (self.patient_id, self.modality, self.path, self.check, todo))


def _sort_key(p: Problem) -> tuple:
    return (p.severity != "error", p.patient_id or "", p.modality or "", p.check, p.path or "")


def write_text_atomic(path: str | PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write a text file atomically: a temporary file beside it, fsync, rename.

    Parameters
    ----------
    path : str or PathLike
        The file (its folder is created when missing).
    text : str
        The content, written as UTF-8 with no newline translation.
    mode : int, optional
        Permission bits (default: an ordinary file's, ``0o666`` less the umask;
        ``mkstemp`` alone would leave ``0o600``).

    Returns
    -------
    pathlib.Path
        ``path``: it holds either the old content or all of ``text``, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@dataclass
class ValidationReport:
    """Every problem found in one manifest.

    Parameters
    ----------
    problems : list of Problem
        Findings, errors and warnings.
    patients : list of str
        Every patient key in the manifest (for the OK / with-problems counts).
    n_files : int
        Number of files inspected.
    manifest_path : str, optional
        The manifest validated (for report titles).
    thumbnails : dict, optional
        Patient key -> PNG bytes (base64 text) for the HTML report; ``None``
        (the default) when no thumbnails were asked for.
    thumbnail_modalities : dict, optional
        Patient key -> the modality name its thumbnail shows (its label).
    seconds : float
        Wall time of the validation.
    """

    problems: list[Problem] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    n_files: int = 0
    manifest_path: str | None = None
    thumbnails: dict[str, str] | None = None
    thumbnail_modalities: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.problems = sorted(self.problems, key=_sort_key)

    # -- queries ---------------------------------------------------------------
    @property
    def errors(self) -> list[Problem]:
        """Problems with severity ``"error"``."""
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        """Problems with severity ``"warning"``."""
        return [p for p in self.problems if not p.is_error]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings do not fail)."""
        return not self.errors

    def patients_with_errors(self) -> list[str]:
        """Patient keys with at least one error, sorted."""
        return sorted({p.patient_id for p in self.errors if p.patient_id is not None})

    def by_check(self) -> dict[str, int]:
        """Number of problems per check name (errors and warnings)."""
        return dict(sorted(Counter(p.check for p in self.problems).items()))

    # -- text ------------------------------------------------------------------
    def summary(self) -> str:
        """Return the summary table as text.

        Returns
        -------
        str
            Patients OK / with problems, then one row per check with its severity,
            the number of problems and of patients affected.
        """
        bad = set(self.patients_with_errors())
        n = len(self.patients)
        lines = [
            f"patients: {n}  ok: {n - len(bad & set(self.patients))}  with errors: {len(bad)}"
            f"  files inspected: {self.n_files}",
        ]
        if self.problems:
            rows = []
            for check in sorted({p.check for p in self.problems}):
                ps = [p for p in self.problems if p.check == check]
                sev = "error" if any(p.is_error for p in ps) else "warning"
                pats = {p.patient_id for p in ps if p.patient_id is not None}
                rows.append((printable(check), sev, str(len(ps)), str(len(pats))))
            head = ("check", "severity", "problems", "patients")
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths)
            lines.append(fmt.format(*head).rstrip())
            lines.extend(fmt.format(*r).rstrip() for r in rows)
        lines.append("result: " + ("OK" if self.ok else f"{len(self.errors)} error(s)")
                     + f", {len(self.warnings)} warning(s)")
        return "\n".join(lines)

    def lines(self) -> list[str]:
        """One line per problem: ``patient_id  modality  path  check  what happened -> what to do``."""
        return [p.line() for p in self.problems]

    def __str__(self) -> str:
        return "\n".join([self.summary(), *self.lines()])

    # -- files -----------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """Return the problems as JSON records (see :data:`PROBLEM_KEYS`)."""
        return [p.to_dict() for p in self.problems]

    def to_json(self, path: str | PathLike[str]) -> Path:
        """Write the problems as a JSON list of records (atomically).

        Parameters
        ----------
        path : str or PathLike
            Destination file.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        p = Path(path)
        write_text_atomic(p, json.dumps(self.to_records(), indent=2) + "\n")
        return p

    def to_html(self, path: str | PathLike[str]) -> Path:
        """Write an HTML report: the summary, the problem table and a thumbnail per patient.

        Parameters
        ----------
        path : str or PathLike
            Destination file (self-contained: thumbnails are embedded PNGs).

        Returns
        -------
        pathlib.Path
            The written file.
        """
        def esc(text: object) -> str:  # literal, one line, no control or bidi characters
            return html.escape(printable(text))

        title = f"medmulti validation: {self.manifest_path or ''}"
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{esc(title)}</title>",
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
            ".error{background:#fdd}.warning{background:#ffd}"
            ".thumbs div{display:inline-block;margin:4px;text-align:center;font-size:small;vertical-align:top}"
            ".thumbs img{image-rendering:pixelated}"
            f".unreadable{{display:flex;align-items:center;justify-content:center;width:{_TILE_PX}px;"
            f"height:{_TILE_PX}px;border:2px dashed #c00;background:#fdd;color:#900;font-weight:bold}}</style>",
            "</head><body>",
            f"<h1>{esc(title)}</h1>",
            f"<pre>{html.escape(self.summary())}</pre>",  # lines built from escaped fields
            "<h2>Problems</h2><table><tr>"
            + "".join(f"<th>{esc(k)}</th>" for k in PROBLEM_KEYS) + "</tr>",
        ]
        for rec, prob in zip(self.to_records(), self.problems):
            parts.append(f"<tr class='{esc(prob.severity)}'>"
                         + "".join(f"<td>{esc('' if rec[k] is None else str(rec[k]))}</td>" for k in PROBLEM_KEYS)
                         + "</tr>")
        parts.append("</table>")
        if self.thumbnails is not None:
            parts.extend(self._tiles(esc))
        parts.append("</body></html>\n")
        p = Path(path)
        write_text_atomic(p, "\n".join(parts))
        return p

    def _tiles(self, esc: Callable[[object], str]) -> list[str]:
        """The Patients section: a labelled thumbnail per patient, a tile per unreadable input."""
        bad = set(self.patients_with_errors())
        unreadable: dict[str, dict[str, str]] = {}
        for p in self.errors:
            if p.check in UNREADABLE_CHECKS and p.patient_id is not None and p.modality is not None:
                unreadable.setdefault(p.patient_id, {}).setdefault(p.modality, p.check)
        thumbs = self.thumbnails or {}
        parts = ["<h2>Patients</h2><div class='thumbs'>"]
        for pid in sorted(set(thumbs) | set(unreadable)):
            cls = "error" if pid in bad else ""
            if pid in thumbs:
                label = " · ".join(str(v) for v in (pid, self.thumbnail_modalities.get(pid)) if v is not None)
                parts.append(f"<div class='{cls}'><img alt='{esc(label)}' "
                             f"src='data:image/png;base64,{thumbs[pid]}'><br>{esc(label)}</div>")
            for modality, check in sorted(unreadable.get(pid, {}).items()):
                parts.append(f"<div class='{cls}'><div class='unreadable'>not readable: {esc(check)}</div>"
                             f"{esc(pid)} · {esc(modality)}</div>")
        parts.append("</div>")
        return parts

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], **kwargs: Any) -> "ValidationReport":
        """Rebuild a report from JSON records (as written by :meth:`to_json`)."""
        return cls(problems=[Problem(**{k: r.get(k, "") if k == "hint" else r.get(k) for k in PROBLEM_KEYS})
                             for r in records], **kwargs)
