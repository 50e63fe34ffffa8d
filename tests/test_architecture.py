"""The package's import graph keeps the layering of ``docs/dev/architecture.md``.

Every module of ``medmulti`` is parsed (``ast``, nothing is imported) and its
imports of medmulti's own modules are checked:

- no edge from a stage to a stage of the same or a later layer (imports point
  down the flow; the CLI, last, may import everything);
- no import cycle between modules at module level (including the package
  ``__init__`` files an import runs on its way);
- no function-local import of medmulti's own modules outside ``medmulti/cli/``
  (only heavy third-party libraries are imported lazily).

The layer table below is the one of ``docs/dev/architecture.md``: a test checks
that they agree, and that the document lists every module and the stage
dependencies of today. The checker itself is exercised on synthetic sources, so a
broken rule shows here and not only on a future tree.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medmulti"
ARCHITECTURE_MD = ROOT / "docs" / "dev" / "architecture.md"

#: Layers, first to last: a stage imports only stages of earlier layers (and itself).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("foundations",),
    ("io",),
    ("geometry", "intensity"),
    ("study",),
    ("manifest",),
    ("scanning",),
    ("data",),
    ("models",),
    ("training",),
    ("examples",),
    ("cli",),
)
#: The root modules that form the foundations stage (the package face ``medmulti/__init__.py`` with them).
FOUNDATIONS = ("errors", "text", "limits", "_version", "image", "spec", "_processes", "executor")
#: Root modules that belong to a later stage: ``python -m medmulti`` is the CLI.
ROOT_STAGES = {"__main__": "cli"}
#: Where function-local imports of medmulti's own modules are allowed (lazy subcommands).
LAZY_ALLOWED = ("medmulti.cli",)

LAYER_OF = {stage: i for i, layer in enumerate(LAYERS) for stage in layer}


# -- the checker ---------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """One import of a medmulti module: where it is and what it loads."""

    source: str  # importing module, e.g. "medmulti.io.reader"
    target: str  # imported module, e.g. "medmulti.io.source_ref"
    line: int
    where: str  # "module", "function" or "type_checking"

    def __str__(self) -> str:
        return f"{self.source}:{self.line} -> {self.target} ({self.where})"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The medmulti modules an import statement loads (``from a import b``: ``a.b`` when it is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        names = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
    return [n for n in dict.fromkeys(names) if n == "medmulti" or n.startswith("medmulti.")]


def module_edges(module: str, source: str, is_package: bool, modules: set[str]) -> list[Edge]:
    """Every import of a medmulti module in ``source``, with where it sits."""
    out: list[Edge] = []

    def visit(nodes: list[ast.stmt] | list[ast.AST], where: str) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.body, "type_checking")
                visit(node.orelse, where)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.extend(Edge(module, t, node.lineno, where) for t in _targets(node, module, is_package, modules))
                continue
            inner = "function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else where
            if where == "type_checking":
                inner = where
            visit(list(ast.iter_child_nodes(node)), inner)

    visit(ast.parse(source).body, "module")
    return out


def graph(sources: dict[str, tuple[str, bool]]) -> list[Edge]:
    """Edges of a tree given as ``{module: (source, is_package)}``."""
    modules = set(sources)
    return [e for m, (src, pkg) in sorted(sources.items()) for e in module_edges(m, src, pkg, modules)]


def package_sources(package: Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
            for p in sorted(package.rglob("*.py"))}


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "foundations"  # the package face: foundations only, the rest on first access
    if len(parts) == 2 and parts[1] in FOUNDATIONS:
        return "foundations"
    if len(parts) == 2 and parts[1] in ROOT_STAGES:
        return ROOT_STAGES[parts[1]]
    return parts[1]


def layering_violations(edges: list[Edge]) -> list[str]:
    """Edges to a stage of the same or a later layer (TYPE_CHECKING and lazy imports included)."""
    out = []
    for e in edges:
        a, b = stage_of(e.source), stage_of(e.target)
        if a == b:
            continue
        if a not in LAYER_OF or b not in LAYER_OF:
            out.append(f"{e}: stage {a if a not in LAYER_OF else b!r} is in no layer")
        elif LAYER_OF[b] >= LAYER_OF[a]:
            kind = "upward" if LAYER_OF[b] > LAYER_OF[a] else "sideways (same layer)"
            out.append(f"{e}: {kind}, {a} (layer {LAYER_OF[a]}) imports {b} (layer {LAYER_OF[b]})")
    return out


def _runtime_edges(edges: list[Edge], modules: set[str]) -> dict[str, set[str]]:
    """Module-level edges, plus the package ``__init__`` files each import runs first.

    ``import medmulti.a.b`` from ``medmulti.x`` also executes ``medmulti/a/__init__.py``;
    packages the importer lives in are already being initialised and add no edge.
    """
    out: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.where != "module":
            continue
        parts = e.target.split(".")
        for i in range(2, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in modules and target != e.source and not e.source.startswith(target + "."):
                out[e.source].add(target)
    return out


def import_cycles(edges: list[Edge], modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    adj = _runtime_edges(edges, modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(adj):
        if v not in index:
            connect(v)
    return sorted(found)


def local_imports(edges: list[Edge]) -> list[str]:
    """Function-local imports of medmulti modules outside the lazy CLI."""
    return [str(e) for e in edges if e.where == "function"
            and not any(e.source == p or e.source.startswith(p + ".") for p in LAZY_ALLOWED)]


# -- the tree ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> tuple[list[Edge], set[str]]:
    sources = package_sources()
    return graph(sources), set(sources)


def test_every_module_belongs_to_a_layer(tree):
    _, modules = tree
    assert sorted(m for m in modules if stage_of(m) not in LAYER_OF) == []


def test_imports_point_down_the_layers(tree):
    edges, _ = tree
    assert layering_violations(edges) == []


def test_no_import_cycle_between_modules(tree):
    edges, modules = tree
    assert import_cycles(edges, modules) == []


def test_no_function_local_import_of_medmulti_modules_outside_the_cli(tree):
    edges, _ = tree
    assert local_imports(edges) == []


def private_imports(package: Path) -> list[str]:
    """``module:line name`` for each import of another medmulti module's private name
    (a leading underscore); modules themselves (``_version``, ``_processes``) are fine."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not (node.level or (node.module or "").startswith("medmulti")):
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__") and not (package / f"{name}.py").exists():
                    sub = (path.parent / f"{name}.py").exists() or (path.parent / name).is_dir()
                    if not sub:
                        found.append(f"{path.relative_to(package.parent)}:{node.lineno} {name}")
    return found


