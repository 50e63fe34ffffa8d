"""Hostile specs and manifests (issue 13, items 5, 8, 11, 13, 14).

* 5: YAML alias / merge-key / nesting bombs and oversized spec files are a typed
  ``SpecError`` before anything expands.
* 8: keys that differ only by invisible, control or compatibility characters are one
  patient for every comparison (leakage, duplicate rows, identity checks).
* 11: every number of a spec is finite, of the right type (booleans are not numbers)
  and within its domain and the voxel cap, checked when the spec is loaded.
* 13: the duplicate-column check is linear in the number of columns.
* 14: the manifest is read by the csv module as a file (``newline=""``): U+2028, NEL
  and form feeds are cell content; an over-long cell is a ``ManifestError`` naming
  the line.

The command-line tests run ``medmulti validate`` as users do: a subprocess in a
temporary folder, with a timeout, on a generated sample cohort.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from medmulti_testing.hostile_text import (
    CONTROL_CHARACTERS,
    control_character_manifests,
    leakage_manifests,
    spec_bombs,
)

import medmulti as mm
from medmulti.errors import ManifestError, SpecError
from medmulti.manifest import load_manifest, validate_manifest
from medmulti.manifest.schema import canonical_key
from medmulti.spec import MAX_SPEC_BYTES, StudySpec

CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A real 4-patient sample cohort (CT series, MR NIfTI, X-ray DICOM), no faults."""
    return mm.make_sample_cohort(tmp_path_factory.mktemp("cohort") / "c", n_patients=4, seed=0, faults=False,
                                 progress=False)


@pytest.fixture(scope="module")
def spec_dict(cohort) -> dict:
    return yaml.safe_load(Path(cohort.spec).read_text())


def run_validate(manifest: Path, spec: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``medmulti validate`` as a user runs it."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "medmulti.cli", "validate", str(manifest), "--spec", str(spec), "--workers", "1",
         "--no-progress"],
        cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=CLI_TIMEOUT_S, env=env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


def write_csv(path: Path, rows: list[list[str]], comments: str = "# format: 1\n", terminator: str = "\r\n") -> Path:
    buf = io.StringIO(newline="")
    buf.write(comments)
    csv.writer(buf, lineterminator=terminator).writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return path


def manifest_rows(cohort) -> list[list[str]]:
    text = Path(cohort.manifest).read_text(encoding="utf-8")
    return list(csv.reader(ln for ln in io.StringIO(text, newline="") if not ln.startswith("#")))


# -- 5: spec bombs ----------------------------------------------------------------------------------------------


def _bomb(levels: int, fanout: int = 9) -> str:
    parts = ["&a0 [" + ", ".join(["lol"] * fanout) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def test_small_alias_bomb_is_a_spec_error(tmp_path, spec_dict):
    # 9**6 leaves: the unpatched loader accepted it (and str()-ed it into the spec's name)
    body = {k: v for k, v in spec_dict.items() if k != "name"}
    p = tmp_path / "spec.yaml"
    p.write_text("name: " + _bomb(6) + "\n" + yaml.safe_dump(body))
    with pytest.raises(SpecError, match="alias"):
        StudySpec.from_yaml(p)


@pytest.mark.parametrize("name, text", list(spec_bombs()), ids=lambda v: v if len(v) < 60 else None)
def test_every_spec_bomb_is_refused_quickly(tmp_path, name, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text, encoding="utf-8")
    t0 = time.process_time()
    with pytest.raises(SpecError):
        StudySpec.from_yaml(p)
    assert time.process_time() - t0 < 2.0, name


def test_spec_file_size_is_capped(tmp_path, spec_dict):
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec_dict) + "#" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(SpecError, match="larger than"):
        StudySpec.from_yaml(p)


def test_spec_anchors_and_repeated_keys_are_refused(tmp_path, spec_dict):
    p = tmp_path / "spec.yaml"
    text = yaml.safe_dump(spec_dict, sort_keys=False)
    p.write_text(text.replace("name: medmulti-sample", "name: &n medmulti-sample"))
    with pytest.raises(SpecError, match="anchors"):
        StudySpec.from_yaml(p)
    p.write_text(text + "format: 1\n")
    with pytest.raises(SpecError, match="appears twice") as info:
        StudySpec.from_yaml(p)
    assert info.value.keyword == "format"


