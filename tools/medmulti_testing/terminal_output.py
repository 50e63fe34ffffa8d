"""Control characters in every manifest field, printed through the ``medmulti`` command.

A manifest comes from someone else. Its patient keys, splits, labels and paths are
shown in terminals, logs and reports, so each may hold a terminal escape
(``ESC ]0;title BEL``, ``ESC [2J``), a C1 control (U+009B is a one-character CSI),
a bidi override (U+202E), a zero-width character or a line break followed by a
forged line. :func:`control_character_campaign` plants every such character in
every manifest field of a generated sample cohort (and in a DICOM folder name and
Modality header), runs ``medmulti validate``, ``preprocess`` and ``info`` as
subprocesses, and reports every raw control character, forged line or traceback
found in what they print.

Used by ``benchmarks/stress.py --only text``; the fast tests run it on a few
characters. (:mod:`medmulti_testing.hostile_text` checks the other side: that
such manifests load into a report or a typed error.)
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import warnings
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["TERMINAL_HOSTILE_CHARACTERS", "FORGED", "MANIFEST_FIELDS", "raw_controls", "forged_lines",
           "control_character_campaign"]

#: A line a hostile value tries to start (medmulti never prints it itself).
FORGED = "FORGED result: OK"

#: Every C0 control but NUL, DEL, every C1 control, the bidi and zero-width format
#: characters, BOM, and the Unicode line and paragraph separators.
TERMINAL_HOSTILE_CHARACTERS: tuple[str, ...] = (
    *(chr(c) for c in range(0x01, 0x20)),
    "\x7f",
    *(chr(c) for c in range(0x80, 0xA0)),
    "\u061c", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff",
    "\u2028", "\u2029",
)

#: Manifest columns of the sample cohort that the campaign fills with hostile values.
MANIFEST_FIELDS = ("patient_id", "split", "diagnosis", "ct", "mr", "xray")


def raw_controls(text: str) -> list[str]:
    """Characters of ``text`` that no human-facing output may hold raw.

    Parameters
    ----------
    text : str
        Captured output (the line breaks between lines are allowed).

    Returns
    -------
    list of str
        Each offending character once, as ``"U+001B"``, in order of appearance.

    Examples
    --------
    >>> raw_controls("ok\\nP1\\x1b[2J \\u202e")
    ['U+001B', 'U+202E']
    """
    from medmulti.text import printable

    seen: dict[str, None] = {}
    for c in text:
        if c != "\n" and printable(c) != c:
            seen.setdefault(f"U+{ord(c):04X}")
    return list(seen)


def forged_lines(text: str, marker: str = FORGED) -> int:
    """Number of lines of ``text`` that start with ``marker``.

    Parameters
    ----------
    text : str
        Captured output.
    marker : str
        The forged line's start.

    Returns
    -------
    int
        Lines a hostile value managed to start (0 when escaping works).
    """
    return sum(line.startswith(marker) for line in text.split("\n"))


def _payloads(chars: Iterable[str]) -> list[str]:
    """One payload per character (inside text), plus escape sequences and forged lines."""
    out = [f"a{c}b" for c in chars]
    out += ["P1\x1b]0;PWNED\x07\x1b[2J", "P2\n" + FORGED, "P3\r" + FORGED, "P4\u2028" + FORGED]
    return out


def _read_manifest(path: Path) -> tuple[list[str], list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    comments = [ln for ln in lines if ln.startswith("#")]
    rows = list(csv.reader(io.StringIO("".join(ln for ln in lines if not ln.startswith("#")))))
    return comments, rows[0], rows[1:]


def _write_manifest(path: Path, comments: Sequence[str], header: Sequence[str],
                    rows: Iterable[Sequence[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(header)
    w.writerows(rows)
    path.write_text("".join(comments) + buf.getvalue(), encoding="utf-8")
    return path


def _run(args: Sequence[str], cwd: Path, timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONIOENCODING="utf-8", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "medmulti.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", errors="surrogateescape")


def control_character_campaign(
    work: str | PathLike[str],
    *,
    chars: Sequence[str] = TERMINAL_HOSTILE_CHARACTERS,
    fields: Sequence[str] = MANIFEST_FIELDS,
    info: bool = True,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Plant control characters in every manifest field and check what the command prints.

    For each field, one manifest holds one row per payload (``"a<char>b"`` for
    each character, plus an OSC/CSI sequence and line breaks followed by
    :data:`FORGED`), the other fields valid; ``medmulti validate`` and
    ``medmulti preprocess`` run on it. With ``info``, ``medmulti info`` (text
    and ``--json``) runs on a DICOM series folder whose name and Modality header
    hold the characters.

    Parameters
    ----------
    work : str or PathLike
        Scratch folder (created; the cohort and manifests go there).
    chars : sequence of str
        The characters to plant (default :data:`TERMINAL_HOSTILE_CHARACTERS`).
    fields : sequence of str
        Manifest columns to fill (default :data:`MANIFEST_FIELDS`).
    info : bool
        Also run ``medmulti info`` on the hostile series folder.
    timeout : float
        Seconds per command.

    Returns
    -------
    dict
        ``runs``, ``payloads``, ``fields``, and the failures: ``leaks`` (command,
        field, exit code and the raw characters found), ``forged`` (lines that
        start with :data:`FORGED`), ``tracebacks`` (commands that printed one).
    """
    from medmulti.examples.cohort import make_sample_cohort

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    cohort = make_sample_cohort(work / "cohort", n_patients=4, seed=0, faults=False, progress=False, overwrite=True)
    comments, header, base = _read_manifest(cohort.manifest)
    payloads = _payloads(chars)
    col = {name: i for i, name in enumerate(header)}
    res: dict[str, Any] = {"runs": 0, "payloads": len(payloads), "fields": list(fields), "leaks": [],
                           "forged": [], "tracebacks": []}

    def check(command: str, field: str, code: int, out: str) -> None:
        res["runs"] += 1
        leaks = raw_controls(out)
        if leaks:
            res["leaks"].append({"command": command, "field": field, "exit": code, "chars": leaks})
        if forged_lines(out):
            res["forged"].append({"command": command, "field": field, "lines": forged_lines(out)})
        if "Traceback (most recent call last)" in out:
            res["tracebacks"].append({"command": command, "field": field, "exit": code})

    for field in fields:
        rows = []
        for i, payload in enumerate(payloads):
            row = list(base[i % len(base)])
            row[col["patient_id"]] = f"H{i:03d}"
            if field in ("ct", "mr", "xray"):
                row[col[field]] += payload  # a path that does not exist: shown in the report
            elif field == "patient_id":
                row[col[field]] = f"H{i:03d}{payload}"
            else:
                row[col[field]] = payload
            rows.append(row)
        manifest = _write_manifest(cohort.root / f"hostile_{field}.csv", comments, header, rows)
        check("validate", field, *_run(["validate", manifest.name, "--spec", "spec.yaml", "--no-progress"],
                                       cohort.root, timeout))
        cache = work / f"cache_{field}"
        check("preprocess", field, *_run(["preprocess", manifest.name, "--spec", "spec.yaml", "--cache", str(cache),
                                          "--no-progress", "--workers", "1"], cohort.root, timeout))
        shutil.rmtree(cache, ignore_errors=True)

    if info:  # a series folder whose name and Modality header hold the characters
        import pydicom

        name = "series" + "".join(c for c in chars if c not in "\x00/")
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid CS value: that is the point
            for f in sorted((cohort.root / base[0][col["ct"]]).iterdir()):
                ds = pydicom.dcmread(f)
                ds.Modality = "CT" + "".join([c for c in chars if ord(c) < 0x100][:14])  # the default charset
                ds.save_as(folder / f.name)
        check("info", "folder name, Modality", *_run(["info", name], work, timeout))
        check("info --json", "folder name, Modality", *_run(["info", "--json", name], work, timeout))
    return res
