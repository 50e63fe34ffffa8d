# %% [markdown]
# # 02 · Validate a manifest, read the report, fix the problems, validate again
#
# A training run that dies at hour ten on a corrupt slice, or a patient that sits in both the
# training and the test split, costs days. `medmulti validate` (and `mm.validate_manifest` in
# Python) checks a whole cohort **before** training: every file, every patient, every row,
# and reports **every** problem at once, each naming the patient, the modality and the file,
# with a hint on how to fix it.
#
# We use the generated sample cohort with its injected faults: real DICOM series (CT),
# NIfTI volumes (MR) and DICOM projections (X-ray), written by pydicom and nibabel, plus
# `faults.json`, the list of what was broken on purpose. Here 12 patients keep the tutorial
# quick; `medmulti sample-data` writes 40 by default.

# %%
import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt

import medmulti as mm

cohort = mm.make_sample_cohort("cohort_02", n_patients=12, seed=0, faults=True, overwrite=True, progress=False)
print("manifest:", cohort.manifest)
print("spec:    ", cohort.spec)
print("patients:", len(cohort.patient_ids))

# %% [markdown]
# ## The two inputs: a manifest CSV and a study spec
#
# The **manifest** has one row per patient: `patient_id`, `split` (`train`/`val`/`test`), the
# label column(s) and one column per modality holding a path relative to the manifest's folder
# (a DICOM series folder, a DICOM file or a NIfTI file; empty = absent).

# %%
print(cohort.manifest.read_text())

# %% [markdown]
# The **study spec** (YAML) says which modalities a model takes and how each is prepared
# (reference grid, CT windows, MR/X-ray normalisation, whether it is required), and what the
# labels are.

# %%
spec = mm.StudySpec.from_yaml(cohort.spec)
for m in spec.modalities:
    print(f"{m.name:5s} kind={m.kind:5s} dims={m.dims} required={m.required} reference={m.reference} "
          f"input shape={m.input_shape}")
print("labels:", spec.labels.column, spec.labels.classes)

# %% [markdown]
# ## Validate
#
# Without `deep=True` the validator reads headers only and compares every file's size with
# the pixel data its header declares, so truncated files are found quickly; `deep=True` decodes
# every pixel too. `workers` spreads the patients over processes (default: all cores).

# %%
report = mm.validate_manifest(cohort.manifest, spec, workers=1, progress=False)
print(report.summary())

# %% [markdown]
# One line per problem: `patient  modality  path  check  what to do`. No value read from a DICOM
# header ever appears in a report (no names, IDs, dates or UIDs), so it is safe to share.

# %%
for line in report.lines():
    print(line)

# %% [markdown]
# Each problem is also a record (for JSON, a spreadsheet, or your own code):

# %%
print(json.dumps(report.errors[0].to_dict(), indent=2))
counts = Counter(p.check for p in report.problems)
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(counts), list(counts.values()), color=["#c0392b" if any(p.check == c and p.is_error
                                                                   for p in report.problems) else "#f1c40f"
                                                    for c in counts])
