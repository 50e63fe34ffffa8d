# %% [markdown]
# # 01 · Read a DICOM series, a NIfTI volume and an X-ray; look at geometry; apply CT windows
#
# This tutorial uses **real files** that ship with pydicom and nibabel (installed with
# medmulti, nothing is downloaded):
#
# | what | file |
# | --- | --- |
# | a CT DICOM series (5 slices, a down-sampled clinical scan) | `pydicom/data/test_files/dicomdirtests/98892001/CT5N/` |
# | a full-resolution CT slice | `pydicom/data/test_files/CT_small.dcm` |
# | an MR NIfTI volume | `nibabel/tests/data/anatomical.nii` |
# | a computed radiography (CR) X-ray (a 16×16 thumbnail) | `pydicom/data/test_files/dicomdirtests/77654033/CR1/6154` |
#
# You will see:
#
# 1. `mm.read_image` turns a file or a series folder into an `Image`: an array, its geometry
#    in LPS millimetres, and metadata without identifying values;
# 2. the geometry convention (the same as SimpleITK's), checked against SimpleITK itself;
# 3. how strict the readers are: a series with a missing slice or mixed orientations is refused
#    with an error naming the file, not read into a silently wrong volume;
# 4. CT windows (Hounsfield units → display/model values in `[0, 1]`), the NIfTI volume and
#    the X-ray, as pictures.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pydicom.data
import SimpleITK as sitk
from nibabel.testing import data_path as NIBABEL_DATA

import medmulti as mm
from medmulti.geometry import orientation_codes

TEST_FILES = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # pydicom's bundled files
print("medmulti", mm.__version__)

# %% [markdown]
# ## 1. A CT DICOM series
#
# Give `read_image` the folder. It reads every file's header, keeps the image series, sorts the
# slices along the slice normal (not by file name or InstanceNumber), checks that they form one
# regular volume, and decodes every pixel now (a corrupt slice fails here, not at training
# step 9000). CT values are Hounsfield units after each slice's RescaleSlope/RescaleIntercept.

# %%
series_dir = TEST_FILES / "dicomdirtests" / "98892001" / "CT5N"
ct = mm.read_image(series_dir)

print("modality   ", ct.modality)
print("array      ", ct.array.shape, ct.array.dtype, "axes (z, y, x) = (slice, row, column)")
print("spacing mm ", ct.spacing, "in array axis order")
print("HU range   ", float(ct.array.min()), "to", float(ct.array.max()))
print("orientation", orientation_codes(ct.affine), "(the LPS direction each array axis points to)")
print("affine (index (z, y, x, 1) -> LPS mm):")
print(np.round(ct.affine, 3))

# %% [markdown]
# `ct.meta` holds only non-identifying metadata (how the pixels were encoded, the rescale, the
# header window...). Patient names, IDs, dates and UIDs are never copied into an `Image`, so
# you can log it, cache it, or paste it into an issue.

# %%
for key, value in sorted(ct.meta.items()):
    print(f"{key:16s} {value}")

# %% [markdown]
# ### The geometry convention, checked against SimpleITK
#
# medmulti's array and geometry are what SimpleITK gives for the same files:
# `array == sitk.GetArrayFromImage(...)`, and `affine` is ITK's origin, spacing and direction
# with the axis order reversed into array order. Let's check it on this series.

# %%
reader = sitk.ImageSeriesReader()
reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
itk = reader.Execute()

from medmulti.image import affine_from_itk

print("same voxels :", np.array_equal(ct.array, sitk.GetArrayFromImage(itk)))
print("same affine :", np.allclose(ct.affine, affine_from_itk(itk.GetOrigin(), itk.GetSpacing(), itk.GetDirection()),
                                   atol=1e-4))
# spacing and direction columns are in array order (z, y, x): ITK's (x, y, z) reversed
print("same spacing:", np.allclose(ct.spacing[::-1], itk.GetSpacing(), atol=1e-4))
print("same axes   :", np.allclose(ct.direction[:, ::-1], np.reshape(itk.GetDirection(), (3, 3)), atol=1e-5))
assert np.array_equal(ct.array, sitk.GetArrayFromImage(itk))  # the convention holds (checked on every run)

