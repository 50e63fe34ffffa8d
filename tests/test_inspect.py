"""The study montage (Python function and `medmulti inspect`) on generated real files."""

import numpy as np
import pytest
from matplotlib.image import imread

from medmulti import StudySpec
from medmulti.cli import main
from medmulti.examples.synth import affine_from_geometry, write_dicom_series, write_dicom_xray, write_nifti
from medmulti.image import Image
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


def _first_lines(fig):
    return [a.get_title().split("\n")[0] for a in fig.get_axes()]


def test_montage_has_three_views_per_volume_the_checkerboard_the_mr_outline_and_the_xray(files):
    spec = StudySpec.from_yaml(files / "spec.yaml")
    ct_aff = affine_from_geometry((3.0, 2.0, 2.0), (-30.0, -36.0, -36.0))
    ct = Image(_ball(ct_aff, (21, 37, 37), 25, 40, -1000), ct_aff, (3.0, 2.0, 2.0), "CT")
    mr_aff = affine_from_geometry((2.5, 2.5, 2.5), (-35.0, -35.0, -35.0))
    mr = Image(_ball(mr_aff, (28, 28, 28), 25, 300, 0), mr_aff, (2.5, 2.5, 2.5), "MR")
    xr = Image(np.tile(np.linspace(0, 1, 80, dtype=np.float32), (60, 1)), None, (0.2, 0.2), "DX")
    results = preprocess_study({"ct": ct, "mr": mr, "xray": xr}, spec)
    fig = plot_preprocessed(results, title="p1")
    axes = fig.get_axes()
    assert len(axes) == 10  # 2 volumes x 3 views, the CT | MR checkerboard x 3, the X-ray
    titles = _first_lines(fig)
    assert "ct (ct) axial" in titles and "mr (mr) axial" in titles and "xray (xray)" in titles
    assert "ct | mr checkerboard axial" in titles
    ct_axes = axes[:3]
    assert all(len(a.collections) > 0 for a in ct_axes)  # the MR outline is drawn on every CT view
    # already preprocessed arrays: the CT is shown in the widest of the spec's windows, named in every title
    assert all("bone window C400 W1800 HU (spec window 2)" in a.get_title() for a in ct_axes)
    # the outline is the MR ball (radius 25 mm) drawn on the CT grid: its extent on the axial view
    path = ct_axes[0].collections[0].get_paths()[0].vertices
    width_mm = (path[:, 0].max() - path[:, 0].min()) * 3.0
    assert 40 < width_mm < 56
    # the checkerboard alternates the two: RGB squares, some grey (CT), some tinted (MR)
    board = axes[6].images[0].get_array()
    assert board.ndim == 3 and board.shape[-1] == 3
    inside = board[board.max(axis=-1) > 0.05]
    grey = np.isclose(inside[:, 0], inside[:, 2])
    assert 0.2 < grey.mean() < 0.8
    assert len(plot_preprocessed(results, fusion=None).get_axes()) == 7


def test_a_modality_covering_little_of_the_grid_says_so(files):
    spec = StudySpec.from_yaml(files / "spec.yaml")
    ct_aff = affine_from_geometry((3.0, 2.0, 2.0), (-30.0, -36.0, -36.0))
    ct = Image(_ball(ct_aff, (21, 37, 37), 25, 40, -1000), ct_aff, (3.0, 2.0, 2.0), "CT")
    # an MR slab 8 x 2.5 = 20 mm thick, wider than the grid in-plane: about 1/3 of the 60 mm grid
    mr_aff = affine_from_geometry((2.5, 2.5, 2.5), (-50.0, -50.0, -14.75))  # LPS origin: z in -15..5 mm
    mr = Image(_ball(mr_aff, (8, 41, 41), 25, 300, 0), mr_aff, (2.5, 2.5, 2.5), "MR")
    fig = inspect_study({"ct": ct, "mr": mr}, spec)
    mr_title = next(a.get_title() for a in fig.get_axes() if a.get_title().startswith("mr (mr) axial"))
    pct = int(mr_title.split("field of view covers ")[1].split("%")[0])
    assert 25 <= pct <= 42
    ct_title = fig.get_axes()[0].get_title()
    assert "field of view" not in ct_title  # the CT covers its own grid
    mr_axes = [a for a in fig.get_axes()[3:6]]
    assert any(len(a.images) == 2 for a in mr_axes)  # the uncovered part is shaded, not left black
    assert "outside the modality's field of view" in fig.get_supxlabel()


