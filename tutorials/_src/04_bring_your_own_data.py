# %% [markdown]
# # 04 · Bring your own data: a folder of studies → manifest + spec → policies → cache
#
# Your data arrive as a folder tree exported from the hospital archive and a spreadsheet of
# labels. medmulti needs two small text files next to them:
#
# - a **manifest** (CSV): one row per patient, its split, its label(s) and one path per modality;
# - a **study spec** (YAML): which modalities the model takes, how each is prepared, the labels.
#
# This notebook writes both for a folder of studies, validates them, chooses what happens to
# patients with missing or broken inputs (the **policies**), and builds the **preprocessing
# cache** that training reads from.
#
# ## Setup: a stand-in for your export
#
# We make an export from the generated sample cohort (real DICOM/NIfTI files, 12 patients, with
# the usual accidents of real exports: a truncated file, a missing slice, a file of another
# patient, a patient without an MR), arranged the way many archives deliver studies:
#
# ```
# export/<patient>/CT/IM0000.dcm ...   a CT series
# export/<patient>/MR/<name>.nii.gz    an MR volume (converted to NIfTI)
# export/<patient>/XR/<name>.dcm       a chest X-ray
# labels.csv                           patient_id, diagnosis (from the clinical records)
# ```
#
# With your own data, start at the next section.

# %%
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import medmulti as mm

work = Path("byod")
if work.exists():
    shutil.rmtree(work)
source = mm.make_sample_cohort(work / "generated", n_patients=12, seed=4, faults=True, progress=False)
export = work / "export"
for pid in source.patient_ids:
    src = source.root / pid
    (export / pid).mkdir(parents=True)
    shutil.copytree(src / "ct", export / pid / "CT")
    if (src / "mr.nii.gz").exists():
        (export / pid / "MR").mkdir()
        shutil.copy(src / "mr.nii.gz", export / pid / "MR" / "t2_sag.nii.gz")
    (export / pid / "XR").mkdir()
    shutil.copy(src / "xray.dcm", export / pid / "XR" / "chest.dcm")