# the world position (LPS mm) of the last voxel, both ways
last = np.array(ct.shape) - 1
print("last voxel   :", np.round(ct.index_to_world(last), 3),
      np.round(itk.TransformIndexToPhysicalPoint([int(i) for i in last[::-1]]), 3))

# %% [markdown]
# ## 2. Strict by default: broken series are refused, with the file named
#
# pydicom also ships a CT series with slices missing (`77654033/CT2`: the positions jump) and an
# MR series that mixes orientations (`98892003/MR700`: a localizer among the slices). Many
# readers stack such files into a volume anyway, and the model trains on a distorted patient.
# medmulti raises a `SeriesGeometryError` that names the files and says how to fix it.
# Every medmulti error is a subclass of `mm.MedmultiError`, and no message ever contains a
# value read from a header.

# %%
for name in ["77654033/CT2", "98892003/MR700"]:
    try:
        mm.read_image(TEST_FILES / "dicomdirtests" / name)
    except mm.SeriesGeometryError as err:
        print(f"{name}: {type(err).__name__}")
        print(f"   {err}\n")

# %% [markdown]
# In a script, catch `mm.MedmultiError` and read `err.path`, `err.keyword` and `err.hint`.
# Before training, `medmulti validate` finds all such problems in a cohort at once
# (tutorial 02).
#
# ## 3. CT windows
#
# A CT holds Hounsfield units from about -1000 (air) to over +1000 (bone). A *window*
# (center, width) maps the values of interest onto `[0, 1]` (the DICOM VOI LUT function,
# PS3.3 C.11.2.1.2). medmulti knows the usual presets as `mm.CT_WINDOWS`; a study spec
# asks for several windows of one CT, which become the input channels of the model.

# %%
for name, (center, width) in mm.CT_WINDOWS.items():
    print(f"{name:14s} center {center:7.1f} HU   width {width:7.1f} HU")

# %%
slice_ct = mm.read_image(TEST_FILES / "CT_small.dcm")  # one full-resolution axial slice
hu = slice_ct.array[0]
names = ["soft_tissue", "lung", "bone", "brain"]
fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.4))
axes[0].imshow(hu, cmap="gray")
axes[0].set_title("raw HU (min..max)")
for ax, name in zip(axes[1:], names):
    center, width = mm.CT_WINDOWS[name]
    ax.imshow(mm.apply_window(hu, center, width), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name} ({center:g}/{width:g})")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# The values are the DICOM window function, exactly: a pixel at the lower edge of the window
# is 0, one above the upper edge is 1. Several windows stacked are the channels a model sees:

# %%
from medmulti.intensity import window_channels

channels = window_channels(hu, [[40, 80], [60, 160]])  # two soft-tissue windows stacked as channels
print(channels.shape, channels.dtype, float(channels.min()), float(channels.max()))
center, width = 40, 80
print("below the window ->", mm.apply_window(np.array([center - width]), center, width)[0],
      "  above ->", mm.apply_window(np.array([center + width]), center, width)[0])

# %% [markdown]
# ## 4. A NIfTI volume
#
# NIfTI files store their affine in RAS (left→**R**ight, posterior→**A**nterior,
# inferior→**S**uperior); DICOM uses LPS. `read_image` converts, so every `Image` is in LPS
# and in array order `(z, y, x)` whatever the file was. NIfTI has no modality field: say
# which one it is (default `"MR"`).

# %%
mr = mm.read_image(Path(NIBABEL_DATA) / "anatomical.nii", modality="MR")
print(mr.modality, mr.array.shape, "spacing", mr.spacing, "orientation", orientation_codes(mr.affine))

# the same file through SimpleITK: same array, same geometry
itk_mr = sitk.ReadImage(str(Path(NIBABEL_DATA) / "anatomical.nii"))
print("same as SimpleITK:", np.allclose(mr.array, sitk.GetArrayFromImage(itk_mr)),
      np.allclose(mr.origin, itk_mr.GetOrigin(), atol=1e-3))

