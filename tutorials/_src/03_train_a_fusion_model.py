# %% [markdown]
# # 03 · Train a fusion model: spec → sequence → model → fit → evaluate → compare
#
# The sample cohort is built so that **no single modality carries the whole diagnosis**: each
# patient may have a CT finding, an MR finding and an X-ray finding (each visible in one
# modality only), and `diagnosis` is `disease` when at least two are present. A perfect
# CT-only model reaches an ROC AUC of about 0.75; a model that sees all three can approach 1.0.
#
# This notebook runs the whole path by hand, so you see each piece:
#
# 1. the **study spec** says which inputs the model gets and how they are prepared;
# 2. the **preprocessing cache** holds each patient's co-registered, windowed arrays;
# 3. `mm.PatientSequence` feeds Keras `({modality: batch}, labels)` per split, keyed by patient;
# 4. `mm.build_fusion_model` builds one CNN branch per modality and fuses them;
# 5. `model.fit`, then evaluation on the test split, then single-modality models for comparison.
#
# > **Scale.** To run in about a minute on a laptop CPU, this uses 24 patients and 3 epochs, so
# > the numbers below are noisy and say little. A real run uses the full cohort
# > (`medmulti sample-data cohort/ --patients 200`) and 20+ epochs with early stopping, or
# > one call: `mm.train(manifest, spec, "runs/fusion", cache_dir="cache")` /
# > `medmulti train cohort/manifest.csv --spec cohort/spec.yaml --out runs/fusion --cache cache`.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from IPython.display import Image as ShowPNG
from IPython.display import display

import medmulti as mm
from medmulti.data import preprocess_manifest
from medmulti.models.metrics import classification_metrics
from medmulti.models.plots import plot_confusion_roc

keras.utils.set_random_seed(0)  # seeds Python, NumPy and TensorFlow
tf.config.experimental.enable_op_determinism()  # same seed, same machine -> same run
cohort = mm.make_sample_cohort("cohort_03", n_patients=24, seed=3, faults=False, overwrite=True, progress=False)
print(cohort.manifest, "-", len(cohort.patient_ids), "patients")

# %% [markdown]
# ## 1. The spec
#
# `ct` is the reference: its grid (6 mm voxels, 32³) is where the MR is resampled to, so both
# 3D inputs share one space. The CT becomes two channels (two HU windows); the MR one channel
# (percentile-normalised; its input shape is `None` in the spec because it takes the reference
# grid's); the X-ray is a 2D 64×64 input. The labels are the `diagnosis` column.

# %%
spec = mm.StudySpec.from_yaml(cohort.spec)
for m in spec.modalities:
    print(f"{m.name:5s} {m.kind:5s} {m.dims}D  input shape {m.input_shape}  intensity {m.intensity}")
print("classes:", spec.labels.classes)

# %% [markdown]
# ## 2. Preprocess into the cache
#
# Every input of every patient is read, co-registered, windowed/normalised and written to the
# cache once (one `.npy` per patient and modality, keyed by the files' content and the spec
# section, written atomically). Training then reads arrays instead of DICOM. A rerun skips what
# is cached already. Same as `medmulti preprocess cohort_03/manifest.csv --spec ... --cache cache`.

# %%
summary = preprocess_manifest(cohort.manifest, spec, "cache", workers=1, progress=False)
print(summary.summary())

# %% [markdown]
# ## 3. The sequences
#
# One `PatientSequence` per split. It checks its patients when built (a missing or broken
# input stops here with an error naming patient, modality and file, unless you choose another
# policy, see tutorial 04), then serves fixed-shape batches: a dict with one array per
# modality, and one-hot labels. The training sequence shuffles patients each epoch
# (deterministically from `seed`); validation and test do not.

# %%
common = dict(cache_dir="cache", batch_size=4, progress=False)
train = mm.PatientSequence(cohort.manifest, spec, "train", shuffle=True, seed=0, **common)
val = mm.PatientSequence(cohort.manifest, spec, "val", **common)
test = mm.PatientSequence(cohort.manifest, spec, "test", **common)
for seq in (train, val, test):
    print(seq)

inputs, labels = train[0]
print({name: batch.shape for name, batch in inputs.items()}, "labels", labels.shape)

# %% [markdown]
# What the model sees for one patient (the middle axial slice of each 3D input):

# %%
pid = train.patient_ids[0]
arrays = train.get_patient(pid)
(c1, w1), (c2, w2) = spec.modality("ct").intensity["windows"]
panels = [(f"CT, window {c1:g}/{w1:g} HU", arrays["ct"][16, :, :, 0]),
          (f"CT, window {c2:g}/{w2:g} HU", arrays["ct"][16, :, :, 1]),
          ("MR (same grid)", arrays["mr"][16, :, :, 0]), ("X-ray", arrays["xray"][:, :, 0])]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, (title, img) in zip(axes, panels):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
