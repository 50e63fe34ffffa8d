"""Every shell block of README.md and docs/*.md runs as a user runs it.

One bash process per document, in an empty folder, the blocks in the order they appear
(a later block may use what an earlier one made, and ``cd`` carries over). Each command
line (continuation lines joined) must end with its documented exit code: 0 unless the
line's comment says ``exit N``. A block the reader is not meant to paste as it stands
(installing packages, ``make`` targets, a synopsis) is marked in the Markdown by an HTML
comment ``<!-- not run: why -->`` on the line before its fence; the test checks that
every such mark gives a reason. Every command runs in its own process, so ``train``,
``evaluate`` and ``predict`` each start fresh, as in a terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (?P<why>.*\S)\s*-->\s*$")
EXPECT = re.compile(r"#.*\bexit (\d+)\b")


def shell_blocks(path: Path) -> list[tuple[int, list[str], str | None]]:
    """(first line number, command lines, reason not run) for each bash block of a document."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i + 1
        j = start
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if lang in ("bash", "sh", "shell"):
            prev = lines[i - 1] if i else ""
            mark = NOT_RUN.match(prev)
            commands, pending = [], ""
            for raw in lines[start:j]:
                if raw.rstrip().endswith("\\"):
                    pending += raw.rstrip()[:-1] + " "
                    continue
                full = (pending + raw).strip()
                pending = ""
                if full and not full.startswith("#"):
                    commands.append(full)
            blocks.append((start + 1, commands, mark.group("why") if mark else None))
        i = j + 1
    return blocks


def expected_exit(command: str) -> int:
    m = EXPECT.search(command)
    return int(m.group(1)) if m else 0


def script_for(path: Path) -> tuple[str, int]:
    out = ["set -u"]
    n = 0
    for first_line, commands, why in shell_blocks(path):
        if why is not None:
            continue
        for command in commands:
            n += 1
            want = expected_exit(command)
            where = f"{path.name} block at line {first_line}: {command}"
            out += [
                f"echo {_quote('$ ' + command)} >&2",
                command,
                "__rc=$?",
                f"if [ $__rc -ne {want} ]; then echo {_quote('DOCS-FAIL ' + where)}\" -> exit $__rc, documented "
                f"{want}\" >&2; exit 97; fi",
            ]
    return "\n".join(out) + "\n", n


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _documents_with_commands() -> list[Path]:
    return [p for p in DOCUMENTS if script_for(p)[1]]


def test_not_run_marks_give_a_reason_and_mark_a_shell_block():
    for path in DOCUMENTS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            if line.startswith("<!-- not run"):
                assert NOT_RUN.match(line), f"{path.name}:{k + 1}: write `<!-- not run: why -->`"
                nxt = lines[k + 1] if k + 1 < len(lines) else ""
                assert FENCE.match(nxt) and FENCE.match(nxt).group(1) in ("bash", "sh", "shell"), (
                    f"{path.name}:{k + 1}: the mark must sit right above a ```bash fence")


def test_the_readme_shell_blocks_are_run():
    # the README's commands are the first a newcomer pastes: none of them may be excluded
    # except the two make targets (they would run this test suite inside itself)
    for first_line, commands, why in shell_blocks(ROOT / "README.md"):
        if why is not None:
            assert all(c.startswith("make ") for c in commands), f"README.md line {first_line}: {why}"


@pytest.mark.slow
@pytest.mark.parametrize("path", _documents_with_commands(), ids=lambda p: p.name)
def test_document_shell_blocks_run_in_an_empty_folder(path, tmp_path):
    script, n = script_for(path)
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=1500)
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, f"{path.name}: {n} commands\n{tail}"
    assert "Traceback" not in proc.stderr, tail
    # TensorFlow's native start-up lines stay off the terminal without -v
    assert "oneDNN custom operations" not in proc.stderr and "cuda drivers" not in proc.stderr, tail