def test_no_module_imports_another_modules_private_helpers():
    # shared helpers get public names in the right layer (issue 14)
    assert private_imports(ROOT / "medmulti") == []


def test_the_private_import_check_catches_one(tmp_path):
    pkg = tmp_path / "medmulti"
    pkg.mkdir()
    (pkg / "a.py").write_text("def _helper():\n    return 1\n")
    (pkg / "b.py").write_text("from .a import _helper\n")
    assert private_imports(pkg) == ["medmulti/b.py:1 _helper"]


# -- the document agrees -------------------------------------------------------


def _doc_section(title: str) -> str:
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/dev/architecture.md has no '## {title}' section"
    return match.group(1)


def _doc_layers() -> list[tuple[int, tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    """Rows of the layer table: (layer, stages, modules in backticks, stages imported today)."""
    rows = []
    for line in _doc_section("Layers").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].isdigit():
            names = tuple(re.findall(r"[\w.]+", cells[1]))
            modules = tuple(re.findall(r"`([^`]+)`", cells[2]))
            today = tuple(sorted(re.findall(r"[a-z_]+", cells[3])))
            rows.append((int(cells[0]), names, modules, today))
    return rows


def test_the_document_has_the_layer_table_of_this_test():
    rows = _doc_layers()
    assert [(n, names) for n, names, _, _ in rows] == list(enumerate(LAYERS))
    assert set(rows[0][2]) == {f"{m}.py" for m in FOUNDATIONS} | {"__init__.py"}


def test_the_document_lists_the_stage_dependencies_of_today(tree):
    edges, _ = tree
    today: dict[str, set[str]] = {s: set() for layer in LAYERS for s in layer}
    for e in edges:
        a, b = stage_of(e.source), stage_of(e.target)
        if a != b and a in today:
            today[a].add(b)
    documented = {name: set(deps) - {"none"} for _, names, _, deps in _doc_layers() for name in names}
    assert documented == today


def _doc_tree() -> set[str]:
    """Module paths of the tree in the '## The tree' code block (two spaces per level)."""
    block = re.search(r"```\w*\n(.*?)```", _doc_section("The tree"), re.DOTALL)
    assert block, "the tree section has no code block"
    paths: set[str] = set()
    folders: list[str] = []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py"):
            paths.add("/".join([*folders, name]))
    return paths


def test_the_document_lists_every_module():
    actual = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    documented = _doc_tree()
    assert sorted(actual - documented) == [], "modules missing from docs/dev/architecture.md"
    assert sorted(documented - actual) == [], "docs/dev/architecture.md lists modules that do not exist"


# -- the checker catches what it should (synthetic trees) ----------------------


def _edges(tree: dict[str, str]) -> tuple[list[Edge], set[str]]:
    """Edges of a synthetic tree ``{path relative to the repository: source}``."""
    sources = {module_name(Path(p), Path(".")): (src, p.endswith("__init__.py")) for p, src in tree.items()}
    return graph(sources), set(sources)


BASE = {
    "medmulti/__init__.py": "from .errors import MedmultiError\n",
    "medmulti/errors.py": "class MedmultiError(Exception): ...\n",
    "medmulti/io/__init__.py": "from .reader import read_image\n",
    "medmulti/io/reader.py": "from ..errors import MedmultiError\n",
    "medmulti/geometry/__init__.py": "",
    "medmulti/intensity/__init__.py": "",
    "medmulti/manifest/__init__.py": "",
    "medmulti/manifest/checks.py": "from ..io import read_image\n",
    "medmulti/data/__init__.py": "",
    "medmulti/data/sequence.py": "import keras\nfrom ..manifest import checks\n",
    "medmulti/training/__init__.py": "",
    "medmulti/training/fit.py": "from ..data.sequence import x\n",
    "medmulti/cli/__init__.py": "",
    "medmulti/cli/train.py": "def run(args):\n    from ..training import fit\n",
}


def test_the_synthetic_base_tree_is_clean():
    edges, modules = _edges(BASE)
    assert layering_violations(edges) == [] and import_cycles(edges, modules) == [] and local_imports(edges) == []
    assert Edge("medmulti.data.sequence", "medmulti.manifest.checks", 2, "module") in edges


@pytest.mark.parametrize(("path", "source", "rule"), [
    # upward, at module level, inside a function, or only for the type checker
    ("medmulti/io/reader.py", "from ..training.fit import train\n", "layering"),
    ("medmulti/io/reader.py", "import medmulti.data.sequence\n", "layering"),
    ("medmulti/io/reader.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..manifest import checks\n",
     "layering"),
    ("medmulti/errors.py", "def f():\n    from medmulti.io import reader\n", "layering"),
    # sideways: geometry and intensity share a layer and do not import each other
    ("medmulti/geometry/resample.py", "from ..intensity import windows\n", "layering"),
    # a stage the table does not know
    ("medmulti/newstage/thing.py", "from ..errors import MedmultiError\n", "layering"),
    # a cycle: directly, or through the package __init__ an import runs
    ("medmulti/io/reader.py", "from ..errors import MedmultiError\nfrom . import detect\n", "cycle"),
    ("medmulti/errors.py", "from .io.reader import read_image\n", "cycle"),
    # function-local imports of our own modules, outside the CLI
    ("medmulti/manifest/report.py", "def render():\n    from ..io import read_image\n", "local"),
    ("medmulti/data/cache.py", "class Cache:\n    def load(self):\n        from . import sequence\n", "local"),
    ("medmulti/training/fit.py", "async def f():\n    import medmulti.models\n", "local"),
])
def test_the_checker_catches(path, source, rule):
    tree = dict(BASE, **{path: source})
    if rule == "cycle" and path.endswith("reader.py"):
        tree["medmulti/io/detect.py"] = "from .reader import read_image\n"
    edges, modules = _edges(tree)
    found = {
        "layering": layering_violations(edges),
        "cycle": import_cycles(edges, modules),
        "local": local_imports(edges),
    }
    assert found[rule], f"{rule} not caught in {path}: {source!r}"


@pytest.mark.parametrize(("path", "source"), [
    ("medmulti/cli/train.py", "def run(args):\n    from ..training import fit\n    from ..io import read_image\n"),
    ("medmulti/data/sequence.py", "def f():\n    import tensorflow as tf\n    from scipy import ndimage\n"),
    ("medmulti/data/sequence.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..io import reader\n"),
    ("medmulti/training/fit.py", "from ..data.sequence import x\ndef f():\n    from tqdm.auto import tqdm\n"),
    ("medmulti/io/reader.py", "from ..errors import MedmultiError\ndef f():\n    import numpy\n"),
])
def test_the_checker_allows(path, source):
    edges, modules = _edges(dict(BASE, **{path: source}))
    assert layering_violations(edges) == [] and import_cycles(edges, modules) == [] and local_imports(edges) == []