fig.suptitle(f"patient {pid}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The fusion model
#
# One small CNN branch per modality (3D convolutions for CT and MR, 2D for the X-ray), each
# ending in an embedding; the embeddings are fused (`"concat"` here; `"attention"` and
# `"gated"` weigh the modalities per patient) and a softmax head predicts the classes. The
# input names are the spec's modality names, so the sequence's dict batches fit directly.

# %%
model = mm.build_fusion_model(spec, fusion="concat", width=8, depth=3, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
print("inputs:", [t.name for t in model.inputs])
print("parameters:", model.count_params())

# %% [markdown]
# ## 5. Fit and evaluate

# %%
history = model.fit(train, validation_data=val, epochs=3, verbose=0)

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, key in zip(axes, ["loss", "accuracy"]):
    ax.plot(history.history[key], "o-", label="train")
    ax.plot(history.history[f"val_{key}"], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_title(key)
    ax.legend()
plt.tight_layout()
plt.show()

# %%
def predict_split(model, seq, names):
    """Labels and predicted probabilities for every patient of a (non-shuffled) sequence."""
    ys, ps = [], []
    for i in range(len(seq)):
        x, y = seq[i]
        ps.append(np.asarray(model({n: x[n] for n in names}, training=False)))
        ys.append(y)
    return np.concatenate(ys), np.concatenate(ps)


y_test, p_fusion = predict_split(model, test, spec.names)
fusion_metrics = classification_metrics(y_test, p_fusion, spec.labels.classes)
print("test patients:", len(y_test), " accuracy:", round(fusion_metrics["accuracy"], 3),
      " ROC AUC:", fusion_metrics["auc"])
plot_confusion_roc(y_test, p_fusion, spec.labels.classes, "fusion_test.png", title="fusion, test split")
display(ShowPNG("fusion_test.png"))

# %% [markdown]
# ## 6. Compare with single-modality models
#
# The same model builder makes a one-branch model with `modalities=["ct"]`. The sequences
# still yield every modality; a small wrapper passes on only the inputs a model takes.
# (`mm.train(..., modalities=["ct"])` and `medmulti train --modalities ct` do the same.)

# %%
class Only(keras.utils.PyDataset):
    """The batches of `seq`, restricted to the inputs named in `names`."""

    def __init__(self, seq, names):
        super().__init__()
        self.seq, self.names = seq, names

    def __len__(self):
        return len(self.seq)

    def __getitem__(self, i):
        x, y = self.seq[i]
        return {n: x[n] for n in self.names}, y

    def on_epoch_end(self):
        self.seq.on_epoch_end()


auc = {"fusion": fusion_metrics["auc"]}
for name in spec.names:
    keras.utils.set_random_seed(0)
    single = mm.build_fusion_model(spec, modalities=[name], width=8, depth=3, seed=0)
    single.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    single.fit(Only(train, [name]), validation_data=Only(val, [name]), epochs=3, verbose=0)
    _, p = predict_split(single, test, [name])
    auc[f"{name} only"] = classification_metrics(y_test, p, spec.labels.classes)["auc"]
    print(f"{name:5s} only: test ROC AUC {auc[f'{name} only']}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
names = list(auc)
ax.bar(names, [np.nan if auc[n] is None else auc[n] for n in names],
       color=["#2c7fb8"] + ["#a6bddb"] * (len(names) - 1))
ax.axhline(0.5, ls="--", color="grey", lw=0.8)
ax.set_ylim(0, 1)
ax.set_ylabel("test ROC AUC")
ax.set_title(f"{len(y_test)} test patients, 3 epochs: an illustration, not evidence")
plt.tight_layout()
plt.show()

# %% [markdown]
# With 5 test patients one patient more or less correctly ranked moves an AUC by about 0.17, and
# 3 epochs on 14 patients are too few to learn a finding; so these bars change with the seed and
# say nothing about which model is better. What the notebook shows is the procedure: same data,
# same split, same builder, one branch or three. With the full cohort and real training
# (`medmulti train --modalities ...` for each, 20+ epochs), compare the test AUCs the same way;
# only the fusion model can see all three findings. To save and reuse a
# model, `mm.train` writes a run folder (the best checkpoint `model.keras`, `history.csv`,
# `metrics.json`, plots and a run card), and `mm.evaluate(run_dir)` / `mm.predict(run_dir, ...)`
# score it later; see the [models page](../docs/models.md) of the guide.