# %% [markdown]
# This file is stored in an unusual layout: its array axes point Superior, Anterior, Left
# (`SAL`). `reorient_canonical` permutes and flips the axes (no interpolation) into the canonical
# axial layout `SPL` (slices inferior→superior, rows anterior→posterior, columns right→left),
# and changes the affine with it, so every voxel keeps its world position.

# %%
from medmulti.geometry import reorient_canonical

mr_c = reorient_canonical(mr)
print(orientation_codes(mr.affine), mr.shape, "->", orientation_codes(mr_c.affine), mr_c.shape)
point = mr.index_to_world([10, 20, 15])  # a voxel's position in LPS mm
i_old = np.round(mr.world_to_index(point)).astype(int)
i_new = np.round(mr_c.world_to_index(point)).astype(int)
print("same voxel value at the same world point:", mr.array[tuple(i_old)] == mr_c.array[tuple(i_new)])
assert mr.array[tuple(i_old)] == mr_c.array[tuple(i_new)]

# %% [markdown]
# Three orthogonal slices through the centre, in the radiological convention (patient left on
# the viewer's right, superior at the top). The `aspect` of each picture is the ratio of the
# voxel sizes, so anatomy is not stretched when the voxels are not cubes.

# %%
z, y, x = (s // 2 for s in mr_c.shape)
sz, sy, sx = mr_c.spacing
views = [
    ("axial", mr_c.array[z], "upper", sy / sx),
    ("coronal", mr_c.array[:, y, :], "lower", sz / sx),
    ("sagittal", mr_c.array[:, :, x], "lower", sz / sy),
]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
for ax, (title, img, origin, aspect) in zip(axes, views):
    ax.imshow(img, cmap="gray", origin=origin, aspect=aspect)
    ax.set_title(f"{title} {img.shape}")
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. An X-ray
#
# A projection radiograph is 2D `(row, column)`. Its pixels have no position in the patient's
# 3D space, so `affine` is `None`; `spacing` is the pixel size (ImagerPixelSpacing when the
# header has no PixelSpacing; `meta["spacing_source"]` says which). MONOCHROME1 images are
# inverted by the reader, so larger always means brighter (more attenuation).

# %%
xray = mm.read_image(TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154")
print(xray.modality, xray.array.shape, "affine:", xray.affine, "spacing", xray.spacing)
print({k: xray.meta[k] for k in ("photometric", "inverted", "spacing_source", "view_position") if k in xray.meta})

from medmulti.intensity import normalize_xray, voi_from_meta

voi = voi_from_meta(xray.meta)  # the header's window / VOI LUT (already mapped through the inversion)
print("header window (center, width):", voi["window"])
by_header = normalize_xray(xray.array, method="voi", window=voi["window"], lut=voi["lut"])
by_percentiles = normalize_xray(xray.array, method="percentile", percentiles=(1, 99))
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, (title, img) in zip(axes, [("values after the modality LUT", xray.array),
                                   ("header window (method='voi')", by_header),
                                   ("1st-99th percentiles", by_percentiles)]):
    ax.imshow(img, cmap="gray", vmin=0 if img is not xray.array else None, vmax=1 if img is not xray.array else None)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# This bundled file is a 16×16 thumbnail of a radiograph: its header window (2800 wide) was set
# for the full image, so on the thumbnail's narrow range of values it looks flat. The spec
# chooses per X-ray input: `method: voi` (the header's window or VOI LUT, falling back to
# percentiles when there is none) or `method: percentile`.

# %% [markdown]
# ## What next
#
# - Tutorial 02 validates a whole cohort (a manifest CSV and a study spec) before training.
# - The [readers page](../docs/readers.md) of the guide lists every format and rule;
#   [troubleshooting](../docs/troubleshooting.md) explains every error class.
# - `mm.preprocess_study` and `mm.inspect_study` put the modalities of one patient on one
#   grid (co-registration) and draw them; tutorial 03 uses them through the sequence.
