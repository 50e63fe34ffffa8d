"""Labels for scanned patients, joined from a CSV by PatientID, AccessionNumber or manifest key.

The labels file is the user's own (it may hold hospital identifiers). Its key column
is found by the join kind (``--label-key``):

======================  ============================================
``patient-id``          ``PatientID`` or ``patient_id`` (the header's PatientID)
``accession``           ``AccessionNumber`` or ``accession`` (any study of the patient)
``key``                 ``key`` or ``patient_id`` (the manifest key, e.g. a pseudonym)
======================  ============================================

The spec's label column(s) are copied into the manifest, and so are ``x_*`` columns.
A date column (``date=``, ``YYYY-MM-DD`` or ``YYYYMMDD``) gives each patient the
reference date that chooses among several studies. Identifiers from the file are
compared in canonical form and never shown: rows are named by their line number.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from ..errors import ManifestError
from ..manifest.load import read_rows
from ..spec import StudySpec
from .keys import normalise_patient_id

__all__ = ["LABEL_KEYS", "KEY_COLUMNS", "LabelTable", "read_labels", "parse_date"]

#: Join kinds of ``--label-key``.
LABEL_KEYS = ("patient-id", "accession", "key")
#: The column names each join kind looks for, in order.
KEY_COLUMNS = {"patient-id": ("PatientID", "patient_id"), "accession": ("AccessionNumber", "accession"),
               "key": ("key", "patient_id")}


@dataclass
class LabelTable:
    """A labels file, read.

    Attributes
    ----------
    kind : str
        One of :data:`LABEL_KEYS`.
    columns : list of str
        The columns copied into the manifest (label columns, then ``x_*``).
    rows : dict
        Canonical identifier -> ``(line, {column: cell})``.
    dates : dict
        Canonical identifier -> reference date (when a date column was given).
    problems : list of str
        Lines passed over and why (no identifier value is quoted).
    used : set of str
        Identifiers joined to a patient (filled by the scan).
    """

    kind: str
    columns: list[str]
    rows: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    dates: dict[str, _dt.date] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)


def parse_date(text: str) -> _dt.date | None:
    """A reference date: ``YYYY-MM-DD``, ``YYYYMMDD`` or ``YYYY/MM/DD``; None when not one.

    Parameters
    ----------
    text : str

    Returns
    -------
    datetime.date or None

    Examples
    --------
    >>> parse_date("2003-05-05"), parse_date("20030505"), parse_date("5/5/2003")
    (datetime.date(2003, 5, 5), datetime.date(2003, 5, 5), None)
    """
    t = text.strip().replace("-", "").replace("/", "")
    if len(t) != 8 or not t.isdigit():
        return None
    try:
        return _dt.date(int(t[:4]), int(t[4:6]), int(t[6:8]))
    except ValueError:
        return None


def read_labels(path: str | PathLike[str], spec: StudySpec, *, kind: str = "patient-id",
                date_column: str | None = None) -> LabelTable:
    """Read a labels CSV for :func:`medmulti.scanning.scan`.

    Parameters
    ----------
    path : str or PathLike
        The CSV (UTF-8, a header line; ``#`` comment lines before it are skipped).
    spec : StudySpec
        Its label column(s) must be in the file.
    kind : {"patient-id", "accession", "key"}
        What the key column holds (see the module doc for its name).
    date_column : str, optional
        A column of reference dates.

    Returns
    -------
    LabelTable

    Raises
    ------
    ValueError
        An unknown ``kind``.
    MissingFileError
        The file cannot be read.
    ManifestError
        Not UTF-8, no header, no key column, a label column or the date column missing.
    """
    if kind not in LABEL_KEYS:
        raise ValueError(f"kind must be one of {LABEL_KEYS}, got {kind!r}")
    p = Path(path)
    skipped, reader, line_of = read_rows(p)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ManifestError("the labels file has no header line", path=p) from None
    key_col = next((c for c in KEY_COLUMNS[kind] if c in header), None)
    if key_col is None:
        raise ManifestError(f"the labels file has no key column for --label-key {kind} (one of "
                            f"{list(KEY_COLUMNS[kind])})", path=p, row=skipped + 1, column=KEY_COLUMNS[kind][0])
    wanted = spec.labels.manifest_columns
    for col in [*wanted, *([date_column] if date_column else [])]:
        if col not in header:
            raise ManifestError("column not found in the labels file", path=p, row=skipped + 1, column=col)
    extra = [c for c in header if c.startswith("x_") and c not in wanted]
    table = LabelTable(kind=kind, columns=[*wanted, *extra])
    index = {c: i for i, c in enumerate(header)}
    for cells in reader:
        line = line_of()
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            table.problems.append(f"line {line}: {len(cells)} cells, the header has {len(header)}: passed over")
            continue
        ident = normalise_patient_id(cells[index[key_col]]) if kind != "accession" else cells[index[key_col]].strip()
        if not ident:
            table.problems.append(f"line {line}: the key column is empty: passed over")
            continue
        if ident in table.rows:
            table.problems.append(f"line {line}: the same key as line {table.rows[ident][0]}: passed over")
            continue
        table.rows[ident] = (line, {c: cells[index[c]].strip() for c in table.columns})
        if date_column:
            when = parse_date(cells[index[date_column]])
            if when is None:
                table.problems.append(f"line {line}: the {date_column} cell is not a date (YYYY-MM-DD): the most "
                                      "recent study is taken")
            else:
                table.dates[ident] = when
    return table