ax.xaxis.get_major_locator().set_params(integer=True)
ax.set_xlabel("problems")
ax.set_title("problems per check (red: errors, yellow: warnings)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Did it find everything that was broken on purpose? `faults.json` lists each injected fault
# with the check that must report it.

# %%
injected = {(f["patient_id"], f["check"]) for f in cohort.fault_records()}
found = {(p.patient_id, p.check) for p in report.errors}
print("injected faults:", len(injected))
print("all found      :", injected <= found)
print("other errors   :", sorted(found - injected))
assert injected <= found

# %% [markdown]
# ## The same from the command line
#
# `medmulti validate` prints the same report, can write it as JSON and as an HTML page with a
# thumbnail per patient, and exits with `1` when there are errors, so a pipeline stops here.
# (In a notebook we run the command through the current Python; in a terminal type
# `medmulti validate cohort_02/manifest.csv --spec cohort_02/spec.yaml`.)

# %%
def medmulti(*args):
    """Run the medmulti command with this notebook's Python; print its output, return its exit code."""
    proc = subprocess.run([sys.executable, "-m", "medmulti.cli", *map(str, args)], capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="")
    return proc.returncode


code = medmulti("validate", cohort.manifest, "--spec", cohort.spec, "--workers", 1, "--no-progress",
                "--json", "report.json")
print("exit code:", code)
assert code == 1  # errors found
print("records in report.json:", len(json.loads(Path("report.json").read_text())))

# %% [markdown]
# ## Fix the problems
#
# Some problems are fixed in the manifest, some in the spec, and some need the data itself
# again (a re-export from the archive). Here we fix what can be fixed and leave the rest out,
# one decision per problem:
#
# | patient | check | decision |
# | --- | --- | --- |
# | label not in the spec | `unknown_label` | correct the label (the ground truth is in `findings.csv`) |
# | path outside the manifest folder | `unsafe_path` | correct the path |
# | patient in two splits | `patient_in_two_splits` | keep the first row only |
# | MR missing | `missing_modality` | allow it: mark `mr` as `required: false` in the spec |
# | truncated slice, missing slice, another patient's file | `corrupt_file`, `series_geometry`, `patient_identity` | leave the patient out until the study is re-exported |

# %%
truth = {r["patient_id"]: r["diagnosis"] for r in csv.DictReader(cohort.findings.open())}
needs_data = {p.patient_id for p in report.errors
              if p.check in ("corrupt_file", "series_geometry", "patient_identity")}
print("left out until re-exported:", sorted(needs_data))

lines = cohort.manifest.read_text().splitlines()
comments = [ln for ln in lines if ln.startswith("#")]
rows = list(csv.DictReader(ln for ln in lines if not ln.startswith("#")))
fixed, seen = [], set()
for row in rows:
    pid = row["patient_id"]
    if pid in needs_data or pid in seen:  # drop broken studies and the second row of a patient
        continue
    seen.add(pid)
    if row["diagnosis"] not in spec.labels.classes:
        row["diagnosis"] = truth[pid]
    if row["ct"].startswith("../"):
        row["ct"] = f"{pid}/ct"
    fixed.append(row)

fixed_manifest = cohort.root / "manifest_fixed.csv"
with fixed_manifest.open("w", newline="") as fh:
    fh.write("\n".join(comments) + "\n")
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(fixed)
print(len(rows), "rows ->", len(fixed), "rows")

# %% [markdown]
# The spec change: the MR becomes optional. A model trained with this spec gets an extra
# input `mr_present` (0 or 1) so it knows when the MR is absent (tutorial 03).

# %%
data = spec.to_dict()
for m in data["modalities"]:
    if m["name"] == "mr":
        m["required"] = False
spec_fixed = mm.StudySpec.from_dict(data)
spec_fixed.to_yaml(cohort.root / "spec_fixed.yaml")
print([(m.name, m.required) for m in spec_fixed.modalities])

# %% [markdown]
# ## Validate again

# %%
report2 = mm.validate_manifest(fixed_manifest, spec_fixed, workers=1, progress=False)
print(report2.summary())
for line in report2.lines():
    print(line)
print("\nready to train:", report2.ok)
assert report2.ok

# %%
code = medmulti("validate", fixed_manifest, "--spec", cohort.root / "spec_fixed.yaml", "--workers", 1,
                "--no-progress", "--html", "report_fixed.html")
print("exit code:", code)
assert code == 0

# %% [markdown]
# Exit code `0`: no errors (warnings, such as a tiny validation split, do not fail a run).
# `report_fixed.html` holds the same report with a thumbnail per patient, for a quick look at
# the whole cohort:

# %%
from IPython.display import HTML, display

display(HTML(Path("report_fixed.html").read_text()))

# %% [markdown]
# ## What next
#
# - Tutorial 03 trains a fusion model on a (clean) sample cohort.
# - Tutorial 04 writes a manifest and a spec for your own folder of DICOM studies.
# - The guide's [manifest page](../docs/manifest.md) lists every check and its fix.
