"""The documentation builds with no warning and documents the whole public surface.

- ``mkdocs build --strict`` (what ``make docs`` runs) succeeds into a temporary
  folder: no broken links or references, no missing pages, no docstring the
  numpy parser warns about.
- Every name in ``medmulti.__all__`` has an API reference entry: ``docs/api.md``
  names it in a ``:::`` block (directly, or through a module block whose
  ``__all__`` exports it), the identifier resolves to the very object
  ``medmulti.<name>`` gives, and the built page carries its anchor.
- ``docs/cli.md`` covers every subcommand and option of ``medmulti.cli.build_parser()``
  and the exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import medmulti
from medmulti import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_MD = DOCS / "api.md"
CLI_MD = DOCS / "cli.md"

DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*\n((?:[ \t]+\S[^\n]*\n)*)", re.MULTILINE)


def _directives(with_members: bool = False) -> list[str]:
    """Identifiers of the ``:::`` blocks of docs/api.md (only those rendering members if asked)."""
    text = API_MD.read_text(encoding="utf-8") + "\n"
    return [m.group(1) for m in DIRECTIVE.finditer(text)
            if not (with_members and re.search(r"members:\s*false", m.group(2)))]


def _resolve(identifier: str):
    """Import ``a.b.c`` as module ``a.b`` attribute ``c`` (or as module ``a.b.c``)."""
    try:
        return importlib.import_module(identifier)
    except ModuleNotFoundError:
        module, _, attr = identifier.rpartition(".")
        return getattr(importlib.import_module(module), attr)


def _documented_path(name: str) -> str | None:
    """The ``:::`` identifier under which ``medmulti.<name>`` is documented, or None."""
    target = getattr(medmulti, name)
    with_members = set(_directives(with_members=True))
    for ident in _directives():
        try:
            obj = _resolve(ident)
        except (ImportError, AttributeError):
            continue
        if ident.rsplit(".", 1)[-1] == name and obj is target:
            return ident
        if ident in with_members and isinstance(obj, type(medmulti)) and name in getattr(obj, "__all__", ()) \
                and getattr(obj, name) is target:
            return f"{ident}.{name}"
    return None


PUBLIC = [n for n in medmulti.__all__ if n != "__version__"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_in_api_md(name):
    assert _documented_path(name), (
        f"medmulti.{name} has no entry in docs/api.md: add '::: {getattr(medmulti, name).__module__}.{name}' "
        "or a module block whose __all__ exports it")


def test_api_md_directives_resolve():
    bad = []
    for ident in _directives():
        try:
            _resolve(ident)
        except (ImportError, AttributeError) as exc:
            bad.append(f"{ident}: {exc}")
    assert not bad, "docs/api.md names objects that do not exist:\n" + "\n".join(bad)


def _stage_modules() -> list:
    """The modules whose members docs/api.md renders (``:::`` module blocks, members not off)."""
    import types

    out = []
    for ident in _directives(with_members=True):
        obj = _resolve(ident)
        if isinstance(obj, types.ModuleType) and ident != "medmulti":
            out.append((ident, obj))
    return out


def _own_doc(obj) -> str | None:
    """The object's own docstring (not inherited, not a dataclass's generated signature)."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        if doc and doc.startswith(obj.__name__ + "("):
            return None
        return doc
    return getattr(obj, "__doc__", None)


def test_every_public_callable_has_a_docstring():
    """A public function or class without a docstring is an undocumented public name."""
    missing = []
    for ident, module in _stage_modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (callable(obj) or isinstance(obj, type)) and not (_own_doc(obj) or "").strip():
                missing.append(f"{ident}.{name}")
    for name in PUBLIC:
        obj = getattr(medmulti, name)
        if (callable(obj) or isinstance(obj, type)) and not (_own_doc(obj) or "").strip():
            missing.append(f"medmulti.{name}")
    assert not missing, f"public names without a docstring: {sorted(set(missing))}"


def _walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Yield ``(command path, parser)`` for the parser and every nested subparser."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, prefix + (name,))


def _section(text: str, command: tuple[str, ...]) -> str:
    """The text of the ``medmulti <command>`` section (up to the next heading of that level)."""
    title = "medmulti " + " ".join(command)
    m = re.search(rf"^(#+) `{re.escape(title)}`\s*$", text, re.MULTILINE)
    assert m, f"docs/cli.md has no section '## `{title}`'"
    level = len(m.group(1))
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def test_cli_md_covers_every_subcommand_and_option():
    text = CLI_MD.read_text(encoding="utf-8")
    missing = []
    for path, parser in _walk(cli.build_parser()):
        if not path:
            body = text
        else:
            try:
                body = _section(text, path)
            except AssertionError as exc:
                missing.append(str(exc))
                continue
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue  # -h/--help: documented once for every command
            if isinstance(action, argparse._SubParsersAction):
                names = list(action.choices)
            elif action.option_strings:
                names = [o for o in action.option_strings]
            else:
                names = [action.metavar or action.dest]
            for n in names:
                if f"`{n}`" not in body:
                    missing.append(f"{' '.join(('medmulti',) + path)}: {n}")
    assert not missing, ("docs/cli.md lacks (regenerate it: python tests/test_docs_build.py --write-cli-md):\n"
                         + "\n".join(missing))


def test_cli_md_documents_exit_codes():
    text = CLI_MD.read_text(encoding="utf-8")
    for path, _ in _walk(cli.build_parser()):
        if len(path) == 1 and path != ("cache",):
            body = _section(text, path)
            assert "Exit codes" in body, f"medmulti {path[0]}: no 'Exit codes' line in docs/cli.md"
    for code in ("0", "1", "2"):
        assert f"`{code}`" in text


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    assert "WARNING" not in log, log[-6000:]
    api_html = (site / "api" / "index.html").read_text(encoding="utf-8")
    missing = [n for n in PUBLIC if f'id="{_documented_path(n)}"' not in api_html]
    assert not missing, f"built API page lacks anchors for {missing}"
    # every name a stage module exports is rendered (griffe skips what it cannot see)
    unrendered = [f"{ident}.{n}" for ident, module in _stage_modules()
                  for n in getattr(module, "__all__", []) if f'id="{ident}.{n}"' not in api_html]
    assert not unrendered, f"docs/api.md renders no entry for {unrendered}"
    # every page in the nav was built
    for page in ("readers", "preprocessing", "manifest", "sequence", "models", "cli", "troubleshooting"):
        assert (site / page / "index.html").is_file(), page


# ---------------------------------------------------------------------------
# docs/cli.md generator: ``python tests/test_docs_build.py --write-cli-md``
# rewrites docs/cli.md from the real argparse parsers (run it after changing a
# subcommand; the coverage test above fails until it is run).

_CLI_INTRO = """\
# CLI reference

One command, `medmulti`, with one subcommand per job. Every page of this reference is
generated from the command's own argument parsers
(`python tests/test_docs_build.py --write-cli-md`), and a test checks that every
subcommand and option appears here.

```bash
medmulti sample-data cohort/                                   # a generated cohort with faults
medmulti validate cohort/manifest.csv --spec cohort/spec.yaml  # every problem; exit 1: faults found
```

## Exit codes

Every subcommand uses the same codes; each section below says what they mean for it.

| code | meaning |
| --- | --- |
| `0` | clean: the job finished and found nothing wrong |
| `1` | problems found: validation errors, inputs that failed, a data error (`MedmultiError`) naming patient, modality and file |
| `2` | usage error: bad arguments, a spec or manifest that cannot be read |
| `130` | interrupted (Ctrl-C) |

Errors are printed to standard error as `medmulti <command>: <ErrorClass>: <message>`;
the [troubleshooting page](troubleshooting.md) explains each error class.
"""


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    if action.metavar:
        return f"`{action.metavar}`"
    return f"`{action.dest.upper()}`"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    d = action.default
    if d is None or d is False or d == argparse.SUPPRESS or (action.nargs == 0 and d is not True):
        return ""
    return f"`{d}`"


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | value | default | meaning |", "| --- | --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            names = ", ".join(f"`{o}`" for o in action.option_strings)
            if isinstance(action, argparse.BooleanOptionalAction):
                value = ""
            else:
                value = _value(action)
        else:
            names = f"`{action.metavar or action.dest}`"
            value = "positional"
        help_text = (action.help or "") % {"default": action.default} if action.help else ""
        if "append" in type(action).__name__.lower():
            help_text += " (repeatable)" if "repeatable" not in help_text else ""
        rows.append(f"| {names} | {value} | {_md_escape(_default(action))} | {_md_escape(help_text)} |")
    return rows if len(rows) > 2 else []


def _describe(parser: argparse.ArgumentParser) -> str:
    import textwrap

    doc = textwrap.dedent(parser.description or "").strip()
    # Module docstrings are reST: double back-quotes render as code in Markdown too, but a
    # literal block ("Example::" and an indented block) becomes a fenced block here.
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines):
            out.append(line.rstrip()[:-1])  # "Example::" -> "Example:"
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block = []
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```text", textwrap.dedent("\n".join(block)), "```", ""]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip()


