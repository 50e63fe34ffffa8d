"""Hostile manifest paths are refused with UnsafePathError, and nothing outside the root is touched.

Each case is a manifest cell that would read a file outside the manifest's folder.
The outside folder holds a real NIfTI file, so a reader that followed the path
would succeed silently. A recorder (an audit hook for ``open``/``os.open``/
``os.listdir``/``os.scandir`` plus wrappers of ``os.stat``/``os.lstat``/
``os.readlink``) proves that loading and validating such manifests never opens,
lists or stats anything in the outside folder.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

import numpy as np
import pytest

from medmulti.errors import UnsafePathError
from medmulti.examples import synth

# -- the cases --------------------------------------------------------------------

OUTSIDE_NAME = "outside"  # sibling of the manifest root
LINKS = {  # symlinks created inside the root (name -> target relative to the tmp folder)
    "link_out.nii": f"{OUTSIDE_NAME}/secret.nii",
    "linkdir": OUTSIDE_NAME,
    "chain1": "root/chain2",
    "chain2": f"{OUTSIDE_NAME}/secret.nii",
}

HOSTILE = {
    "dotdot": "../outside/secret.nii",
    "dotdot_nested": "a/../../outside/secret.nii",
    "dotdot_deep": "a/b/c/../../../../outside/secret.nii",
    "backslash_dotdot": "..\\outside\\secret.nii",
    "absolute_posix": "{outside}/secret.nii",
    "absolute_etc": "/etc/passwd",
    "windows_drive": "C:\\outside\\secret.nii",
    "windows_drive_relative": "C:secret.nii",
    "windows_drive_forward": "c:/outside/secret.nii",
    "unc_backslash": "\\\\server\\share\\secret.nii",
    "unc_forward": "//server/share/secret.nii",
    "nul_byte": "secret.nii\x00.png",
    "overlong_path": "a/" * 600 + "secret.nii",
    "overlong_component": "a" * 300 + "/secret.nii",
    "percent_dotdot": "%2e%2e/outside/secret.nii",
    "percent_dotdot_upper": "%2E%2E%2Foutside%2Fsecret.nii",
    "percent_mixed": "a/..%2f..%2foutside/secret.nii",
    "percent_nul": "secret.nii%00",
    "symlink_file_out": "link_out.nii",
    "symlink_dir_midpath": "linkdir/secret.nii",
    "symlink_chain_out": "chain1",
}


@pytest.fixture
def layout(tmp_path):
    """tmp/root (manifest folder, symlinks) and tmp/outside (a real NIfTI that must stay untouched)."""
    root = tmp_path / "root"
    outside = tmp_path / OUTSIDE_NAME
    root.mkdir()
    outside.mkdir()
    synth.write_nifti(np.zeros((3, 4, 5), np.float32), outside / "secret.nii")
    synth.write_nifti(np.zeros((3, 4, 5), np.float32), root / "inside.nii")
    for name, target in LINKS.items():
        (root / name).symlink_to(tmp_path / target)
    return root, outside


def _cell(kind: str, outside: Path) -> str:
    return HOSTILE[kind].replace("{outside}", str(outside))


def _write(root: Path, cells: list[tuple[str, str]]) -> Path:
    path = root / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "split", "diagnosis", "ct", "mr", "xray"])
        for i, (_, cell) in enumerate(cells):
            w.writerow([f"P{i:03d}", "train", "healthy", "inside.nii", cell, ""])
    return path


def test_at_least_twelve_kinds():
    assert len(HOSTILE) >= 12


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_resolve_path_refuses(layout, kind):
    from medmulti.manifest.load import resolve_path

    root, outside = layout
    with pytest.raises(UnsafePathError):
        resolve_path(_cell(kind, outside), root)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_load_manifest_refuses(layout, kind, small_spec):
    from medmulti.manifest import load_manifest

    root, outside = layout
    manifest = _write(root, [(kind, _cell(kind, outside))])
    with pytest.raises(UnsafePathError) as info:
        load_manifest(manifest, small_spec)
    err = info.value
    assert err.patient_id == "P000" and err.modality == "mr"
    assert "secret" not in (err.hint or "")


def test_safe_paths_still_accepted(layout, small_spec):
    """The guard is not a blanket refusal: in-root paths (also via an in-root symlink) load."""
    from medmulti.manifest import load_manifest

    root, _ = layout
    (root / "sub").mkdir()
    (root / "sub" / "in.nii").symlink_to(root / "inside.nii")
    manifest = _write(root, [("ok", "sub/in.nii"), ("ok2", "sub/../inside.nii"), ("ok3", "./inside.nii")])
    m = load_manifest(manifest, small_spec)
    assert [r.sources["mr"] for r in m.rows] == [Path(os.path.realpath(root / "inside.nii"))] * 3


# -- the recorder ---------------------------------------------------------------------

from fs_recorder import record_fs  # noqa: E402


def _touched_outside(events, outside: Path) -> list[tuple[str, str]]:
    out = str(outside)
    bad = []
    for ev, p in events:
        absolute = os.path.normpath(p)
        if absolute == out or absolute.startswith(out + os.sep) or absolute in ("/etc/passwd",) \
                or "server" in absolute.split(os.sep)[:4]:
            bad.append((ev, p))
    return bad


def _run_all(root, outside, spec, monkeypatch):
    from medmulti.manifest import load_manifest, validate_manifest

    cells = [(k, _cell(k, outside)) for k in sorted(HOSTILE)]
    manifest = _write(root, cells)
    # warm imports so that lazy imports do not pollute the record
    with contextlib.suppress(Exception):
        validate_manifest(manifest, spec, workers=1, progress=False)
    with record_fs(monkeypatch) as events:
        for kind, cell in cells:
            one = _write(root, [(kind, cell)])
            with pytest.raises(UnsafePathError):
                load_manifest(one, spec)
        manifest = _write(root, cells)
        lenient = load_manifest(manifest, spec, strict=False)
        report = validate_manifest(manifest, spec, workers=1, progress=False)
    assert events, "the recorder saw nothing: it is not wired"
    assert any(p.endswith("inside.nii") for _, p in events), "the in-root input was never opened: recorder broken"
    assert all(r.sources["mr"] is None for r in lenient.rows)
    assert all("mr" in r.refused for r in lenient.rows)
    assert not report.ok
    refused = {p.patient_id for p in report.problems if p.modality == "mr"}
    assert refused == {f"P{i:03d}" for i in range(len(cells))}
    return events


def test_nothing_outside_the_root_is_opened_or_listed(layout, small_spec, monkeypatch):
    """Loading (strict and lenient) and validating every hostile manifest opens/lists nothing outside."""
    root, outside = layout
    events = _run_all(root, outside, small_spec, monkeypatch)
    opened = [(ev, p) for ev, p in events if ev in ("open", "os.listdir", "os.scandir")]
    assert _touched_outside(opened, outside) == []


def test_nothing_outside_the_root_is_even_stat_ed(layout, small_spec, monkeypatch):
    """Not even a stat/lstat/readlink of the outside folder (existence is information too)."""
    root, outside = layout
    events = _run_all(root, outside, small_spec, monkeypatch)
    assert _touched_outside(events, outside) == []
