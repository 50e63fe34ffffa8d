"""train -> evaluate -> predict as a user runs them: each command in its own fresh process,
in an empty folder, checked for its exit code, its one-line typed message and the absence
of tracebacks and TensorFlow's native start-up lines (issue 12, and the run-folder items
7 and 15 of issue 13)."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medmulti.errors import RunFolderError

TINY = ["--epochs", "1", "--width", "2", "--depth", "2", "--batch-size", "4", "--no-progress"]
NATIVE_NOISE = ("oneDNN custom operations", "Could not find cuda drivers", "absl::InitializeLog")


def medmulti(*args: str, cwd: Path, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed command in a fresh process, as a shell user would."""
    exe = Path(sys.executable).parent / "medmulti"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          **kwargs)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


def rows_of(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    lines = [ln for ln in manifest.read_text().splitlines(keepends=True) if not ln.startswith("#")]
    reader = csv.DictReader(lines)
    return list(reader.fieldnames or []), list(reader)


def write_rows(manifest: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, header)
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An empty folder with a generated cohort and a run trained by `medmulti train` in its own process."""
    root = tmp_path_factory.mktemp("users_folder")
    proc = medmulti("sample-data", "c", "--patients", "12", "--no-faults", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "run", "--cache", "cache", *TINY,
                    cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test ROC AUC" in proc.stdout
    for noise in NATIVE_NOISE:
        assert noise not in proc.stderr
    return root


def test_evaluate_and_predict_load_the_model_in_fresh_processes(work):
    # the README's last line: before the fix, predict could not rebuild the custom layers
    proc = medmulti("predict", "run", "c/manifest.csv", "--out", "p.csv", "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    header, rows = rows_of(work / "p.csv")
    assert header[0] == "patient_id" and len(rows) == 12
    proc = medmulti("evaluate", "run", "--json", "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["n"] == sum(r["split"] == "test" for r in rows_of(work / "c/manifest.csv")[1])
    for noise in NATIVE_NOISE:
        assert noise not in proc.stderr


def test_the_run_card_stores_paths_relative_to_the_run(work):
    card = json.loads((work / "run" / "run_card.json").read_text())
    assert card["status"] == "complete"
    assert card["manifest"]["path"] == os.path.join("..", "c", "manifest.csv")
    assert card["cache_dir"] == os.path.join("..", "cache")
    # the folder moves with its data: a copy of the whole tree still evaluates
    moved = work.parent / "moved_tree"
    shutil.copytree(work, moved, symlinks=True)
    proc = medmulti("evaluate", "run", "--no-progress", cwd=moved)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_run_card_cannot_make_evaluate_write_outside_the_run(work, tmp_path):
    run = tmp_path / "colleagues_run"
    shutil.copytree(work / "run", run)
    card = json.loads((run / "run_card.json").read_text())
    victims = [tmp_path / "victim_abs" / "cache", tmp_path / "victim_rel"]
    for value in (str(victims[0]), os.path.relpath(victims[1], run)):
        card["cache_dir"] = value
        card["manifest"]["path"] = str(work / "c" / "manifest.csv")
        (run / "run_card.json").write_text(json.dumps(card))
        proc = medmulti("evaluate", str(run), "--no-progress", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    for victim in victims:
        assert not victim.exists(), f"evaluate created {victim} because a run card said so"


def test_corrupt_or_foreign_model_is_a_typed_error_naming_the_run(work, tmp_path):
    run = tmp_path / "cut"
    shutil.copytree(work / "run", run)
    model = run / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # a copy cut short
    proc = medmulti("predict", str(run), str(work / "c/manifest.csv"), "--out", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert_clean_failure(proc, 1, "RunFolderError", "cut", "model.keras")
    from medmulti.training import predict

    with pytest.raises(RunFolderError, match="does not load"):
        predict(run, work / "c/manifest.csv", out=tmp_path / "p.csv", progress=False)
    model.unlink()
    with pytest.raises(RunFolderError, match="no model file"):
        predict(run, work / "c/manifest.csv", out=tmp_path / "p.csv", progress=False)
    (run / "run_card.json").write_text("[1, 2")
    proc = medmulti("evaluate", str(run), cwd=tmp_path)
    assert_clean_failure(proc, 1, "RunFolderError", "not valid JSON")


def test_non_empty_out_gives_the_cli_flag_not_python_syntax(work):
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "run", *TINY, cwd=work)
    assert_clean_failure(proc, 2, "--overwrite")
    assert "overwrite=True" not in proc.stderr
    proc = medmulti("sample-data", "c", "--patients", "4", cwd=work)
    assert_clean_failure(proc, 2, "--overwrite")
    assert "overwrite=True" not in proc.stderr


def test_one_class_val_split_with_val_auc_is_a_data_error_and_leaves_no_run(work, tmp_path):
    header, rows = rows_of(work / "c/manifest.csv")
    for r in rows:
        if r["split"] == "val":
            r["diagnosis"] = "healthy"
    shutil.copytree(work / "c", tmp_path / "c")
    write_rows(tmp_path / "c/manifest.csv", header, rows)
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "run", "--cache",
                    str(work / "cache"), "--monitor", "val_auc", *TINY, cwd=tmp_path)
    assert_clean_failure(proc, 1, "ManifestError", "one class", "--monitor val_loss")
    assert "All-NaN" not in proc.stderr
    assert not (tmp_path / "run").exists(), "a failed run left a half-written folder"
    # over an earlier run (--overwrite) the card says the run failed, and predict refuses it
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "run", "--monitor", "val_auc",
                    "--overwrite", *TINY, cwd=tmp_path)
    assert proc.returncode == 1
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    assert card["status"] == "failed" and card["error"]["type"] == "ManifestError"
    proc = medmulti("predict", "run", "c/manifest.csv", cwd=tmp_path)
    assert_clean_failure(proc, 1, "RunFolderError", "failed", "--overwrite")


def test_policies_from_the_shell_skip_a_broken_patient_and_list_it(work, tmp_path):
    shutil.copytree(work / "c", tmp_path / "c")
    header, rows = rows_of(tmp_path / "c/manifest.csv")
    broken = next(r for r in rows if r["split"] == "train")
    ct = tmp_path / "c" / broken["ct"]
    victim = sorted(ct.iterdir())[len(list(ct.iterdir())) // 2]
    victim.write_bytes(victim.read_bytes()[:300])  # a slice cut short
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "strict", *TINY, cwd=tmp_path)
    assert_clean_failure(proc, 1, broken["patient_id"], "ct")
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "run", "--on-corrupt", "skip",
                    *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"train: skipped: patient {broken['patient_id']} (ct:" in proc.stdout
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    assert [r["patient_id"] for r in card["excluded"]["train"]["skipped"]] == [broken["patient_id"]]
    assert card["options"]["on_corrupt"] == "skip"
    # zeros: the patient stays, its CT is fed as zeros and listed
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/spec.yaml", "--out", "run0", "--on-corrupt", "zeros",
                    *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"train: fed as zeros: patient {broken['patient_id']} (ct:" in proc.stdout
    # predict keeps the run's policy unless told otherwise
    proc = medmulti("predict", "run", "c/manifest.csv", "--out", "p.csv", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert broken["patient_id"] in proc.stderr  # the warning names the skipped patient
    proc = medmulti("predict", "run", "c/manifest.csv", "--out", "p2.csv", "--on-corrupt", "error", cwd=tmp_path)
    assert_clean_failure(proc, 1, "CorruptFileError", broken["patient_id"])


def test_unsafe_paths_are_errors_and_data_root_allows_them(work, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(work / "c", data)
    (tmp_path / "manifests").mkdir()
    header, rows = rows_of(data / "manifest.csv")
    for r in rows:
        for m in ("ct", "mr", "xray"):
            r[m] = os.path.join("..", "data", r[m])
    write_rows(tmp_path / "manifests" / "m.csv", header, rows)
    proc = medmulti("preprocess", "manifests/m.csv", "--spec", "data/spec.yaml", "--cache", "cache",
                    "--workers", "1", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0 absent" in proc.stdout and f"{len(rows) * 3} failed" in proc.stdout
    assert "UnsafePathError" in proc.stdout and "outside" in proc.stdout
    proc = medmulti("preprocess", "manifests/m.csv", "--spec", "data/spec.yaml", "--cache", "cache",
                    "--workers", "1", "--data-root", "data", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    proc = medmulti("train", "manifests/m.csv", "--spec", "data/spec.yaml", "--out", "run", *TINY, cwd=tmp_path)
    assert_clean_failure(proc, 1, "UnsafePathError")
    proc = medmulti("train", "manifests/m.csv", "--spec", "data/spec.yaml", "--out", "run", "--cache", "cache",
                    "--data-root", "data", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = medmulti("predict", "run", "manifests/m.csv", "--out", "p.csv", "--data-root", "data", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("command", [["info", "c/SYN0001/ct", "--values"],
                                     ["validate", "c/manifest.csv", "--spec", "c/spec.yaml", "--no-progress"]])
def test_a_closed_pipe_ends_quietly(work, command):
    # `medmulti info ... | head`: the reader leaves before we write
    exe = Path(sys.executable).parent / "medmulti"
    proc = subprocess.Popen([str(exe), *command], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()[-2000:]
    assert proc.returncode == 141


def test_evaluate_no_write_leaves_the_run_folder_untouched(work, tmp_path):
    run = tmp_path / "shared_run"
    shutil.copytree(work / "run", run)
    before = sorted(p.name for p in run.iterdir())
    proc = medmulti("evaluate", str(run), "--manifest", str(work / "c/manifest.csv"), "--split", "val", "--no-write",
                    "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir()) == before


def test_unwritable_run_folder_and_full_disk_are_typed(work, tmp_path, monkeypatch):
    from medmulti import training
    from medmulti.models import saving
    from medmulti.training import apply

    # evaluate into a folder that refuses writes (read-only mount; simulated: root ignores modes)
    run = tmp_path / "ro_run"
    shutil.copytree(work / "run", run)

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(apply, "write_json", read_only)
    with pytest.raises(RunFolderError) as info:
        training.evaluate(run, work / "c/manifest.csv", split="val", progress=False)
    assert "--no-write" in info.value.cli_text() and "write=False" in str(info.value)
    monkeypatch.undo()

    # a full disk while the checkpoint is written: typed, errno kept, no half-written run left
    def full_disk(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04 cut")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(saving.keras.Model, "save", full_disk)
    out = tmp_path / "full"
    with pytest.raises(RunFolderError, match="no space left") as info:
        training.train(work / "c/manifest.csv", work / "c/spec.yaml", out, epochs=1, batch_size=4, width=2, depth=2,
                       embed_dim=4, stem_stride=2, cache_dir=work / "cache", progress=False)
    assert info.value.errno == errno.ENOSPC
    assert not out.exists()

    # --out below a file: typed, exit 1, no traceback
    (tmp_path / "afile").write_text("x")
    proc = medmulti("train", str(work / "c/manifest.csv"), "--spec", str(work / "c/spec.yaml"), "--out",
                    str(tmp_path / "afile" / "run"), *TINY, cwd=tmp_path)
    assert_clean_failure(proc, 1, "RunFolderError", "cannot write the run folder")


def test_atomic_model_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import keras

    from medmulti.models.saving import load_fusion_model, save_model_atomic

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = save_model_atomic(model, tmp_path / "model.keras")
    good = path.read_bytes()

    def cut(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", cut)
    with pytest.raises(RunFolderError, match="no space left"):
        save_model_atomic(model, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    monkeypatch.undo()
    assert load_fusion_model(path).count_params() == model.count_params()


def test_policy_choices_match_the_sequence():
    from medmulti.cli.arguments import POLICY_CHOICES
    from medmulti.data.sequence import POLICIES

    assert tuple(POLICY_CHOICES) == tuple(POLICIES)


@pytest.mark.parametrize("option", ["--json", "--html"])
def test_reports_to_an_unwritable_place_are_typed(work, tmp_path, option):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "report.out"  # below a file: ENOTDIR, as a read-only mount would be EROFS
    proc = medmulti("validate", "c/manifest.csv", "--spec", "c/spec.yaml", option, str(target), "--no-progress",
                    cwd=work)
    assert_clean_failure(proc, 1, "OutputError", "cannot write the")
    proc = medmulti("preprocess", "c/manifest.csv", "--spec", "c/spec.yaml", "--cache", "cache", "--json",
                    str(target), "--no-progress", cwd=work)
    assert_clean_failure(proc, 1, "OutputError", "JSON summary")


def test_validate_text_lines_say_what_happened_and_what_to_do(work, tmp_path):
    shutil.copytree(work / "c", tmp_path / "c")
    (tmp_path / "c" / "SYN0002" / "mr.nii.gz").unlink()
    proc = medmulti("validate", "c/manifest.csv", "--spec", "c/spec.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SYN0002"))
    patient, modality, path, check, todo = line.split("  ", 4)
    assert (modality, path, check) == ("mr", "SYN0002/mr.nii.gz", "missing_file")
    message, hint = todo.split(" -> ")
    assert "no such file" in message and hint and hint != message


def test_native_log_filter_drops_absl_lines_and_keeps_everything_else(tmp_path):
    code = r'''
import os, sys
from medmulti.cli.native_log import NativeLogFilter
with NativeLogFilter():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796521544.063679    4767 cudart_stub.cc:31] Could not find cuda drivers\n")
    print("WARNING medmulti.data: kept", file=sys.stderr, flush=True)
    os.write(2, b"\rprogress 50%")
    os.write(2, b"E0000 00:00:1796521549.364666    4767 cuda_platform.cc:52] failed call to cuInit\n")
    os.write(2, b"Error: a line of our own\n")
print("after", file=sys.stderr)
'''
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"WARNING medmulti.data: kept\n\rprogress 50%Error: a line of our own\nafter\n"
