"""Benchmark: one study (CT DICOM series + MR NIfTI in another orientation) -> 128^3 grid, 3 CT windows.

Chains compared, each run in a fresh process (so peak memory is per chain), runs
alternated between chains, medians reported:

* ``medmulti``   -- ``preprocess_study({"ct": folder, "mr": nifti}, spec)`` (medmulti.io
  readers, one SimpleITK resampling per modality straight onto the study grid,
  windows in numpy); ``register: none`` so every chain does the same work.
* ``sitk``       -- a plain SimpleITK chain, step by step as MONAI's chain does it:
  ImageSeriesReader / ReadImage, DICOMOrient("LPS"), Resample to 1 mm, Resample
  (resize) to 128^3, 3 x IntensityWindowing; MR: ReadImage, DICOMOrient, Resample
  onto the CT's 128^3 grid, percentile scaling in numpy.
* ``monai``      -- MONAI's equivalent (LoadImage, EnsureChannelFirst, Orientation,
  Spacing to 1 mm, ScaleIntensityRange x 3 / ScaleIntensityRangePercentiles,
  Resize) when ``--monai-python`` points at a Python with MONAI installed.

Extra rows: ``medmulti-read`` (the two ``read_image`` calls alone) and
``medmulti-arrays`` (``preprocess_study`` on already-read Images), and
``medmulti-rigid`` (with ``register: rigid`` for the MR).

Usage::

    python benchmarks/preprocess_study.py            # full size (300 x 512 x 512 CT, 256 x 256 x 176 MR)
    python benchmarks/preprocess_study.py --quick    # small volumes, 1 repeat, for development
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
WINDOWS = [(40.0, 80.0), (75.0, 215.0), (400.0, 1800.0)]  # brain, subdural, bone (HU)
GRID = (128, 128, 128)


# -- data ------------------------------------------------------------------------------


def _phantom(xx: np.ndarray, yy: np.ndarray, zz, ct: bool) -> np.ndarray:
    """Head-like phantom at LPS points (mm; arrays broadcast together)."""
    def ell(c, r):
        return (((xx - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((zz - c[2]) / r[2]) ** 2) <= 1.0

    shape = np.broadcast(xx, yy, zz).shape
    out = np.full(shape, -1000.0 if ct else 0.0, np.float32)
    values = (1200.0, 35.0, 5.0, 70.0) if ct else (80.0, 400.0, 900.0, 650.0)
    for (c, r), v in zip([((0, 0, 0), (75, 95, 85)), ((0, 0, 0), (68, 88, 78)), ((0, -5, 10), (12, 25, 15)),
                          ((25, 20, -10), (10, 10, 10))], values):
        out[ell(c, r)] = v
    return out


def make_data(root: Path, quick: bool, tiny: bool = False) -> dict:
    """Write the CT series and the MR NIfTI (once; reused when present)."""
    from medmulti.examples.synth import affine_from_geometry, write_dicom_series, write_nifti

    root.mkdir(parents=True, exist_ok=True)
    ct_shape = (60, 256, 256) if quick else (300, 512, 512)
    ct_spacing = (3.0, 1.0, 1.0) if quick else (0.8, 0.5, 0.5)
    mr_shape = (128, 128, 88) if quick else (256, 256, 176)
    mr_spacing = (2.0, 2.0, 2.0) if quick else (1.0, 1.0, 1.0)
    if tiny:
        ct_shape, ct_spacing, mr_shape, mr_spacing = (12, 24, 24), (16.0, 10.0, 10.0), (16, 16, 12), (16.0, 16.0, 16.0)
    info = {"ct_shape": ct_shape, "ct_spacing": ct_spacing, "mr_shape": mr_shape, "mr_spacing": mr_spacing}
    stamp = root / "data.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(info)):
        return info
    rng = np.random.default_rng(0)
    # CT: axial, centred on the head
    ct_origin = [-(ct_shape[2] - 1) * ct_spacing[2] / 2, -(ct_shape[1] - 1) * ct_spacing[1] / 2,
                 -(ct_shape[0] - 1) * ct_spacing[0] / 2]
    ct_aff = affine_from_geometry(ct_spacing, ct_origin)
    yy, xx = np.meshgrid(ct_origin[1] + np.arange(ct_shape[1]) * ct_spacing[1],
                         ct_origin[0] + np.arange(ct_shape[2]) * ct_spacing[2], indexing="ij")
    vol = np.empty(ct_shape, np.float32)
    for k in range(ct_shape[0]):
        vol[k] = _phantom(xx, yy, ct_origin[2] + k * ct_spacing[0], ct=True)
    vol += rng.normal(0, 10, vol.shape).astype(np.float32)
    write_dicom_series(np.rint(vol), root / "ct", affine=ct_aff)
    del vol
    # MR: sagittal (array axes z, y, x -> R, I, A), other field of view
    sag = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
    mr_aff = affine_from_geometry(mr_spacing, (mr_shape[0] * mr_spacing[0] / 2, 120.0, 100.0), direction=sag)
    jj, ii = np.meshgrid(np.arange(mr_shape[1]), np.arange(mr_shape[2]), indexing="ij")
    mr = np.empty(mr_shape, np.float32)
    for k in range(mr_shape[0]):
        w = (np.stack([np.full(jj.shape, k), jj, ii], -1) @ mr_aff[:3, :3].T) + mr_aff[:3, 3]
        mr[k] = _phantom(w[..., 0], w[..., 1], w[..., 2], ct=False)
    mr += rng.normal(0, 5, mr.shape).astype(np.float32)
    write_nifti(np.clip(mr, 0, None).astype(np.int16), root / "mr.nii.gz", affine=mr_aff, dtype=np.int16)
    stamp.write_text(json.dumps(info))
    return info


def spec_dict(register: str = "none", grid=GRID) -> dict:
    return {
        "labels": {"column": "dx", "classes": ["a", "b"]},
        "modalities": [
            {"name": "ct", "kind": "ct", "shape": list(grid), "spacing_mm": None,
             "intensity": {"windows": [list(w) for w in WINDOWS]}},
            {"name": "mr", "kind": "mr", "register": register},
        ],
    }


def _grid_spacing(info, grid=GRID) -> list[float]:
    """The spec spacing that makes the grid cover the CT field of view (same for every chain)."""
    return [n * s / g for n, s, g in zip(info["ct_shape"], info["ct_spacing"], grid)]


# -- chains (each runs in its own process) ---------------------------------------------


def chain_medmulti(root: Path, info: dict, mode: str, grid=GRID) -> dict:
    from medmulti import StudySpec
    from medmulti.io import read_image
    from medmulti.study.preprocess import preprocess_study

    d = spec_dict("rigid" if mode == "medmulti-rigid" else "none", grid)
    d["modalities"][0]["spacing_mm"] = _grid_spacing(info, grid)
    spec = StudySpec.from_dict(d)
    sources = {"ct": root / "ct", "mr": root / "mr.nii.gz"}
    t0 = time.perf_counter()
    c0 = _cpu_s()
    if mode == "medmulti-read":
        out = {"ct": read_image(sources["ct"]), "mr": read_image(sources["mr"], modality="MR")}
        shapes = {k: list(v.shape) for k, v in out.items()}
    elif mode == "medmulti-arrays":
        images = {"ct": read_image(sources["ct"]), "mr": read_image(sources["mr"], modality="MR")}
        t0 = time.perf_counter()
        c0 = _cpu_s()
        out = preprocess_study(images, spec)
        shapes = {k: list(v.array.shape) for k, v in out.items()}
    else:
        out = preprocess_study(sources, spec)
        shapes = {k: list(v.array.shape) for k, v in out.items()}
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0, "shapes": shapes}


def chain_sitk(root: Path, info: dict, grid=GRID) -> dict:
    import SimpleITK as sitk

    t0 = time.perf_counter()
    c0 = _cpu_s()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(root / "ct")))
    ct = sitk.DICOMOrient(reader.Execute(), "LPS")
    # to 1 mm
    size_1mm = [int(round(n * s)) for n, s in zip(ct.GetSize(), ct.GetSpacing())]
    ct1 = sitk.Resample(ct, size_1mm, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), (1.0, 1.0, 1.0),
                        ct.GetDirection(), -1000.0, sitk.sitkFloat32)
    # resize to 128^3 over the same extent
    new_spacing = [n * 1.0 / g for n, g in zip(size_1mm, grid[::-1])]
    ref = sitk.Image(list(grid[::-1]), sitk.sitkFloat32)
    ref.SetSpacing(new_spacing)
    ref.SetDirection(ct1.GetDirection())
    ref.SetOrigin([o - 0.5 + 0.5 * s for o, s in zip(ct1.GetOrigin(), new_spacing)])
    ct128 = sitk.Resample(ct1, ref, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    chans = [sitk.GetArrayFromImage(sitk.IntensityWindowing(ct128, c - w / 2, c + w / 2, 0.0, 1.0))
             for c, w in WINDOWS]
    ct_out = np.stack(chans, -1)
    mr = sitk.DICOMOrient(sitk.ReadImage(str(root / "mr.nii.gz")), "LPS")
    mr128 = sitk.GetArrayFromImage(sitk.Resample(mr, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    lo, hi = np.percentile(mr128, [1, 99])
    mr_out = np.clip((mr128 - lo) / (hi - lo), 0, 1)[..., None]
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0,
            "shapes": {"ct": list(ct_out.shape), "mr": list(mr_out.shape)}}


MONAI_CODE = r"""
import json, sys, time, resource
import numpy as np


