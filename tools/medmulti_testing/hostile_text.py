"""Hostile text for the two files a user writes: spec bombs and control characters in manifests.

* :func:`spec_bombs` - YAML specs that must each be refused with
  :class:`~medmulti.errors.SpecError` quickly and in little memory: alias
  ("billion laughs") and merge-key bombs, deep nesting, an oversized file, repeated
  keys, and NaN / infinity / booleans / absurd sizes in every number of the spec.
* :func:`control_character_manifests` - copies of a manifest with one control,
  format or invisible character put into one field (every column, the header too).
  Loading or validating each must end in a report or a typed error, never an
  untyped exception.
* :func:`leakage_manifests` - copies of a manifest where one patient also appears
  in another split under a key that differs only by an invisible character; the
  leakage check must still find it.

Nothing here is imported by ``import medmulti``.
"""

from __future__ import annotations

import copy
import csv
import io
from os import PathLike
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "CONTROL_CHARACTERS",
    "BAD_NUMBERS",
    "NUMBER_FIELDS",
    "spec_bombs",
    "control_character_manifests",
    "leakage_manifests",
]

#: Characters that must never change what a manifest means (name -> character).
CONTROL_CHARACTERS: dict[str, str] = {
    "NUL": "\x00",
    "BEL": "\x07",
    "TAB": "\t",
    "LF": "\n",
    "VT": "\x0b",
    "FF": "\x0c",
    "CR": "\r",
    "ESC": "\x1b",
    "DEL": "\x7f",
    "NEL": "\x85",
    "CSI": "\x9b",
    "SHY": "\u00ad",
    "ZWSP": "\u200b",
    "ZWJ": "\u200d",
    "LRM": "\u200e",
    "LS": "\u2028",
    "PS": "\u2029",
    "RLO": "\u202e",
    "WJ": "\u2060",
    "VS16": "\ufe0f",
    "BOM": "\ufeff",
}

#: Values no number of a spec may take (YAML text -> what it is).
BAD_NUMBERS: dict[str, str] = {
    ".nan": "NaN",
    ".inf": "infinity",
    "-.inf": "minus infinity",
    "nan": "NaN as text",
    "inf": "infinity as text",
    "true": "a boolean",
    "1" + "0" * 400: "an integer beyond float range",
    "1.0e309": "a float that overflows to infinity",
    "[1, 2]": "a list in place of a number",
}

#: Where the numbers of a spec live: (modality kind, key path inside the modality).
NUMBER_FIELDS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("ct", ("spacing_mm", 0)),
    ("ct", ("shape", 0)),
    ("ct", ("intensity", "windows", 0, 0)),
    ("ct", ("intensity", "windows", 0, 1)),
    ("ct", ("intensity", "clip", 0)),
    ("mr", ("intensity", "clip", 1)),
    ("mr", ("intensity", "percentiles", 0)),
    ("xray", ("shape", 1)),
    ("xray", ("intensity", "percentiles", 1)),
    ("ct", ("dims",)),
)

_BASE_SPEC: dict[str, Any] = {
    "format": 1,
    "name": "bombs",
    "labels": {"column": "diagnosis", "classes": ["healthy", "disease"]},
    "modalities": [
        {"name": "ct", "kind": "ct", "spacing_mm": [2.0, 2.0, 2.0], "shape": [16, 16, 16],
         "intensity": {"windows": [[40.0, 80.0]], "clip": [0.0, 1.0]}},
        {"name": "mr", "kind": "mr", "required": False,
         "intensity": {"method": "percentile", "percentiles": [1.0, 99.0], "clip": [-5.0, 10.0]}},
        {"name": "xray", "kind": "xray", "shape": [32, 32], "required": False,
         "intensity": {"percentiles": [1.0, 99.0]}},
    ],
}

_MARK = "__MEDMULTI_BAD_NUMBER__"


def _dump(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)


