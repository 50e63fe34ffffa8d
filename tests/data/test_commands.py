"""`medmulti preprocess` and `medmulti cache verify|prune`, and preprocess_manifest in processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from data_helpers import read_rows

from medmulti.cli import main
from medmulti.data.cache import PreprocessCache
from medmulti.data.cache_fill import preprocess_manifest


def _n_inputs(manifest: Path, names) -> int:
    return sum(1 for r in read_rows(manifest) for n in names if r.get(n))


def test_preprocess_command_fills_then_resumes(tmp_path, clean_cohort, spec, spec_path, capsys):
    cache = tmp_path / "cache"
    # two worker processes, only the val split first
    assert main(["preprocess", str(clean_cohort.manifest), "--spec", str(spec_path), "--cache", str(cache),
                 "--workers", "2", "--split", "val", "--no-progress"]) == 0
    val_inputs = sum(1 for r in read_rows(clean_cohort.manifest) if r["split"] == "val" for n in spec.names if r[n])
    assert len(list(PreprocessCache(cache).keys())) == val_inputs
    out = tmp_path / "summary.json"
    assert main(["preprocess", str(clean_cohort.manifest), "--spec", str(spec_path), "--cache", str(cache),
                 "--workers", "0", "--no-progress", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    total = _n_inputs(clean_cohort.manifest, spec.names)
    assert summary["cached"] == val_inputs and summary["computed"] == total - val_inputs
    assert "computed" in capsys.readouterr().out
    # entries equal what the sequence computes on the fly
    from medmulti.data.sequence import PatientSequence

    cached = PatientSequence(clean_cohort.manifest, spec, "val", cache_dir=cache, progress=False)
    fresh = PatientSequence(clean_cohort.manifest, spec, "val", cache_dir=None, progress=False)
    pid = cached.patient_ids[0]
    for n in spec.names:
        np.testing.assert_array_equal(cached.get_patient(pid)[n], fresh.get_patient(pid)[n])


def test_preprocess_reports_failures_per_patient(fault_cohort, spec, tmp_path):
    summary = preprocess_manifest(fault_cohort.manifest, spec, tmp_path / "c", workers=2, progress=False)
    assert not summary.ok
    failed = {(f["patient_id"], f["modality"]) for f in summary.failures}
    faults = fault_cohort.fault_records()
    for f in faults:
        if f["check"] in ("corrupt_file", "series_geometry"):
            assert (f["patient_id"], f["modality"]) in failed, summary.summary()
    for f in summary.failures:  # paths relative to the manifest folder, naming the file
        if f["error"] == "UnsafePathError":  # as written in the manifest: never resolved, never absent
            assert f["path"].startswith("..") and "outside" in f["message"]
            continue
        assert f["path"] and f["path"].startswith(f"{f['patient_id']}/{f['modality']}")
    unsafe = [f for f in faults if f["check"] == "unsafe_path"]
    assert unsafe and all((f["patient_id"], f["modality"]) in failed for f in unsafe)
    assert summary.computed > 0
    assert all(f["error"].endswith("Error") for f in summary.failures)


def test_cache_verify_and_prune_commands(tmp_path, clean_cohort, spec, spec_path, warm_cache, capsys):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache)
    assert main(["cache", "verify", str(cache), "--no-progress"]) == 0
    side = next(cache.glob("??/*.json"))
    npy = side.parent / json.loads(side.read_text())["file"]
    data = bytearray(npy.read_bytes())
    data[-2] ^= 0x01
    npy.write_bytes(bytes(data))
    assert main(["cache", "verify", str(cache), "--no-progress"]) == 1
    assert side.stem[:12] in capsys.readouterr().out
    assert main(["cache", "verify", str(cache), "--remove", "--no-progress"]) == 1
    assert main(["cache", "verify", str(cache), "--no-progress"]) == 0
    n_before = len(list(PreprocessCache(cache).keys()))
    # change the MR spec section: prune with the new spec drops exactly the MR entries
    new_spec = spec_path.parent / "changed.yaml"
    data = spec.to_dict()
    for m in data["modalities"]:
        if m["name"] == "mr":
            m["intensity"] = {"method": "zscore"}
    import yaml

    new_spec.write_text(yaml.safe_dump(data))
    n_mr = sum(1 for s in cache.glob("??/*.json") if json.loads(s.read_text())["modality"] == "mr")
    assert main(["cache", "prune", str(cache), "--manifest", str(clean_cohort.manifest), "--spec", str(new_spec),
                 "--dry-run"]) == 0
    assert len(list(PreprocessCache(cache).keys())) == n_before
    assert main(["cache", "prune", str(cache), "--manifest", str(clean_cohort.manifest), "--spec",
                 str(new_spec)]) == 0
    left = [json.loads(s.read_text())["modality"] for s in cache.glob("??/*.json")]
    assert len(left) == n_before - n_mr and "mr" not in left
    assert main(["cache", "prune", str(cache), "--manifest", str(clean_cohort.manifest)]) == 2
    assert main(["cache", "verify", str(tmp_path / "nope")]) == 2
