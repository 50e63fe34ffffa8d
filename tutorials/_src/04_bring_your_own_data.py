# %% [markdown]
# # 04 · Bring your own data: an export → spec → `scan` → manifest → policies → cache
#
# Your data arrive as a folder tree exported from the hospital archive and a spreadsheet of
# labels. medmulti needs two small text files next to them:
#
# - a **study spec** (YAML, you write it): which modalities the model takes, how each is
#   prepared, the labels, and the rules that pick one series per modality;
# - a **manifest** (CSV, `medmulti scan` writes it): one row per patient, its split, its
#   label(s) and one path (and series) per modality.
#
# This notebook scans an export into a manifest, validates it, chooses what happens to
# patients with missing or broken inputs (the **policies**), and builds the **preprocessing
# cache** that training reads from.
#
# ## Setup: a stand-in for your export
#
# We make an export from the generated sample cohort (real DICOM/NIfTI files, 12 patients, with
# the usual accidents of real exports: a truncated file, a missing slice, a file of another
# patient, a patient without an MR), arranged the way archives deliver studies: numbered
# folders, files without extension, a CT scout beside each CT, and the MR converted to NIfTI
# in a BIDS-style tree:
#
# ```
# export/PT0000/ST0000/SE0001/IM0000 ...          the CT series
# export/PT0000/ST0000/SE0002/IM0000, IM0001      a scout (ImageType LOCALIZER)
# export/PT0000/ST0001/SE0001/xray                a chest X-ray
# export/nifti/sub-SYN0001/anat/sub-SYN0001_T2w.nii.gz   an MR volume
# labels.csv                                      PatientID, diagnosis (from the clinical records)
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
import pydicom

import medmulti as mm

work = Path("byod")
if work.exists():
    shutil.rmtree(work)
source = mm.make_sample_cohort(work / "generated", n_patients=12, seed=4, faults=True, progress=False)
export = work / "export"


def copy_series(files, folder):
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f.stem)  # archives often drop the extension