def test_inspect_study_writes_a_png_from_files(files, tmp_path):
    spec = StudySpec.from_yaml(files / "spec.yaml")
    out = tmp_path / "study.png"
    fig = inspect_study({"ct": files / "ct", "mr": files / "mr.nii.gz", "xray": files / "cxr.dcm"}, spec, out)
    img = imread(str(out))
    assert img.shape[0] > 200 and img.shape[1] > 600 and float(img[..., :3].std()) > 0.05
    assert len(fig.get_axes()) == 10


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


def _luma(a):
    a = np.asarray(a, np.float64)
    return a if a.ndim == 2 else a[..., :3] @ np.array([0.2126, 0.7152, 0.0722])


def _assert_contrast(shown, body, where):
    """Inside the body (eroded) the pixels vary, and the body stands out from what is around it."""
    from scipy.ndimage import binary_dilation, binary_erosion

    inner, outer = binary_erosion(body, iterations=2), ~binary_dilation(body, iterations=2)
    assert inner.sum() > 100 and outer.sum() > 100, where
    assert shown[inner].std() > 0.015, where  # soft tissue (40 HU) and the organ (60 HU) differ by 0.05
    assert shown[inner].mean() - shown[outer].mean() > 0.2, where


def test_the_readme_picture_shows_the_anatomy_in_every_panel(tmp_path, monkeypatch):
    """docs/img/make_readme_picture.py on the sample cohort: no blank panel, the window named."""
    import runpy
    from pathlib import Path

    from medmulti.intensity import foreground_mask
    from medmulti.study import picture

    seen = {}
    real = picture.plot_preprocessed

    def spy(results, **kwargs):
        seen["results"], seen["fig"] = results, real(results, **kwargs)
        return seen["fig"]

    monkeypatch.setattr(picture, "plot_preprocessed", spy)
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "docs" / "img" / "make_readme_picture.py"))
    out = script["main"](tmp_path / "readme.png")
    png = imread(str(out))
    assert png.shape[0] > 800 and png.shape[1] > 1000
    res, fig = seen["results"], seen["fig"]
    ct, mr, xr = res["ct"], res["mr"], res["xray"]
    assert min(ct.array.shape[:3]) >= 96  # fine enough to see structure
    # body masks from the data: the CT above -100 HU (the spec's bone window, not the one shown), the MR's Otsu
    bone = [list(w) for w in ct.meta["intensity"]["windows"]].index([400.0, 1000.0])
    body = {"ct": ct.array[..., bone] > 0, "mr": foreground_mask(mr.array[..., 0])}
    assert 0.05 < body["ct"].mean() < 0.6 and 0.05 < body["mr"].mean() < 0.6
    z, y, x = (int(np.rint((n - 1) / 2)) for n in ct.array.shape[:3])  # the grid centre, on every row

    def views(v):
        return [v[z], v[:, y, :], v[:, :, x]]

    axes = fig.get_axes()
    rows = {"ct": (axes[0:3], body["ct"]), "mr": (axes[3:6], body["mr"]), "ct | mr": (axes[6:9], body["ct"])}
    for row, (row_axes, mask) in rows.items():
        for ax, m in zip(row_axes, views(mask)):
            shown = _luma(ax.images[0].get_array())
            assert shown.shape == m.shape
            _assert_contrast(shown, m, f"{row}: {ax.get_title()!r}")
            if row != "mr":
                assert "soft tissue window C50 W400 HU, display only" in ax.get_title()
    xray_ax = axes[9]
    _assert_contrast(_luma(xray_ax.images[0].get_array()), foreground_mask(xr.array[..., 0]), "xray")
    assert axes[0].get_title().startswith("ct (ct) axial") and axes[6].get_title().startswith("ct | mr checkerboard")