def test_plain_specs_still_load(cohort, tmp_path):
    spec = StudySpec.from_yaml(cohort.spec)
    p = tmp_path / "again.yaml"
    spec.to_yaml(p)
    assert StudySpec.from_yaml(p) == spec
    # plain decimal text YAML 1.1 reads as a string is a number
    d = spec.to_dict()
    d["modalities"][0]["shape"] = ["32", "3.2e1", 32]
    assert StudySpec.from_dict(d).modalities[0].shape == (32, 32, 32)


def test_cli_alias_bomb_exits_2_with_one_line(cohort, tmp_path, spec_dict):
    body = {k: v for k, v in spec_dict.items() if k != "name"}
    spec = tmp_path / "bomb.yaml"
    spec.write_text("name: " + _bomb(9) + "\n" + yaml.safe_dump(body))  # 9**9 leaves once expanded
    t0 = time.monotonic()
    proc = run_validate(cohort.manifest, spec, tmp_path)
    assert_one_line_error(proc, 2, "alias")
    assert time.monotonic() - t0 < 60


# -- 11: numbers in the spec -----------------------------------------------------------------------------------

BAD_VALUES = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "nan_text": "nan",
    "inf_text": "Infinity",
    "true": True,
    "false": False,
    "none_list": [None],
    "beyond_float": 10**400,
}

FIELDS = {  # where -> (modality index, key path)
    "ct.spacing_mm": (0, ("spacing_mm", 1)),
    "ct.shape": (0, ("shape", 0)),
    "ct.window_center": (0, ("intensity", "windows", 0, 0)),
    "ct.window_width": (0, ("intensity", "windows", 1, 1)),
    "mr.clip": (1, ("intensity", "clip", 0)),
    "mr.percentiles": (1, ("intensity", "percentiles", 1)),
    "xray.shape": (2, ("shape", 1)),
    "xray.percentiles": (2, ("intensity", "percentiles", 0)),
}


def _set(spec_dict: dict, where: tuple, value) -> dict:
    import copy

    d = copy.deepcopy(spec_dict)
    index, keys = where
    node = d["modalities"][index]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return d


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
@pytest.mark.parametrize("field", FIELDS)
def test_every_spec_number_is_checked(spec_dict, field, value):
    data = _set(spec_dict, FIELDS[field], value)
    with pytest.raises(SpecError) as info:
        StudySpec.from_dict(data)
    assert info.value.keyword == FIELDS[field][1][0 if FIELDS[field][1][0] != "intensity" else 1]


@pytest.mark.parametrize("field, value, keyword", [
    ("ct", {"shape": [1_000_000_000] * 3}, "shape"),
    ("ct", {"shape": ["1e9", "1e9", "1e9"]}, "shape"),
    ("ct", {"shape": [1024, 1024, 1024]}, "shape"),        # 2**30 voxels x 2 windows: over the 2**29 cap
    ("ct", {"shape": [True, 32, 32]}, "shape"),
    ("ct", {"shape": [32.5, 32, 32]}, "shape"),
    ("ct", {"spacing_mm": [0.0, 1.0, 1.0]}, "spacing_mm"),
    ("ct", {"spacing_mm": [1e-300, 1.0, 1.0]}, "spacing_mm"),
    ("ct", {"spacing_mm": 1e300}, "spacing_mm"),
    ("ct", {"dims": True}, "dims"),
    ("ct", {"intensity": {"windows": [[40, 0]]}}, "windows"),
    ("ct", {"intensity": {"windows": [[40, -80]]}}, "windows"),
    ("ct", {"intensity": {"windows": [[40, 80, 1]]}}, "windows"),
    ("mr", {"intensity": {"clip": [10, -5]}}, "clip"),
    ("mr", {"intensity": {"clip": [1, 1]}}, "clip"),
    ("mr", {"intensity": {"clip": "0,1"}}, "clip"),
    ("mr", {"intensity": {"percentiles": [1, 101]}}, "percentiles"),
    ("mr", {"intensity": {"percentiles": [99, 1]}}, "percentiles"),
    ("mr", {"intensity": {"n4": "yes"}}, "n4"),
    ("mr", {"intensity": {"zscore_foreground": 0}}, "zscore_foreground"),
    ("xray", {"intensity": {"clahe": 1}}, "clahe"),
])
def test_spec_values_are_in_their_domain(spec_dict, field, value, keyword):
    import copy

    d = copy.deepcopy(spec_dict)
    mod = next(m for m in d["modalities"] if m["name"] == field)
    for k, v in value.items():
        if k == "intensity":
            mod["intensity"] = {**mod.get("intensity", {}), **v}
        else:
            mod[k] = v
    with pytest.raises(SpecError) as info:
        StudySpec.from_dict(d)
    assert info.value.keyword == keyword


