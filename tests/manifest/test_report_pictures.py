"""The validation HTML's pictures: readable thumbnails, labelled, and a tile for each unreadable input."""

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.image import imread

from medmulti.examples import make_sample_cohort
from medmulti.intensity import foreground_mask
from medmulti.manifest import validate_manifest
from medmulti.manifest.checks import CHECKS, ERROR_CHECKS, THUMBNAIL_MIN_PX
from medmulti.manifest.report import UNREADABLE_CHECKS, Problem, ValidationReport

_TILE = re.compile(r"<img alt='([^']*)' src='data:image/png;base64,([^']*)'><br>([^<]*)</div>")
_UNREADABLE = re.compile(r"<div class='unreadable'>not readable: ([a-z_]+)</div>([^<]*)</div>")


@pytest.fixture(scope="module")
def faulty_html(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    cohort = make_sample_cohort(root / "c", n_patients=10, seed=3, faults=True, progress=False, ct_slices=16)
    report = validate_manifest(cohort.manifest, cohort.spec, workers=1, progress=False, thumbnails=True)
    return cohort, report.to_html(root / "r.html").read_text(encoding="utf-8")


def test_thumbnails_are_readable_labelled_and_show_the_body(faulty_html):
    cohort, html = faulty_html
    tiles = _TILE.findall(html)
    assert len(tiles) == len(cohort.patient_ids)  # each patient has a readable input
    for alt, b64, caption in tiles:
        pid, _, modality = caption.partition(" · ")
        assert alt == caption and pid in cohort.patient_ids and modality in ("ct", "mr", "xray")
        img = imread(io.BytesIO(base64.b64decode(b64)))
        gray = img[..., :3].mean(axis=-1)
        assert min(gray.shape) >= THUMBNAIL_MIN_PX, caption
        body = foreground_mask(gray)
        assert 0.05 < body.mean() < 0.9, caption
        assert gray[body].mean() - gray[~body].mean() > 0.2, caption  # the body stands out: not blank
        # enlarged with nearest neighbour (the sample images are 56-96 pixels): rows come in runs of equal rows
        starts = np.flatnonzero(np.any(np.diff(gray, axis=0) != 0, axis=1)) + 1
        assert np.diff([0, *starts, gray.shape[0]]).min() >= 2, caption


def test_every_unreadable_input_has_a_tile(faulty_html):
    cohort, html = faulty_html
    found = {(caption.split(" · ")[0], caption.split(" · ")[1], check) for check, caption in _UNREADABLE.findall(html)}
    expected = {(r["patient_id"], r["modality"], r["check"]) for r in cohort.fault_records()
                if r["check"] in UNREADABLE_CHECKS}
    truncated = next(r for r in cohort.fault_records() if r["fault"] == "truncated_slice")
    assert (truncated["patient_id"], "ct", "corrupt_file") in found
    assert found == expected


def test_tiles_escape_the_patient_and_modality_and_the_section_needs_thumbnails(tmp_path):
    pid, modality = "<b>p1</b>\x1b[2J", "ct'><script>"
    problems = [Problem(pid, modality, "x", "corrupt_file", "error", "the file is truncated")]
    report = ValidationReport(problems=problems, patients=[pid], thumbnails={pid: "iVBORw0KGgo="},
                              thumbnail_modalities={pid: "mr<i>"})
    text = report.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<b>p1</b>" not in text and "<script>" not in text and "\x1b" not in text and "mr<i>" not in text
    assert "&lt;b&gt;p1&lt;/b&gt;\\x1b[2J · mr&lt;i&gt;" in text
    assert "not readable: corrupt_file</div>&lt;b&gt;p1&lt;/b&gt;\\x1b[2J · ct&#x27;&gt;&lt;script&gt;" in text
    # no thumbnails asked for: no Patients section; asked for but none readable: the tiles alone
    assert "Patients" not in ValidationReport(problems=problems, patients=[pid]).to_html(tmp_path / "a.html").read_text()
    alone = ValidationReport(problems=problems, patients=[pid], thumbnails={}).to_html(tmp_path / "b.html").read_text()
    assert "not readable: corrupt_file" in alone and "data:image/png" not in alone


def test_unreadable_checks_cover_every_reader_failure():
    assert {check for check, _ in ERROR_CHECKS.values()} | {"read_error", "missing_modality"} == set(UNREADABLE_CHECKS)
    assert all(CHECKS[c] == "error" for c in UNREADABLE_CHECKS)
