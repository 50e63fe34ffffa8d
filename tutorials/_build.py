"""Build the tutorial notebooks from their sources in ``tutorials/_src/``.

Each source is a plain Python file in the "percent" format (``# %%`` starts a code
cell, ``# %% [markdown]`` a Markdown cell whose lines start with ``# ``), so it can be
run as a script (``MPLBACKEND=Agg python tutorials/_src/01_read_and_window.py``)
and reviewed as a normal diff. The notebooks are written without outputs; the test
suite (``tests/test_tutorials.py``) executes them.

Usage::

    python tutorials/_build.py            # rewrite every notebook
    python tutorials/_build.py --check    # exit 1 if a notebook differs from its source
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "_src"
MARKER = re.compile(r"^# %%(.*)$")


def cells_of(text: str) -> list[nbformat.NotebookNode]:
    """Split a percent-format source into notebook cells."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            kind = "markdown" if "[markdown]" in m.group(1) else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            body = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines)
            out.append(nbformat.v4.new_markdown_cell(body))
        else:
            out.append(nbformat.v4.new_code_cell("\n".join(lines)))
    return out


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook (no outputs) for one source file."""
    nb = nbformat.v4.new_notebook()
    nb.cells = cells_of(source.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{source.stem[:2]}-{i:02d}"  # stable ids: rebuilding gives the same file
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for source in sorted(SOURCES.glob("[0-9][0-9]_*.py")):
        target = HERE / f"{source.stem}.ipynb"
        text = nbformat.writes(build(source)) + "\n"
        if check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(HERE.parent)}")
    if stale:
        print("out of date (run python tutorials/_build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