def test_spec_format_true_is_not_1(spec_dict):
    with pytest.raises(SpecError) as info:
        StudySpec.from_dict({**spec_dict, "format": True})
    assert info.value.keyword == "format"


@pytest.mark.parametrize("patch, words", [
    ("spacing_mm:\n  - 6.0\n  - 6.0\n  - 6.0", "spacing_mm:\n  - .nan\n  - .nan\n  - .nan"),
    ("shape:\n  - 32\n  - 32\n  - 32", "shape:\n  - 1000000000\n  - 1000000000\n  - 1000000000"),
    ("shape:\n  - 32\n  - 32\n  - 32", "shape:\n  - true\n  - 32\n  - 32"),
    ("    - -5.0\n    - 10.0", "    - .inf\n    - 10.0"),
], ids=["nan_spacing", "huge_shape", "bool_shape", "inf_clip"])
def test_cli_bad_spec_numbers_exit_2(cohort, tmp_path, patch, words):
    text = Path(cohort.spec).read_text()
    assert patch in text
    spec = tmp_path / "spec.yaml"
    spec.write_text(text.replace(patch, words, 1))
    proc = run_validate(cohort.manifest, spec, tmp_path)
    assert_one_line_error(proc, 2, "spec")


# -- 8: invisible characters in keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTROL_CHARACTERS)
def test_canonical_key_removes_every_hostile_character(name):
    ch = CONTROL_CHARACTERS[name]
    assert canonical_key("SYN" + ch + "0001") == "SYN0001"
    assert canonical_key(ch + "SYN0001" + ch) == "SYN0001"


def test_canonical_key_nfkc_and_case():
    assert canonical_key("\uff33\uff39\uff2e\uff10\uff10\uff10\uff11") == "SYN0001"  # full-width
    assert canonical_key("SYN0001\u00a0") == "SYN0001"
    assert canonical_key("e\u200b\u0301") == "\u00e9"  # the combining accent composes once the ZWSP is gone
    assert canonical_key("syn0001") != canonical_key("SYN0001")
    assert canonical_key("\u200b\u2060\ufeff") == ""


def test_disguised_key_in_another_split_is_leakage(cohort):
    spec = StudySpec.from_yaml(cohort.spec)
    for name, pid, path in leakage_manifests(cohort.manifest):
        man = load_manifest(path, spec, strict=False)
        assert [r.patient_id for r in man.rows].count(pid) == 2, name
        report = validate_manifest(path, spec, workers=1, progress=False)
        found = {p.check for p in report.problems if p.patient_id == pid}
        assert {"patient_in_two_splits", "key_normalised"} <= found, (name, found)


def test_disguised_key_in_the_same_split_is_a_duplicate_row(cohort, tmp_path):
    rows = manifest_rows(cohort)
    twin = list(rows[1])
    twin[0] = twin[0] + "\u200b"
    path = write_csv(Path(cohort.manifest).parent / ".dup.csv", rows + [twin])
    spec = StudySpec.from_yaml(cohort.spec)
    with pytest.raises(ManifestError, match="also on line"):
        load_manifest(path, spec)
    report = validate_manifest(path, spec, workers=1, progress=False)
    assert any(p.check == "duplicate_row" and p.patient_id == rows[1][0] for p in report.problems)


def test_key_of_invisible_characters_only_is_empty(cohort):
    rows = manifest_rows(cohort)
    rows[2][0] = "\u200b\u200d\ufeff"
    path = write_csv(Path(cohort.manifest).parent / ".empty.csv", rows)
    with pytest.raises(ManifestError, match="patient_id is empty") as info:
        load_manifest(path, StudySpec.from_yaml(cohort.spec), strict=False)
    assert info.value.row == 4  # the format line, the header, then rows