def _alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    """``[&a0 [lol, ...], &a1 [*a0, ...], ...]``: fanout**levels leaves from a few hundred bytes."""
    parts = ["&a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "[" + ", ".join(parts) + "]"


def spec_bombs(base: Mapping[str, Any] | None = None, *, quick: bool = False) -> Iterator[tuple[str, str]]:
    """Yield hostile spec documents, each of which must be refused with SpecError.

    Parameters
    ----------
    base : Mapping, optional
        A valid spec as a plain dict (default: a CT + MR + X-ray spec). Its first
        modality of each kind is where the bad numbers go.
    quick : bool
        Only one bad value per number field (a smoke test).

    Returns
    -------
    iterator of (str, str)
        ``(name, YAML text)``. Names are ``structure/<what>`` or
        ``number/<kind>.<key path>=<value>``.
    """
    from medmulti.spec import MAX_SPEC_BYTES, MAX_SPEC_DEPTH

    spec = copy.deepcopy(dict(base if base is not None else _BASE_SPEC))
    valid = _dump(spec)
    body = {k: v for k, v in spec.items() if k != "name"}
    yield "structure/alias_bomb_in_name", "name: " + _alias_bomb() + "\n" + _dump(body)
    yield "structure/alias_bomb_in_classes", valid.replace("name:", "x_ignored: " + _alias_bomb() + "\nname:", 1)
    yield "structure/one_alias", ("name: &n bombs\n" + _dump({k: v for k, v in body.items() if k != "labels"})
                                  + "labels: {column: *n, classes: [healthy, disease]}\n")
    mods = spec["modalities"]
    merge = ("format: 1\nname: merge\nlabels: {column: diagnosis, classes: [healthy, disease]}\n"
             f"x_base: &base {_flow(mods[0])}\nmodalities:\n  - <<: *base\n    name: ct2\n")
    yield "structure/merge_key", merge
    yield "structure/deep_nesting", "name: " + "[" * 50_000 + "]" * 50_000 + "\n" + _dump(body)
    yield "structure/nesting_past_cap", "name: " + "[" * (MAX_SPEC_DEPTH + 1) + "]" * (MAX_SPEC_DEPTH + 1) + "\n" \
        + _dump(body)
    yield "structure/oversize", valid + "#" * (MAX_SPEC_BYTES + 1) + "\n"
    yield "structure/repeated_key", valid + "name: again\n"
    yield "structure/huge_shape", _with(spec, "ct", ("shape",), [1_000_000_000] * 3)
    yield "structure/huge_shape_text", _with(spec, "ct", ("shape",), ["1e9"] * 3)
    yield "structure/bool_in_shape", _with(spec, "ct", ("shape",), [True, 32, 32])
    yield "structure/zero_width_window", _with(spec, "ct", ("intensity", "windows"), [[40.0, 0.0]])
    yield "structure/reversed_clip", _with(spec, "mr", ("intensity", "clip"), [10.0, -5.0])
    yield "structure/tiny_spacing", _with(spec, "ct", ("spacing_mm",), [1e-300, 1.0, 1.0])
    values = list(BAD_NUMBERS)[:1] if quick else list(BAD_NUMBERS)
    for kind, keys in NUMBER_FIELDS:
        for value in values:
            text = _with(spec, kind, keys, _MARK).replace(_MARK, value)
            yield f"number/{kind}.{'.'.join(map(str, keys))}={value[:12]}", text


def _flow(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def _with(spec: Mapping[str, Any], kind: str, keys: tuple[Any, ...], value: Any) -> str:
    """The spec as YAML with ``value`` at ``keys`` inside its first modality of ``kind``."""
    data = copy.deepcopy(dict(spec))
    target = next(m for m in data["modalities"] if m["kind"] == kind)
    node = target
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return _dump(data)


def _read(manifest: Path) -> tuple[list[str], list[list[str]]]:
    text = manifest.read_text(encoding="utf-8-sig")
    lines = io.StringIO(text, newline="")
    comments = []
    rest = []
    for line in lines:
        if line.startswith("#") and not rest:
            comments.append(line)
        else:
            rest.append(line)
    return comments, list(csv.reader(rest))


def _write(path: Path, comments: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO(newline="")
    buf.write("".join(comments))
    csv.writer(buf, lineterminator="\r\n").writerows(rows)  # quotes a cell holding \r or \n
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return path


def control_character_manifests(
    manifest: str | PathLike[str],
    *,
    characters: Mapping[str, str] | None = None,
    header: bool = True,
) -> Iterator[tuple[str, Path]]:
    """Write copies of a manifest with one hostile character in one field.

    Each copy lies next to ``manifest`` (so its relative paths still resolve) and
    holds one character of ``characters`` in the middle of one cell of the first
    data row, for every column; with ``header`` also in each column name.

    Parameters
    ----------
    manifest : str or PathLike
        A valid manifest CSV.
    characters : Mapping, optional
        Name -> character (default :data:`CONTROL_CHARACTERS`).
    header : bool
        Also put each character into each header cell.

    Returns
    -------
    iterator of (str, pathlib.Path)
        ``("<column>/<character name>", path)``; header copies are named
        ``"header:<column>/<character name>"``. Each file is overwritten by the
        next call with the same name.
    """
    src = Path(manifest)
    chars = dict(CONTROL_CHARACTERS if characters is None else characters)
    comments, rows = _read(src)
    head = rows[0]
    for ci, column in enumerate(head):
        for name, ch in chars.items():
            for where in (("row",) + (("header",) if header else ())):
                new = copy.deepcopy(rows)
                r = 0 if where == "header" else 1
                cell = new[r][ci]
                new[r][ci] = cell[: len(cell) // 2] + ch + cell[len(cell) // 2:]
                label = f"{'header:' if where == 'header' else ''}{column}/{name}"
                out = src.parent / f".hostile-{ci}-{name}-{where}.csv"
                yield label, _write(out, comments, new)


def leakage_manifests(
    manifest: str | PathLike[str],
    *,
    characters: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, str, Path]]:
    """Write copies of a manifest in which one patient leaks into another split under a disguised key.

    The first data row is repeated with its ``split`` changed (``train`` <-> ``test``)
    and one character of ``characters`` put into its ``patient_id``.

    Parameters
    ----------
    manifest : str or PathLike
        A valid manifest CSV with ``patient_id`` and ``split`` columns.
    characters : Mapping, optional
        Name -> character (default :data:`CONTROL_CHARACTERS`).

    Returns
    -------
    iterator of (str, str, pathlib.Path)
        ``(character name, leaking patient_id as in the first row, path)``.
    """
    src = Path(manifest)
    chars = dict(CONTROL_CHARACTERS if characters is None else characters)
    comments, rows = _read(src)
    head = rows[0]
    pi, si = head.index("patient_id"), head.index("split")
    first = rows[1]
    for name, ch in chars.items():
        twin = list(first)
        pid = first[pi]
        twin[pi] = pid[: len(pid) // 2] + ch + pid[len(pid) // 2:]
        twin[si] = "test" if first[si] != "test" else "train"
        out = src.parent / f".leak-{name}.csv"
        yield name, pid, _write(out, comments, rows + [twin])