def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
from monai.transforms import (Compose, EnsureChannelFirst, LoadImage, Orientation, Resize, ScaleIntensityRange,
                              ScaleIntensityRangePercentiles, Spacing)
root = sys.argv[1]
windows = json.loads(sys.argv[2])
warm = sys.argv[3]


def chain(root):
    base = Compose([LoadImage(image_only=True, reader="PydicomReader"), EnsureChannelFirst(), Orientation(axcodes="LPS"),
                    Spacing(pixdim=(1.0, 1.0, 1.0), mode="bilinear"), Resize((128, 128, 128), mode="trilinear")])
    ct = base(root + "/ct")
    chans = [ScaleIntensityRange(a_min=c - w / 2, a_max=c + w / 2, b_min=0.0, b_max=1.0, clip=True)(ct)
             for c, w in windows]
    mr_chain = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="LPS"),
                        Spacing(pixdim=(1.0, 1.0, 1.0), mode="bilinear"), Resize((128, 128, 128), mode="trilinear"),
                        ScaleIntensityRangePercentiles(lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True)])
    mr = mr_chain(root + "/mr.nii.gz")
    return chans, mr


chain(warm)  # imports and first-call setup, as for the other chains
base_mb = hwm()
c0 = cpu()
t0 = time.perf_counter()
chans, mr = chain(root)
dt = time.perf_counter() - t0
cpu_s = cpu() - c0
print(json.dumps({"seconds": dt, "shapes": {"ct": [len(chans)] + list(chans[0].shape[1:]), "mr": list(mr.shape)},
                  "peak_mb": hwm(), "baseline_mb": base_mb, "cpu_s": cpu_s}))
