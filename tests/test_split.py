"""Splitting a cohort by patient: ``assign_splits`` (the pure rule), ``split_manifest`` and ``medmulti split``.

Grouping (no patient in two splits or folds), stratification within one patient of each
share, determinism for a seed, three classes, and the command in a subprocess.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from medmulti.errors import ManifestError
from medmulti.manifest import assign_splits, load_manifest, split_manifest
from medmulti.manifest.split import parse_ratios

CLASSES = ("healthy", "disease", "unclear")


def _cohort(n_patients=60, seed=0):
    """Keys and labels of a three-class cohort; every third patient has two studies (two rows)."""
    keys, labels = [], []
    for i in range(n_patients):
        for _ in range(2 if i % 3 == 0 else 1):
            keys.append(f"P{i:03d}")
            labels.append(CLASSES[(i * 7 + seed) % 3] if i % 5 else "healthy")
    return keys, labels


def _groups_hold_together(keys, assigned):
    seen = defaultdict(set)
    for key, value in zip(keys, assigned):
        seen[key].add(value)
    return all(len(v) == 1 for v in seen.values())


@pytest.mark.parametrize("how", [dict(ratios=(0.7, 0.15, 0.15)), dict(ratios="0.5,0.5"), dict(folds=5),
                                 dict(folds=2)])
def test_no_patient_lands_in_two_splits_or_folds(how):
    keys, labels = _cohort()
    assigned = assign_splits(keys, labels, seed=3, **how)
    assert len(assigned) == len(keys) and _groups_hold_together(keys, assigned)
    expected = set(range(how["folds"])) if "folds" in how else {"train", "val", "test"} - (
        set() if len(parse_ratios(how["ratios"])) == 3 else {"test"})
    assert set(assigned) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("how,shares", [(dict(ratios=(0.7, 0.15, 0.15)), {"train": 0.7, "val": 0.15, "test": 0.15}),
                                        (dict(folds=4), {k: 0.25 for k in range(4)})])
def test_every_class_is_in_every_split_in_proportion_within_one_patient(seed, how, shares):
    keys, labels = _cohort(seed=seed)
    assigned = assign_splits(keys, labels, seed=seed, **how)
    patients = {}
    for key, label, value in zip(keys, labels, assigned):
        patients[key] = (label, value)
    per_class = Counter(label for label, _ in patients.values())
    counts = Counter(patients.values())
    for label in CLASSES:
        for value, share in shares.items():
            assert abs(counts[(label, value)] - share * per_class[label]) < 1, (label, value)
    sizes = Counter(value for _, value in patients.values())
    for value, share in shares.items():
        assert abs(sizes[value] - share * len(patients)) < 1 + len(CLASSES)


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    keys, labels = _cohort()
    a = assign_splits(keys, labels, ratios=(0.6, 0.2, 0.2), seed=11)
    assert a == assign_splits(list(keys), list(labels), ratios=(0.6, 0.2, 0.2), seed=11)
    assert a != assign_splits(keys, labels, ratios=(0.6, 0.2, 0.2), seed=12)
    # keys are compared in canonical form: a zero-width space does not make another patient
    assert assign_splits(["A", "A\u200b", "B", "C"], folds=2, seed=0)[:2] in ([0, 0], [1, 1])


@pytest.mark.parametrize("how,match", [(dict(ratios=(0.7, 0.2)), "sum to 1"), (dict(ratios=(1.2, -0.2)), "non-negative"),
                                       (dict(folds=1), "folds must be"), (dict(folds=5), "folds must be"),
                                       (dict(), "exactly one"), (dict(ratios=(0.5, 0.5), folds=2), "exactly one")])
def test_bad_ratios_and_folds_are_refused(how, match):
    with pytest.raises(ValueError, match=match):
        assign_splits(["a", "b", "c", "d"], **how)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medmulti.examples.cohort import make_sample_cohort

    root = tmp_path_factory.mktemp("split_cohort")
    return make_sample_cohort(root / "cohort", n_patients=16, seed=3, faults=False, progress=False)


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def test_split_manifest_writes_a_loadable_copy_with_a_split_column(cohort):
    out = cohort.manifest.parent / "resplit.csv"
    result = split_manifest(cohort.manifest, out, ratios=(0.5, 0.25, 0.25), stratify="diagnosis", seed=4)
    assert result.path == out and result.column == "split"
    before, after = _read(cohort.manifest), _read(out)
    assert [{k: v for k, v in r.items() if k != "split"} for r in after] == \
        [{k: v for k, v in r.items() if k != "split"} for r in before]
    assert out.read_text().startswith("# format: 1\n")
    manifest = load_manifest(out, cohort.spec)  # strict: every cell still reads
    assert {s: len(manifest.split(s)) for s in ("train", "val", "test")} == {"train": 8, "val": 4, "test": 4}
    assert sum(sum(c.values()) for c in result.patients.values()) == 16


def test_split_manifest_folds_keep_the_test_rows_out(cohort):
    out = cohort.manifest.parent / "folds.csv"
    result = split_manifest(cohort.manifest, out, folds=3, stratify="diagnosis", seed=1)
    rows = _read(out)
    tests = [r for r in rows if r["split"] == "test"]
    assert tests and all(r["fold"] == "" for r in tests) and result.held_out == len(tests)
    assert sorted({r["fold"] for r in rows if r["split"] != "test"}) == ["0", "1", "2"]
    manifest = load_manifest(out, cohort.spec)
    assert {r.fold for r in manifest.rows if r.split != "test"} == {"0", "1", "2"}


def test_split_manifest_refuses_its_input_an_existing_output_and_another_folder(cohort, tmp_path):
    with pytest.raises(ValueError, match="is the input"):
        split_manifest(cohort.manifest, cohort.manifest, folds=2)
    out = cohort.manifest.parent / "twice.csv"
    split_manifest(cohort.manifest, out, folds=2)
    with pytest.raises(ValueError, match="exists"):
        split_manifest(cohort.manifest, out, folds=2)
    split_manifest(cohort.manifest, out, folds=2, overwrite=True)
    with pytest.raises(ValueError, match="same folder"):
        split_manifest(cohort.manifest, tmp_path / "elsewhere.csv", folds=2)
    with pytest.raises(ManifestError, match="column not found"):
        split_manifest(cohort.manifest, cohort.manifest.parent / "x.csv", folds=2, stratify="diagnsis")
    assert not (cohort.manifest.parent / "x.csv").exists()


def test_a_bad_fold_cell_is_a_manifest_error(cohort):
    path = cohort.manifest.parent / "badfold.csv"
    text = cohort.manifest.read_text().splitlines()
    text[1] += ",fold"
    text[2:] = [line + (",x" if i == 0 else ",0") for i, line in enumerate(text[2:])]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ManifestError, match="fold 'x' is not a non-negative integer"):
        load_manifest(path, cohort.spec)
    assert [p.check for p in load_manifest(path, cohort.spec, strict=False).problems] == ["bad_fold"]


def test_the_split_command_in_a_subprocess(cohort):
    out = cohort.manifest.parent / "cli.csv"
    command = [sys.executable, "-m", "medmulti", "split", str(cohort.manifest), "--out", str(out), "--ratios",
               "0.5,0.25,0.25", "--stratify", "diagnosis", "--seed", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and done.stdout.splitlines()[1].startswith("train")
    again = out.read_text()
    assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 2  # exists
    assert subprocess.run(command + ["--overwrite"], capture_output=True, timeout=120).returncode == 0
    assert out.read_text() == again  # deterministic
    usage = subprocess.run(command[:7] + ["--ratios", "0.5,0.6"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "sum to 1" in usage.stderr
    both = subprocess.run(command + ["--folds", "2"], capture_output=True, text=True, timeout=120)
    assert both.returncode == 2