with open(source.findings) as fh, open(work / "labels.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["patient_id", "diagnosis"])
    for rec in csv.DictReader(fh):
        writer.writerow([rec["patient_id"], rec["diagnosis"]])
shutil.rmtree(source.root)  # from here on, only export/ and labels.csv exist
print(sorted(p.name for p in export.iterdir()))
print(sorted(str(p.relative_to(export)) for p in (export / "SYN0001").iterdir()))

# %% [markdown]
# ## 1. Look before you write: what is in each folder?
#
# `mm.io.inspect_source` reads only the headers (fast) and tells what a path holds: a DICOM
# series, a single DICOM file or a NIfTI, its modality and shape. Nothing identifying is
# returned: the `digests` it carries are hashes used to compare studies, never printed.

# %%
from medmulti.io import inspect_source

for path in sorted((export / "SYN0001").iterdir()):
    target = next(path.iterdir()) if path.name != "CT" else path  # the CT folder is a series
    info = inspect_source(target)
    print(f"{str(target.relative_to(export)):28s} {info.kind:13s} {info.modality:3s} shape {info.shape}"
          f"  {info.n_files} file(s)")

# %% [markdown]
# An export folder may hold more than one series (a scout, a second reconstruction, a stray
# file of another study). `mm.list_series(folder)` (or `medmulti info FOLDER` in a shell)
# lists them from the headers, with whether each assembles into a volume and the value that
# picks it: `series=` for `mm.read_image`, or the manifest's `<modality>_series` column.

# %%
for s in mm.list_series(export / "SYN0001" / "CT"):
    print(f"series={s.select!r:6s} {s.modality} {s.n_files} files, {s.rows}x{s.columns}, {s.plane}, "
          + ("reads" if s.readable else s.problem))

# %% [markdown]
# ## 2. Write the manifest
#
# Paths are written relative to the manifest's folder (so the whole tree can move), and every
# patient gets **one** split: splitting by patient, never by image, is what keeps a patient
# out of both training and test. Here the split comes from a seeded shuffle of the patient
# list; use your own (by site, by date...) if your study design says so. A modality the
# export does not have for a patient stays empty.

# %%
labels = {r["patient_id"]: r["diagnosis"] for r in csv.DictReader(open(work / "labels.csv"))}
patients = sorted(labels)
rng = np.random.default_rng(0)
order = rng.permutation(len(patients))
split_of = {}
for rank, i in enumerate(order):
    split_of[patients[i]] = "test" if rank < 3 else "val" if rank < 5 else "train"

folders = {"ct": "CT", "mr": "MR", "xray": "XR"}  # spec modality name -> export folder name


def source_path(pid, name):
    folder = export / pid / folders[name]
    if not folder.is_dir():
        return ""
    if name == "ct":
        return str(folder.relative_to(work))  # a series: the folder
    files = sorted(folder.iterdir())
    return str(files[0].relative_to(work)) if files else ""


manifest_path = work / "manifest.csv"
with open(manifest_path, "w", newline="") as fh:
    fh.write("# format: 1\n")
    writer = csv.writer(fh)
    writer.writerow(["patient_id", "split", "diagnosis", "ct", "mr", "xray"])
    for pid in patients:
        writer.writerow([pid, split_of[pid], labels[pid], *(source_path(pid, n) for n in folders)])
print(manifest_path.read_text())

# %% [markdown]
# ## 3. Write the spec
#
# One entry per model input. The CT is the **reference**: its grid (here 6 mm voxels, 32³,
# centred) is where the other 3D modalities are resampled to. CT windows are preset names from
# `mm.CT_WINDOWS` or `[center, width]` in HU, one channel each. The MR is placed by its header
# (`register: none`); `auto` would register it to the CT when their frames of reference differ.
# `required: false` makes the MR optional: a patient without one is kept, and the model gets an
# extra input `mr_present`. The labels are the manifest's `diagnosis` column.

# %%
spec_path = work / "spec.yaml"
spec_path.write_text("""\
format: 1
name: my-study
labels:
  column: diagnosis
  classes: [healthy, disease]
modalities:
  - name: ct
    kind: ct
    reference: true
    spacing_mm: [6, 6, 6]
    shape: [32, 32, 32]
    intensity:
      windows: [brain, [60, 160]]
  - name: mr
    kind: mr
    register: none
    required: false
  - name: xray
    kind: xray
    shape: [64, 64]
""")
spec = mm.StudySpec.from_yaml(spec_path)  # a typo here raises SpecError naming the key
print([(m.name, m.input_shape or "reference grid", "required" if m.required else "optional")
       for m in spec.modalities])

# %% [markdown]
# ## 4. Validate
#
# Before anything else: every file, every patient, in one report.

# %%
report = mm.validate_manifest(manifest_path, spec, workers=1, progress=False)
print(report.summary())
for line in report.lines():
    print(line)
assert sorted(p.check for p in report.errors) == ["corrupt_file", "patient_identity", "series_geometry"]

# %% [markdown]
# Three patients have broken data (a truncated slice, a missing slice, a file of another
# patient in the CT folder). The MR missing for one patient is not an error: the spec made it
# optional. The right fix is a new export of the three studies; until then, the policies decide.
#
# ## 5. Policies: what to do with missing and broken inputs
#
# `PatientSequence` applies two policies once, when it is built:
#
# | policy | `"error"` (default) | `"skip"` | `"zeros"` |
# | --- | --- | --- | --- |
# | `on_missing` (input absent) | raise, naming patient/modality/file | leave the patient out | feed zeros, `<name>_present = 0` |
# | `on_corrupt` (input unusable) | raise | leave the patient out | feed zeros, `<name>_present = 0` |
#
# Strict is the default: a training run that silently drops patients is a different study.

# %%
try:
    mm.PatientSequence(manifest_path, spec, "train", progress=False)
except mm.MedmultiError as err:
    print(type(err).__name__, "->", err)

# %% [markdown]
# We leave patients with broken or missing required inputs out (`"skip"` for both). The MR
# needs no policy: the spec made it optional, so a patient without one is kept and its
# `mr_present` input is 0. Every decision is listed in `seq.skipped` (and logged).
# (`on_missing="zeros"` would instead keep patients whose required inputs are missing, and give
# the model a `<name>_present` input for every modality.)

# %%
policies = dict(on_missing="skip", on_corrupt="skip", cache_dir=work / "cache", progress=False)
train = mm.PatientSequence(manifest_path, spec, "train", batch_size=4, **policies)
print(train)
print("skipped:")
for key, modality, reason in train.skipped:
    print(f"  {key}  {modality}  {reason[:90]}")
print("optional modalities:", train.optional_modalities)
no_mr = [r.patient_id for r in train.manifest.rows if r.split == "train" and not r.paths.get("mr")]
for pid in no_mr:
    print(pid, "has no MR; mr_present =", train.get_patient(pid)["mr_present"])

# %% [markdown]
# ## 6. Build the cache
#
# `preprocess_manifest` (or `medmulti preprocess`) reads, co-registers and normalises every
# input once, in parallel processes, and stores the arrays in the cache keyed by the files'
# content and the spec. Failures are listed, not fatal. A rerun computes only what changed.

# %%
from medmulti.data import preprocess_manifest

summary = preprocess_manifest(manifest_path, spec, work / "cache", workers=1, progress=False)
print(summary.summary())

# %%
again = preprocess_manifest(manifest_path, spec, work / "cache", workers=1, progress=False)
print("second run:", again.summary().splitlines()[0])

# %% [markdown]
# The sequence now reads from the cache. One batch, and one patient's inputs. Under the
# `"skip"`/`"zeros"` policies a batch also carries per-patient weights: all 1, unless a
# patient's file fails while training (a disk changed under the run), in which case that
# patient gets weight 0 instead of stopping `model.fit`.

# %%
inputs, y, weights = train[0]
print("weights:", weights)
print({k: v.shape for k, v in inputs.items()})
pid = train.patient_ids[0]
arrays = train.get_patient(pid)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
for ax, (title, img) in zip(axes, [("CT brain window", arrays["ct"][16, :, :, 0]),
                                   ("MR on the CT grid", arrays["mr"][16, :, :, 0]),
                                   ("X-ray", arrays["xray"][:, :, 0])]):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
fig.suptitle(f"{pid} from the cache")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. Look after the cache
#
# `medmulti cache verify` reads every entry and checks its checksum; `--remove` deletes bad
# entries so they are recomputed. Cache entries are plain `.npy` arrays with JSON metadata:
# no pickles, and no header values.

# %%
def medmulti(*args):
    """Run the medmulti command with this notebook's Python; print its output, return its exit code."""
    proc = subprocess.run([sys.executable, "-m", "medmulti.cli", *map(str, args)], capture_output=True, text=True)
    print(proc.stdout[-2000:], proc.stderr[-2000:], sep="")
    return proc.returncode


code = medmulti("cache", "verify", work / "cache", "--no-progress")
print("exit code:", code)
assert code == 0

# %% [markdown]
# Simulate bit rot in one cached array, and verify again: the damaged entry is found (exit
# code `1`), removed with `--remove`, and recomputed on the next `preprocess`.

# %%
victim = sorted((work / "cache").rglob("*.npy"))[0]
data = bytearray(victim.read_bytes())
data[-8:] = b"\xff" * 8
victim.write_bytes(bytes(data))
code = medmulti("cache", "verify", work / "cache", "--no-progress", "--remove")
print("exit code:", code)
assert code == 1  # the damaged entry was found (and removed)
print(preprocess_manifest(manifest_path, spec, work / "cache", workers=1, progress=False).summary().splitlines()[0])

# %% [markdown]
# ## Checklist for your own data
#
# 1. Export one folder (or file) per patient and modality; keep identifiers out of folder names.
# 2. Write `manifest.csv` (relative paths, one split per patient) and `spec.yaml`.
# 3. `medmulti validate manifest.csv --spec spec.yaml --html report.html` until it exits `0`.
# 4. Choose `on_missing` / `on_corrupt`; `medmulti preprocess manifest.csv --spec spec.yaml --cache cache`.
# 5. Train (tutorial 03, or `medmulti train ... --cache cache`).
#
# The guide's [sequence page](../docs/sequence.md) details the policies and the cache.