"""


def _hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB; unlike ru_maxrss it is not inherited across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_one(mode: str, root: Path, info: dict) -> dict:
    """Run one chain in this (fresh) process; peak memory is measured above a warm baseline.

    The warm-up runs the same chain on a tiny study (imports, library pages, first-call
    setup), so ``peak_mb - baseline_mb`` is what the full-size study itself costs.
    """
    warm = root / "warm"
    winfo = json.loads((warm / "data.json").read_text())
    run = chain_sitk if mode == "sitk" else (lambda r, i, grid=GRID: chain_medmulti(r, i, mode, grid))
    try:
        run(warm, winfo, grid=(8, 8, 8))
    except Exception:  # noqa: BLE001 - the warm-up only loads code; a tiny study may not register
        pass
    base = _hwm_mb()
    result = run(root, info)
    result["peak_mb"] = _hwm_mb()
    result["baseline_mb"] = base
    return result


def spawn(mode: str, root: Path, monai_python: str | None) -> dict:
    if mode == "monai":
        cmd = [monai_python, "-c", MONAI_CODE, str(root), json.dumps(WINDOWS), str(root / "warm")]
    else:
        cmd = [sys.executable, str(HERE), "--run-one", mode, "--data", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small volumes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="runs per chain (default 5, --quick 1)")
    parser.add_argument("--data", default=None, help="folder for the generated study (reused)")
    parser.add_argument("--monai-python", default=None, help="python of a venv with MONAI (optional)")
    parser.add_argument("--extra", action="store_true", help="also time read-only, arrays-only and rigid runs")
    parser.add_argument("--modes", default=None,
                        help="comma-separated chains to run (default medmulti,sitk[,monai][,extras]); sitk is always run")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.data or Path(tempfile.gettempdir()) / ("medmulti-bench-quick" if args.quick else "medmulti-bench"))
    root.mkdir(parents=True, exist_ok=True)
    if args.run_one:
        info = json.loads((root / "data.json").read_text())
        print(json.dumps(run_one(args.run_one, root, info)))
        return 0
    t = time.perf_counter()
    info = make_data(root, args.quick)
    make_data(root / "warm", True, tiny=True)
    print(f"data in {root} ({time.perf_counter() - t:.1f} s): CT {info['ct_shape']} @ {info['ct_spacing']} mm, "
          f"MR {info['mr_shape']} @ {info['mr_spacing']} mm (sagittal)")
    input_mb = {
        "int16": (np.prod(info["ct_shape"]) + np.prod(info["mr_shape"])) * 2 / 2**20,
        "float32": (np.prod(info["ct_shape"]) + np.prod(info["mr_shape"])) * 4 / 2**20,
    }
    repeats = args.repeats or (1 if args.quick else 5)
    modes = ["medmulti", "sitk"] + (["monai"] if args.monai_python else [])
    if args.extra:
        modes += ["medmulti-read", "medmulti-arrays", "medmulti-rigid"]
    if args.modes:
        modes = ["sitk"] + [m for m in args.modes.split(",") if m and m != "sitk"]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(repeats):
        order = modes if r % 2 == 0 else modes[::-1]  # alternate to spread drift and cache effects
        for mode in order:
            runs[mode].append(spawn(mode, root, args.monai_python))
    summary = {}
    for mode, rs in runs.items():
        summary[mode] = {
            "median_s": statistics.median(x["seconds"] for x in rs),
            "runs_s": [round(x["seconds"], 3) for x in rs],
            "median_cpu_s": statistics.median(x.get("cpu_s", float("nan")) for x in rs),
            "peak_mb": max(x["peak_mb"] for x in rs),
            "peak_above_baseline_mb": max(x["peak_mb"] - x.get("baseline_mb", 0.0) for x in rs),
            "shapes": rs[0]["shapes"],
        }
    ref = summary["sitk"]["median_s"]
    ref_cpu = summary["sitk"]["median_cpu_s"]
    print(f"\n{'chain':18s} {'median s':>9s} {'x sitk':>7s} {'cpu s':>7s} {'x sitk':>7s} {'peak MB':>8s} "
          f"{'+MB':>7s}  runs (s)")
    for mode, s in summary.items():
        s["ratio_vs_sitk"] = s["median_s"] / ref
        s["cpu_ratio_vs_sitk"] = s["median_cpu_s"] / ref_cpu
        print(f"{mode:18s} {s['median_s']:9.3f} {s['ratio_vs_sitk']:7.2f} {s['median_cpu_s']:7.2f} "
              f"{s['cpu_ratio_vs_sitk']:7.2f} {s['peak_mb']:8.0f} {s['peak_above_baseline_mb']:7.0f}  {s['runs_s']}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"\ninput volumes: {input_mb['int16']:.0f} MB as int16, {input_mb['float32']:.0f} MB as float32")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "input_mb": input_mb, "repeats": repeats,
                                               "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
