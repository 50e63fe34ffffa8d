"""``medmulti demo --files-only``: reads the bundled real files and prints a table."""

from __future__ import annotations

import numpy as np

from medmulti.cli import main
from medmulti.examples.synth import affine_from_geometry
from medmulti.geometry.orientation import orientation_code


def test_demo_reads_every_bundled_source(capsys):
    assert main(["demo", "--files-only"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["source", "modality"]
    assert len(out) == 11 and not any(" error " in line for line in out)
    assert any(line.startswith("CR radiograph") and " - " in line for line in out)


def test_orientation_code():
    assert orientation_code(affine_from_geometry()) == "LPS"  # axial: x->L, y->P, z->S
    flipped = affine_from_geometry(direction=np.array([[0, 0, -1.0], [0, -1.0, 0], [1.0, 0, 0]]))
    assert orientation_code(flipped) == "RAS"  # columns (z, y, x) -> S, A, R
    assert orientation_code(None) == "-"
