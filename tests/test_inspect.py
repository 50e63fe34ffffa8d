"""The study montage (Python function and `medmulti inspect`) on generated real files."""

import numpy as np
import pytest
from matplotlib.image import imread

from medmulti import StudySpec
from medmulti.cli import main
from medmulti.image import Image
from medmulti.examples.synth import affine_from_geometry, write_dicom_series, write_dicom_xray, write_nifti
from medmulti.study.picture import inspect_study, plot_preprocessed
from medmulti.study.preprocess import preprocess_study

SPEC = {
    "labels": {"column": "dx", "classes": ["a", "b"]},
    "modalities": [
        {"name": "ct", "kind": "ct", "spacing_mm": [3, 3, 3], "shape": [20, 24, 24],
         "intensity": {"windows": ["abdomen", "bone"]}},
        {"name": "mr", "kind": "mr", "register": "none"},
        {"name": "xray", "kind": "xray", "shape": [48, 48], "required": False},
    ],
}


def _ball(affine, shape, radius, value, background):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return np.where(np.linalg.norm(world, axis=-1) < radius, value, background).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    ct_aff = affine_from_geometry((3.0, 2.0, 2.0), (-30.0, -36.0, -36.0))
    write_dicom_series(_ball(ct_aff, (21, 37, 37), 25, 40, -1000), root / "ct", affine=ct_aff)
    sag = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
    mr_aff = affine_from_geometry((2.5, 2.5, 2.5), (35.0, 35.0, 35.0), direction=sag)
    write_nifti(_ball(mr_aff, (28, 28, 28), 25, 300, 0), root / "mr.nii.gz", affine=mr_aff)
    write_dicom_xray(np.tile(np.linspace(0, 4000, 80), (60, 1)), root / "cxr.dcm", window=(2000, 3000))
    spec = StudySpec.from_dict(SPEC)
    spec.to_yaml(root / "spec.yaml")
    return root


def test_montage_has_three_views_per_volume_the_mr_outline_and_the_xray(files):
    spec = StudySpec.from_yaml(files / "spec.yaml")
    ct_aff = affine_from_geometry((3.0, 2.0, 2.0), (-30.0, -36.0, -36.0))
    ct = Image(_ball(ct_aff, (21, 37, 37), 25, 40, -1000), ct_aff, (3.0, 2.0, 2.0), "CT")
    mr_aff = affine_from_geometry((2.5, 2.5, 2.5), (-35.0, -35.0, -35.0))
    mr = Image(_ball(mr_aff, (28, 28, 28), 25, 300, 0), mr_aff, (2.5, 2.5, 2.5), "MR")
    xr = Image(np.tile(np.linspace(0, 1, 80, dtype=np.float32), (60, 1)), None, (0.2, 0.2), "DX")
    results = preprocess_study({"ct": ct, "mr": mr, "xray": xr}, spec)
    fig = plot_preprocessed(results, title="p1")
    axes = fig.get_axes()
    assert len(axes) == 7  # 2 volumes x 3 views + the X-ray
    titles = [a.get_title() for a in axes]
    assert "ct (ct) axial" in titles and "mr (mr) axial" in titles and "xray (xray)" in titles
    ct_axes = [a for a in axes if a.get_title().startswith("ct") or a.get_title() in ("coronal", "sagittal")][:3]
    assert all(len(a.collections) > 0 for a in ct_axes)  # the MR outline is drawn on every CT view
    # the outline is the MR ball (radius 25 mm) drawn on the CT grid: its extent on the axial view
    path = ct_axes[0].collections[0].get_paths()[0].vertices
    width_mm = (path[:, 0].max() - path[:, 0].min()) * 3.0
    assert 40 < width_mm < 56


def test_inspect_study_writes_a_png_from_files(files, tmp_path):
    spec = StudySpec.from_yaml(files / "spec.yaml")
    out = tmp_path / "study.png"
    fig = inspect_study({"ct": files / "ct", "mr": files / "mr.nii.gz", "xray": files / "cxr.dcm"}, spec, out)
    img = imread(str(out))
    assert img.shape[0] > 200 and img.shape[1] > 600 and float(img[..., :3].std()) > 0.05
    assert len(fig.get_axes()) == 7


def test_cli_inspect_exit_codes(files, tmp_path, capsys):
    out = tmp_path / "cli.png"
    code = main(["inspect", f"ct={files / 'ct'}", f"mr={files / 'mr.nii.gz'}", "--spec", str(files / "spec.yaml"),
                 "--out", str(out)])
    assert code == 0 and out.is_file() and imread(str(out)).shape[0] > 100
    assert main(["inspect", "ct", "--spec", str(files / "spec.yaml")]) == 2  # not NAME=PATH
    assert main(["inspect", f"pet={files / 'ct'}", "--spec", str(files / "spec.yaml"),
                 "--out", str(tmp_path / "x.png")]) == 2  # not a spec modality
    assert main(["inspect", f"ct={files / 'nope'}", "--spec", str(files / "spec.yaml"),
                 "--out", str(tmp_path / "y.png")]) == 1  # missing file: a data error
    err = capsys.readouterr().err
    assert "ct" in err and "MissingFileError" in err


def test_montage_of_an_xray_alone_has_one_panel():
    spec = StudySpec.from_dict(SPEC)
    xr = Image(np.tile(np.linspace(0, 1, 80, dtype=np.float32), (60, 1)), None, (0.2, 0.2), "DX")
    fig = plot_preprocessed(preprocess_study({"xray": xr}, spec))
    assert [a.get_title() for a in fig.get_axes()] == ["xray (xray)"]
