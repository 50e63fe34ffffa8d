"""Fast-tier mutation fuzzing of every reader (a few hundred inputs each).

Pass: only MedmultiError subclasses escape, each input takes <= 2 CPU s, the
peak memory grows < 512 MiB, and an accepted image has the shape the header
declares (pydicom / nibabel read the same bytes) and finite values. Failing
inputs are copied to ``$MEDMULTI_FUZZ_CRASHERS`` (default: pytest's tmp dir) and
named ``<seed>#<index>`` so they regenerate with ``medmulti_testing.fuzz.mutate``.
The long tier is ``benchmarks/stress.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from medmulti_testing.campaign import file_inputs, run_campaign, save_input, series_inputs

PER_DICOM_SEED = 25  # 12 seeds -> 300 inputs
PER_NIFTI_SEED = 40  # 7 seeds -> 280 inputs
PER_SERIES_SEED = 100  # 2 seeds -> 200 inputs
BASE_SEED = 8  # fixed: CI explores the same inputs every run


def _report(summary) -> str:
    lines = [f"{summary.reader}: {summary.inputs} inputs {dict(summary.statuses)}"]
    for f in summary.failures[:20]:
        lines.append(f"  {f.name} [{f.mutator}] {f.status} {f.error} {f.detail.strip()[-800:]}")
    return "\n".join(lines)


@pytest.fixture
def crashers(tmp_path):
    return Path(os.environ.get("MEDMULTI_FUZZ_CRASHERS", tmp_path / "crashers"))


def _check(summary, expected_inputs):
    assert summary.inputs == expected_inputs
    assert summary.failures == [], _report(summary)
    assert summary.untyped_escapes == 0
    # the campaign really exercised both outcomes (mutations are not all rejected)
    assert summary.statuses["typed"] > 0


def test_fuzz_dicom_file_read_image(seeds, tmp_path, crashers):
    from medmulti.io import read_image

    s = run_campaign(read_image, file_inputs(seeds["dicom"], PER_DICOM_SEED, tmp_path, base_seed=BASE_SEED),
                     label="read_image[dicom file]", on_failure=lambda o, p: save_input(o, p, crashers))
    _check(s, PER_DICOM_SEED * len(seeds["dicom"]))
    assert s.statuses["accepted"] > 0


def test_fuzz_nifti_read_image(seeds, tmp_path, crashers):
    from medmulti.io import read_image

    s = run_campaign(read_image, file_inputs(seeds["nifti"], PER_NIFTI_SEED, tmp_path, base_seed=BASE_SEED),
                     label="read_image[nifti]", on_failure=lambda o, p: save_input(o, p, crashers))
    _check(s, PER_NIFTI_SEED * len(seeds["nifti"]))
    assert s.statuses["accepted"] > 0


def test_fuzz_dicom_series_read_image(seeds, tmp_path, crashers):
    from medmulti.io import read_image

    s = run_campaign(read_image, series_inputs(seeds["series"], PER_SERIES_SEED, tmp_path, base_seed=BASE_SEED),
                     label="read_image[dicom series]", on_failure=lambda o, p: save_input(o, p, crashers))
    _check(s, PER_SERIES_SEED * len(seeds["series"]))
    assert s.statuses["accepted"] > 0


@pytest.mark.parametrize("kind", ["dicom", "nifti", "series"])
def test_fuzz_inspect_source(seeds, tmp_path, crashers, kind):
    """The header-level path (used by validation) is held to the same rule, on fewer inputs."""
    from medmulti.io import inspect_source

    gen = series_inputs if kind == "series" else file_inputs
    per = {"dicom": 10, "nifti": 15, "series": 40}[kind]
    s = run_campaign(inspect_source, gen(seeds[kind], per, tmp_path, base_seed=BASE_SEED + 1),
                     label=f"inspect_source[{kind}]", check_shape=False,
                     on_failure=lambda o, p: save_input(o, p, crashers))
    _check(s, per * len(seeds[kind]))


def test_mutations_are_deterministic(seeds):
    from medmulti_testing.fuzz import mutate

    seed = seeds["dicom"][0]
    data = seed.read_bytes()
    a = [mutate(data, "dicom", seed_name=seed.name, index=i).data for i in range(30)]
    b = [mutate(data, "dicom", seed_name=seed.name, index=i).data for i in range(30)]
    assert a == b
    assert all(x != data for x in a)
    assert len(set(a)) == len(a)