def test_cli_disguised_leak_is_found(cohort, tmp_path):
    name, pid, path = next(iter(leakage_manifests(cohort.manifest, characters={"ZWSP": "\u200b"})))
    proc = run_validate(path, cohort.spec, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert any("patient_in_two_splits" in ln and pid in ln for ln in proc.stdout.splitlines()), proc.stdout


def test_control_characters_in_every_field_end_typed(cohort):
    spec = StudySpec.from_yaml(cohort.spec)
    for label, path in control_character_manifests(cohort.manifest):
        for strict in (False, True):
            try:
                load_manifest(path, spec, strict=strict)
            except (ManifestError, SpecError):
                pass


# -- 13: many columns ------------------------------------------------------------------------------------------


def test_sixty_thousand_columns_load_in_linear_time(cohort):
    rows = manifest_rows(cohort)
    n = 60_000
    wide = [rows[0] + [f"x_{i}" for i in range(n)]] + [r + [""] * n for r in rows[1:]]
    path = write_csv(Path(cohort.manifest).parent / ".wide.csv", wide)
    spec = StudySpec.from_yaml(cohort.spec)
    t0 = time.process_time()
    man = load_manifest(path, spec)
    assert time.process_time() - t0 < 10  # was 57 s (header.count in a loop)
    assert len(man.rows) == len(rows) - 1 and len(man.rows[0].extra) == n
    wide[0][-1] = "x_7"
    write_csv(path, wide)
    t0 = time.process_time()
    with pytest.raises(ManifestError, match="twice") as info:
        load_manifest(path, spec)
    assert time.process_time() - t0 < 10
    assert info.value.column == "x_7"


# -- 14: CSV as the csv module reads it ------------------------------------------------------------------------


def test_over_long_cell_is_a_manifest_error_naming_the_line(cohort):
    rows = manifest_rows(cohort)
    head = rows[0] + ["x_note"]
    body = [r + [""] for r in rows[1:]]
    body[2][-1] = "a" * 200_000
    path = write_csv(Path(cohort.manifest).parent / ".long.csv", [head] + body)
    with pytest.raises(ManifestError, match="131,072") as info:
        load_manifest(path, StudySpec.from_yaml(cohort.spec))
    assert info.value.row == 5  # format line, header, two rows, then this one


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"],
                         ids=["LS", "PS", "NEL", "FF", "VT", "FS", "GS", "RS"])
@pytest.mark.parametrize("quoted", [False, True])
def test_unicode_line_breaks_are_cell_content(cohort, sep, quoted):
    rows = manifest_rows(cohort)
    head = rows[0] + ["x_note"]
    body = [r + [f"a{sep}b"] for r in rows[1:]]
    text = "# format: 1\n" + ",".join(head) + "\n"
    for r in body:
        cells = [f'"{c}"' if quoted else c for c in r]
        text += ",".join(cells) + "\n"
    path = Path(cohort.manifest).parent / ".seps.csv"
    path.write_text(text, encoding="utf-8", newline="")
    man = load_manifest(path, StudySpec.from_yaml(cohort.spec))
    assert [r.line for r in man.rows] == list(range(3, 3 + len(body)))
    assert all(r.extra["x_note"] == f"a{sep}b" for r in man.rows)


@pytest.mark.parametrize("terminator", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_existing_csv_behaviour_is_kept(cohort, terminator):
    rows = manifest_rows(cohort)
    head = rows[0] + ["x_note"]
    body = [r + [""] for r in rows[1:]]
    body[0][-1] = "two\nlines, a comma and \"quotes\""
    comments = "\ufeff# a comment, with \"quotes\"" + terminator + "# format: 1" + terminator
    path = write_csv(Path(cohort.manifest).parent / ".kept.csv", [head, body[0], [""] * len(head), *body[1:]],
                     comments=comments, terminator=terminator)
    man = load_manifest(path, StudySpec.from_yaml(cohort.spec))
    assert man.rows[0].extra["x_note"].startswith("two") and "quotes" in man.rows[0].extra["x_note"]
    # two comment lines and the header; row 1 spans lines 4-5 (a row is numbered by its last line, as
    # before); the blank line 6 is skipped but counted
    assert [r.line for r in man.rows] == [5, 7, 8, 9]
    assert [r.patient_id for r in man.rows] == [r[0] for r in rows[1:]]


def test_cli_over_long_cell_exits_2_with_one_line(cohort, tmp_path):
    rows = manifest_rows(cohort)
    rows[0].append("x_note")
    for r in rows[1:]:
        r.append("b" * 140_000)
    path = write_csv(Path(cohort.manifest).parent / ".long-cli.csv", rows)
    proc = run_validate(path, cohort.spec, tmp_path)
    line = assert_one_line_error(proc, 2, "131,072")
    assert "row 3" in line or "line 3" in line, line