for n, pid in enumerate(source.patient_ids):
    src, patient = source.root / pid, export / f"PT{n:04d}"
    ct = sorted((src / "ct").iterdir())
    copy_series(ct, patient / "ST0000" / "SE0001")
    scout_uid = pydicom.uid.generate_uid()  # a scout: two slices as a LOCALIZER series of their own
    (patient / "ST0000" / "SE0002").mkdir()
    for k, f in enumerate(ct[:2]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.ImageType = scout_uid, 2, ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(patient / "ST0000" / "SE0002" / f"IM{k:04d}")
    copy_series([src / "xray.dcm"], patient / "ST0001" / "SE0001")
    if (src / "mr.nii.gz").exists():
        anat = export / "nifti" / f"sub-{pid}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(src / "mr.nii.gz", anat / f"sub-{pid}_T2w.nii.gz")
with open(source.findings) as fh, open(work / "labels.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["PatientID", "diagnosis"])
    for rec in csv.DictReader(fh):
        writer.writerow([rec["patient_id"], rec["diagnosis"]])
shutil.rmtree(source.root)  # from here on, only export/ and labels.csv exist
print(sorted(p.name for p in export.iterdir()))
print(sorted(str(p.relative_to(export)) for p in (export / "PT0000").rglob("*") if p.is_dir()))

# %% [markdown]
# ## 1. Look before you write: what is in a patient's folder?
#
# One patient's folder holds several series: the CT, its scout, the X-ray of another study.
# `mm.list_series(folder)` (or `medmulti info FOLDER` in a shell) lists them from the headers
# only (fast), in any nesting, with whether each assembles into a volume. Nothing identifying
# is shown.

# %%
for s in mm.list_series(export / "PT0000"):
    print(f"series {s.number} {s.modality:2s} {s.n_files:2d} file(s), {s.rows}x{s.columns}, {s.plane:10s} "
          + ("reads" if s.readable else s.problem))

# %% [markdown]
# ## 2. Write the spec
#
# One entry per model input. The CT is the **reference**: its grid (here 6 mm voxels, 32³,
# centred) is where the other 3D modalities are resampled to. CT windows are preset names from
# `mm.CT_WINDOWS` or `[center, width]` in HU, one channel each. The MR is placed by its header
# (`register: none`); `auto` would register it to the CT when their frames of reference differ.
# `required: false` makes the MR optional: a patient without one is kept, and the model gets an
# extra input `mr_present`. The labels are the manifest's `diagnosis` column.
#
# Each modality may carry a `select:` block: the rules `scan` chooses its series by. The
# defaults already leave out localizers and scouts, derived and secondary images and tiny
# series, and prefer the axial CT with the most, thinnest slices ([docs/scan.md](../docs/scan.md)).
# Here only the MR needs one: where its NIfTI files lie (`sub-<PatientID>` names the patient).

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
    select:
      nifti: ["nifti/sub-*/anat/*_T2w.nii.gz"]
  - name: xray
    kind: xray
    shape: [64, 64]
""")
spec = mm.StudySpec.from_yaml(spec_path)  # a typo here raises SpecError naming the key
print([(m.name, m.input_shape or "reference grid", "required" if m.required else "optional")
       for m in spec.modalities])
print("CT preferences:", spec.modality("ct").selection.prefer)

# %% [markdown]
# ## 3. Scan the export into a manifest
#
# `mm.scan` (or `medmulti scan export --spec spec.yaml --out manifest.csv --labels labels.csv
# --split train=0.6,val=0.2,test=0.2 --seed 1` in a shell) reads every file's header, groups patient →
# study → series, chooses one series per spec modality and patient, joins the labels by
# PatientID and gives every patient **one** split (by patient, never by image: that is what
# keeps a patient out of both training and test).
#
# The manifest's keys are **pseudonyms**: a keyed hash of the PatientID, with a secret kept
# outside the data and the manifest's folder (the same secret gives the same keys on the next
# export). The report beside the manifest (`manifest.scan.txt`, `.json`, `.html`) lists every
# series seen, the one chosen and why, and each one left out and why.

# %%
secret = Path("keys") / "scan-secret"  # outside the export and the manifest's folder
secret.parent.mkdir(mode=0o700, exist_ok=True)
secret.write_text("tutorial 04: a fixed secret, so that the keys and the split are the same on every run\n")
secret.chmod(0o600)  # without secret=, scan creates a random one in ~/.config/medmulti/scan-secret
manifest_path = work / "manifest.csv"
result = mm.scan(export, spec, out=manifest_path, labels=work / "labels.csv", split="train=0.6,val=0.2,test=0.2",
                 seed=1, secret=secret, workers=1, progress=False)
print(result.summary())
first = result.patients[0]
for name, choice in first.choices.items():
    print(f"{first.key} {name}: {choice.reason}")
    for verdict in choice.verdicts:
        if not verdict.chosen:
            print(f"    left out {verdict.candidate.label}: {verdict.reason}")

# %% [markdown]
# The scout was left out, and the MR missing for one patient is reported (the spec made it
# optional). The warning is about the NIfTI paths: they name the patient (`sub-SYN0001`), so
# rename those files before sharing the manifest. The manifest itself is the format every
# other command reads: the CT as its series' folder plus the SeriesInstanceUID to read there.

# %%
with open(manifest_path) as fh:
    rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
for row in rows[:4]:
    print(row["patient_id"], row["split"], row["diagnosis"], row["ct"], row["xray"])
print(sum(r["split"] == "train" for r in rows), "train,", sum(r["split"] == "val" for r in rows), "val,",
      sum(r["split"] == "test" for r in rows), "test")

# %% [markdown]
# ## 4. Validate
#
# Before anything else: every file, every patient, in one report.

# %%
report = mm.validate_manifest(manifest_path, spec, workers=1, progress=False)
print(report.summary())
for line in report.lines():
    print(line)
assert sorted(p.check for p in report.errors) == ["corrupt_file", "series_geometry"]

# %% [markdown]
# Two patients have broken CTs (a truncated slice, a missing slice). The file of another
# patient in a CT folder is no error here: `scan` saw that it belongs to another patient's
# series, and the manifest's `ct_series` makes the readers take only the chosen series (the
# warning says one other series was ignored). The MR missing for one patient is not an error
# either: the spec made it optional. The right fix is a new export of the two studies; until
# then, the policies decide.
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
# 1. Write `spec.yaml`; add `select:` rules where the defaults do not pick the series you want.
# 2. `medmulti scan EXPORT --spec spec.yaml --out manifest.csv --labels labels.csv --split train=0.7,val=0.15,test=0.15`;
#    read `manifest.scan.txt` for what was chosen, left out, missing or ambiguous; keep the secret.
# 3. `medmulti validate manifest.csv --spec spec.yaml --html report.html` until it exits `0`.
# 4. Choose `on_missing` / `on_corrupt`; `medmulti preprocess manifest.csv --spec spec.yaml --cache cache`.
# 5. Train (tutorial 03, or `medmulti train ... --cache cache`); score new patients with
#    `medmulti predict RUN new.csv` (a scan without labels) or `--source ct=FOLDER ...`.
#
# The guide's [scan page](../docs/scan.md) details the rules, keys and report; the
# [sequence page](../docs/sequence.md) the policies and the cache.
