"""load_manifest: schema errors name row and column; hostile paths are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medmulti.errors import ManifestError, MissingFileError, UnsafePathError
from medmulti.manifest import load_manifest, resolve_path
from medmulti.manifest.checks import check_row


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_load_resolves_rows(tmp_path, spec, manifest_writer):
    _touch(tmp_path / "data" / "p1" / "ct" / "a.dcm")
    m = manifest_writer(tmp_path / "m.csv", [
        {"patient_id": "p1", "split": "train", "diagnosis": "healthy", "ct": "data/p1/ct"},
        {"patient_id": "p2", "split": "val", "diagnosis": "disease", "ct": "data/p2/ct", "mr": "data\\p2\\mr.nii.gz"},
    ])
    man = load_manifest(m, spec)
    assert len(man) == 2 and [r.patient_id for r in man] == ["p1", "p2"]
    r1, r2 = man.rows
    assert r1.line == 2 and r2.line == 3
    assert r1.sources["ct"] == (tmp_path / "data/p1/ct").resolve()
    assert r1.paths["mr"] is None and r1.sources["mr"] is None
    # backslash separators (Windows-written manifests) are folder separators
    assert r2.sources["mr"] == (tmp_path / "data/p2/mr.nii.gz").resolve()
    assert [r.key for r in man.split("val")] == ["p2"]
    assert man.root == tmp_path.resolve()
    with pytest.raises(ManifestError):
        man.split("validation")


def test_study_rows_and_comments(tmp_path, spec, manifest_writer):
    m = tmp_path / "m.csv"
    m.write_text("# format: 1\n# a comment\npatient_id,study_id,split,diagnosis,ct,x_site\n"
                 "p1,s1,train,healthy,a,north\np1,s2,train,disease,b,south\n")
    man = load_manifest(m, spec)
    assert [r.key for r in man] == ["p1/s1", "p1/s2"]
    assert man.rows[0].line == 4 and man.rows[1].extra == {"x_site": "south"}


@pytest.mark.parametrize(
    "content, row, column",
    [
        ("patient_id,split,diagnosis,ct,age\np1,train,healthy,a,3\n", 1, "age"),
        ("patient_id,split,ct\np1,train,a\n", 1, "diagnosis"),
        ("patient_id,split,diagnosis,mr\np1,train,healthy,a\n", 1, "ct"),
        ("patient_id,split,diagnosis,ct\np1,train,healthy\n", 2, None),
        ("patient_id,split,diagnosis,ct\n,train,healthy,a\n", 2, "patient_id"),
        ("patient_id,split,diagnosis,ct\np1,train,healthy,a\np2,training,healthy,b\n", 3, "split"),
        ("patient_id,split,diagnosis,ct\np1,train,sick,a\n", 2, "diagnosis"),
        ("patient_id,split,diagnosis,ct\np1,train,healthy,\n", 2, "ct"),
        ("patient_id,split,diagnosis,ct,ct_sha256\np1,train,healthy,a,abc\n", 2, "ct"),
        ("patient_id,split,diagnosis,ct\np1,train,healthy,a\np1,val,healthy,b\n", 3, "patient_id"),
    ],
)
def test_schema_errors_name_row_and_column(tmp_path, spec, content, row, column):
    m = tmp_path / "m.csv"
    m.write_text(content)
    with pytest.raises(ManifestError) as ei:
        load_manifest(m, spec)
    assert ei.value.row == row
    assert ei.value.column == column
    assert f"row {row}" in str(ei.value)


def test_structural_errors(tmp_path, spec):
    with pytest.raises(MissingFileError):
        load_manifest(tmp_path / "nope.csv", spec)
    m = tmp_path / "m.csv"
    m.write_text("patient_id,split,diagnosis,ct\n")
    with pytest.raises(ManifestError, match="no rows"):
        load_manifest(m, spec)
    m.write_text("# format: 2\npatient_id,split,diagnosis,ct\np,train,healthy,a\n")
    with pytest.raises(ManifestError, match="format"):
        load_manifest(m, spec)


HOSTILE = [
    "../outside",
    "a/../../outside",
    "/etc/passwd",
    "C:\\data\\ct",
    "c:/data/ct",
    "\\\\server\\share\\ct",
    "//server/share/ct",
    "..\\outside",
    "a\x00b",
    "a/" * 600 + "b",
    "x" * 300,
    "%2e%2e/outside",
    "%2E%2E%2Foutside",
    "a/%2e%2e/%2e%2e/outside",
    "%2fetc/passwd",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_paths_refused(tmp_path, text):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnsafePathError):
        resolve_path(text, root)


def test_symlink_outside_refused_unless_data_root(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "elsewhere" / "ct"
    outside.mkdir(parents=True)
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError, match="symlink"):
        resolve_path("link", root)
    assert resolve_path("link", root, data_root=tmp_path) == outside.resolve()
    # a symlink staying inside the root is fine
    (root / "real").mkdir()
    os.symlink(root / "real", root / "inner")
    assert resolve_path("inner", root) == (root / "real").resolve()


def test_data_root_allows_dotdot_and_absolute_inside_it(tmp_path):
    root = tmp_path / "manifests"
    root.mkdir()
    target = tmp_path / "images" / "p1"
    assert resolve_path("../images/p1", root, data_root=tmp_path) == target.resolve()
    assert resolve_path(str(target), root, data_root=tmp_path) == target.resolve()
    with pytest.raises(UnsafePathError):
        resolve_path("../../x", root, data_root=tmp_path)
    with pytest.raises(UnsafePathError):
        resolve_path("/etc/passwd", root, data_root=tmp_path)
    # inside the root, '..' that stays inside is fine and a '%' in a name is just a character
    assert resolve_path("a/../b", root) == (root / "b").resolve()
    assert resolve_path("scan%201", root) == (root / "scan%201").resolve()


def test_unsafe_path_in_manifest(tmp_path, spec, manifest_writer):
    m = manifest_writer(tmp_path / "m.csv", [
        {"patient_id": "p1", "split": "train", "diagnosis": "healthy", "ct": "../../etc"},
    ])
    with pytest.raises(UnsafePathError) as ei:
        load_manifest(m, spec)
    assert ei.value.row == 2 and ei.value.column == "ct" and ei.value.patient_id == "p1"
    man = load_manifest(m, spec, strict=False)
    row = man.rows[0]
    assert row.sources["ct"] is None and "ct" in row.refused
    checks = {(p.patient_id, p.modality, p.check) for p in check_row(row, spec).problems}
    assert checks == {("p1", "ct", "unsafe_path")}
