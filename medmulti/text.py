"""Text that came from input, made safe for the places medmulti writes it.

Patient keys, paths, labels, class names and splits come from manifests, specs,
file names and DICOM headers that other people wrote. medmulti shows them to a
person (terminal, log, report, error message, plot) and writes them into CSV files
that people open in spreadsheets. Two helpers cover both:

* :func:`printable` escapes every control, format and line-breaking character, so
  a value cannot drive the terminal (``ESC [2J``, an OSC title, a bell), reorder
  what is shown (U+202E RIGHT-TO-LEFT OVERRIDE) or start a forged line of its own
  (``"P2\\nresult: OK"``).
* :func:`csv_safe` neutralises a CSV cell a spreadsheet would run as a formula
  (OWASP "CSV Injection": a leading ``=``, ``+``, ``-``, ``@``, tab or carriage
  return gets a single quote in front).

Both are pure functions of their argument. JSON output needs neither:
:func:`json.dumps` already escapes control characters.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import TypeVar

__all__ = ["printable", "csv_safe", "PrintableFormatter", "CSV_FORMULA_PREFIXES"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP).
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

T = TypeVar("T")


def _unsafe(char: str) -> bool:
    """True for characters :func:`printable` escapes."""
    category = unicodedata.category(char)
    # Cc control (C0, DEL, C1), Cf format (bidi overrides, zero-width, BOM),
    # Cs lone surrogates (file names under surrogateescape), Co private use,
    # Cn unassigned (a newer Unicode may make them format characters),
    # Zl/Zp LINE / PARAGRAPH SEPARATOR (a line break in some terminals and editors)
    return category[0] == "C" or category in ("Zl", "Zp")


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """Return ``text`` with every control, format and line-break character escaped.

    Use it on every value that came from input (patient key, path, label, class,
    split, file name, header value) before showing it to a person: terminal
    output, log lines, error messages, text and HTML reports, plot text.

    Parameters
    ----------
    text : object
        A string (anything else goes through :func:`str` first).

    Returns
    -------
    str
        One line of text. Characters of Unicode category ``C*`` (controls C0,
        DEL and C1, format characters such as U+202E and U+200B, lone
        surrogates, private use, unassigned) and U+2028/U+2029 are written as
        ``\\t``, ``\\n``, ``\\r``, ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``;
        everything else, backslashes and non-ASCII letters included, is kept.

    Notes
    -----
    The escaping is for display, not a reversible encoding: a key that already
    holds the four characters ``\\x1b`` shows the same as one holding ESC. Keys
    are compared and stored as given; only what is shown is escaped.

    Examples
    --------
    >>> printable("P1\\x1b]0;PWNED\\x07\\x1b[2J")
    'P1\\\\x1b]0;PWNED\\\\x07\\\\x1b[2J'
    >>> print(printable("P2\\nresult: OK"))
    P2\\nresult: OK
    >>> print(printable("scan\\u202egpj.exe"))
    scan\\u202egpj.exe
    >>> printable("Müller/ct 01")
    'Müller/ct 01'
    >>> printable(None)
    'None'
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():  # the common case: nothing to escape
        return s
    return "".join(_escape(c) if _unsafe(c) else c for c in s)


def csv_safe(cell: T) -> T | str:
    """Return a CSV cell that a spreadsheet shows as text, never runs as a formula.

    A string starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return
    gets a single quote in front (OWASP's rule for CSV injection); other strings
    and every non-string (numbers stay numbers) are returned unchanged. Apply it
    to cells that came from input (patient keys, class names, paths, labels),
    not to numbers medmulti formats itself.

    Parameters
    ----------
    cell : object
        One cell value.

    Returns
    -------
    object
        ``cell``, or ``"'" + cell`` for a string a spreadsheet would evaluate.

    Notes
    -----
    The quote is part of the value when the file is read back by a program
    (``pandas.read_csv`` gives ``"'=1+2"``); spreadsheets hide it. Quoting of
    separators, quotes and line breaks inside a cell is left to :mod:`csv`.

    Examples
    --------
    >>> csv_safe("=HYPERLINK(\\"http://x\\", \\"click\\")")
    '\\'=HYPERLINK("http://x", "click")'
    >>> csv_safe("-1+2"), csv_safe("@SUM(A1)"), csv_safe("\\t=1")
    ("'-1+2", "'@SUM(A1)", "'\\t=1")
    >>> csv_safe("SYN0001"), csv_safe(-0.5), csv_safe(3)
    ('SYN0001', -0.5, 3)
    """
    if isinstance(cell, str) and cell.startswith(CSV_FORMULA_PREFIXES):
        return "'" + cell
    return cell


class PrintableFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose log lines pass through :func:`printable`.

    The message line (``%(message)s`` and the rest of the format) is escaped, so a
    patient key or path in a log record cannot drive the terminal or forge a
    line; a traceback appended with ``exc_info`` keeps its own line breaks. The
    ``medmulti`` command installs it on its log handler.

    Examples
    --------
    >>> rec = logging.LogRecord("medmulti", logging.WARNING, __file__, 1, "patient %s: %s", ("P2\\nOK", "x"), None)
    >>> PrintableFormatter("%(levelname)s %(message)s").format(rec)
    'WARNING patient P2\\\\nOK: x'
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))