def _exit_codes(help_text: str, parser: argparse.ArgumentParser) -> str:
    """Exit codes of a subcommand: from its one-line help "(exit ...)" or its run() docstring."""
    m = re.search(r"\(exit ([^)]*)\)", help_text)
    if m:
        return m.group(1) + "."
    run = parser._defaults.get("_run")
    doc = (run.__doc__ or "") if run else ""
    m = re.search(r"Returns\s*\n\s*-+\s*\n\s*int\s*\n(.*?)(?:\n\s*\n|$)", doc, re.DOTALL)
    if m:
        return " ".join(m.group(1).split()).rstrip(".") + "."
    return "`0` success, `1` problems found, `2` usage error."


def render_cli_md() -> str:
    """Render docs/cli.md from ``medmulti.cli.build_parser()``."""
    parser = cli.build_parser()
    out = [_CLI_INTRO, "## Global options", ""]
    out += ["```text", parser.format_usage().strip(), "```", ""]
    out += _options_table(parser)
    out += ["", "`-h`, `--help` on the command and on every subcommand prints its help.", ""]
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out += ["Subcommands (`COMMAND`):", "", "| subcommand | what it does |", "| --- | --- |"]
    helps = {c.dest: c.help for c in sub_action._choices_actions}
    for name in sub_action.choices:
        out.append(f"| [`{name}`](#medmulti-{name}) | {_md_escape(helps.get(name, ''))} |")
    out.append("")
    for path, p in _walk(parser):
        if not path:
            continue
        level = "#" * (len(path) + 1)
        title = "medmulti " + " ".join(path)
        out += [f"{level} `{title}`", ""]
        desc = _describe(p)
        if desc:
            out += [desc, ""]
        elif len(path) > 1:
            parent = dict(_walk(parser))[path[:-1]]
            for a in parent._actions:
                if isinstance(a, argparse._SubParsersAction):
                    for c in a._choices_actions:
                        if c.dest == path[-1] and c.help:
                            out += [c.help[0].upper() + c.help[1:] + ".", ""]
        if len(path) == 1 and "xit code" not in desc:
            out += [f"Exit codes: {_exit_codes(helps.get(path[0]) or '', p)}", ""]
        out += ["```text", p.format_usage().strip().replace("usage: ", ""), "```", ""]
        table = _options_table(p)
        if table:
            out += table + [""]
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                out += [f"`{a.metavar or a.dest}`: one of " + ", ".join(f"`{c}`" for c in a.choices) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--write-cli-md"]:
        CLI_MD.write_text(render_cli_md(), encoding="utf-8")
        print(f"wrote {CLI_MD}")
    else:
        print(render_cli_md())
