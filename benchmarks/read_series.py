"""Benchmark medmulti's readers against SimpleITK, nibabel and a plain pydicom loop.

Generates (once, cached under ``--data-dir``):

* a 300-slice 512 x 512 int16 CT series, uncompressed (explicit VR little endian);
* the same series as JPEG 2000 lossless (encoded by pydicom with pylibjpeg-openjpeg);
* the uncompressed series again with a real scanner header: every slice is pydicom's
  ``CT_small.dcm`` (258 elements, sequences included) with its geometry and pixels
  replaced, since the synthetic slices carry only ~32 elements and header parsing
  grows with the element count;
* a 256 x 256 x 176 MR volume as ``.nii.gz``, once as int16 and once as float32
  (the same noisy values; float32 mantissas compress far less).

Then times each reader on each input, alternating readers within every round so
machine load affects them alike, and prints medians and ratios to SimpleITK (wall time,
and CPU time: this process's, and for medmulti's JPEG 2000 pool its workers' too); then
the peak memory of one read by each reader, each in a fresh process: the peak resident
set size during a second read above the size before it (the first read of the same
input loads the code it runs and is freed; ``/proc/self/status`` after resetting the
peak with ``/proc/self/clear_refs``; every page of the output is touched inside the
window, so memory a reader maps lazily counts too),
relative to the float32 output volume. Worker processes' own memory is not counted.

The JPEG 2000 series is also read by medmulti from a script without an
``if __name__ == "__main__":`` guard (``j2k_noguard``): such a script cannot start
worker processes, so medmulti decodes in its own process (in threads where SimpleITK
can). Each round runs that script in a fresh interpreter (SimpleITK is imported and one
single-file read loads pydicom's decoder, untimed, as both are loaded here; the series
read is timed inside the script) and SimpleITK here.

Usage::

    python benchmarks/read_series.py            # full size, 5 rounds
    python benchmarks/read_series.py --quick    # 40 slices of 256 x 256, 2 rounds (smoke test)
    python benchmarks/read_series.py --only nii nii_f32 --rounds 9   # the .nii.gz inputs alone
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(data_dir: Path, n_slices: int, size: int, mr_shape: tuple[int, int, int],
             need: frozenset[str] = frozenset({"raw", "j2k", "nii", "nii_f32", "real"})) -> dict[str, Path]:
    """Write the benchmark inputs named in ``need`` (skipped when present)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    from medmulti.examples import synth

    raw, j2k = data_dir / "ct_raw", data_dir / "ct_j2k"
    nii = data_dir / "mr.nii.gz"
    nii_f32 = data_dir / "mr_f32.nii.gz"
    rng = np.random.default_rng(0)
    if need & {"raw", "j2k", "real"} and not (raw / "done").exists():
        # a smooth phantom plus noise: realistic compressibility for JPEG 2000
        z, y, x = np.mgrid[0:n_slices, 0:size, 0:size].astype(np.float32)
        c = size / 2
        body = ((x - c) ** 2 + (y - c) ** 2) < (0.42 * size) ** 2
        vol = np.where(body, 40.0 + 30 * np.sin(z / 9.0), -1000.0)
        vol += rng.normal(0, 15, vol.shape)
        affine = synth.affine_from_geometry((1.0, 0.7, 0.7), (-180.0, -180.0, -150.0))
        order = rng.permutation(n_slices)
        synth.write_dicom_series(vol, raw, affine=affine, order=order)
        (raw / "done").write_text("ok")
        del vol, z, y, x
    if "j2k" in need and not (j2k / "done").exists():
        j2k.mkdir(parents=True, exist_ok=True)
        for p in sorted(raw.glob("*.dcm")):
            if (j2k / p.name).exists():
                continue
            ds = pydicom.dcmread(p)
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
            ds.save_as(j2k / p.name)
        (j2k / "done").write_text("ok")
    if "nii" in need and not nii.exists():
        vol = rng.normal(300, 80, mr_shape).clip(0, 4000).astype(np.int16)
        synth.write_nifti(vol, nii, dtype=np.int16)
    if "nii_f32" in need and not nii_f32.exists():
        vol = np.random.default_rng(1).normal(300, 80, mr_shape).clip(0, 4000).astype(np.float32)
        synth.write_nifti(vol, nii_f32, dtype=np.float32)
    real = data_dir / "ct_realhdr"
    if "real" in need and not (real / "done").exists():
        _write_real_header_series(raw, real)
    return {"raw": raw, "j2k": j2k, "nii": nii, "nii_f32": nii_f32, "real": real}


def _write_real_header_series(raw: Path, out: Path) -> None:
    """Re-write the uncompressed series with CT_small.dcm's full header per slice."""
    import copy

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for p in sorted(raw.glob("*.dcm")):
        src = pydicom.dcmread(p)
        ds = copy.deepcopy(template)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series
        for kw in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
                   "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
                   "RescaleIntercept", "InstanceNumber", "PixelData"):
            if kw in src:
                setattr(ds, kw, src[kw].value)
        ds.SliceLocation = float(src.ImagePositionPatient[2])
        ds.save_as(out / p.name, enforce_file_format=True)
    (out / "done").write_text("ok")


class _SitkArray:
    """A view of a SimpleITK image's buffer that keeps the image alive (a bare view dangles)."""

    def __init__(self, img) -> None:
        import SimpleITK as sitk

        self.img = img
        self.array = sitk.GetArrayViewFromImage(img)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape


def _sitk_series(folder: Path):
    import SimpleITK as sitk

    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return _SitkArray(reader.Execute())


def _sitk_file(path: Path):
    import SimpleITK as sitk

    return _SitkArray(sitk.ReadImage(str(path)))


def _pydicom_loop(folder: Path):
    """The plain approach: read every file fully, sort by position, stack, rescale."""
    import pydicom

    slices = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    vol = np.stack([ds.pixel_array for ds in slices]).astype(np.float32)
    for k, ds in enumerate(slices):
        vol[k] = vol[k] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return vol


def _nibabel(path: Path):
    import nibabel as nib

    return np.asanyarray(nib.load(str(path)).dataobj).astype(np.float32)


def _medmulti(path: Path):
    from medmulti.io import read_image

    return read_image(path).array


_UNGUARDED = """\
import json, sys, time
from pathlib import Path
import SimpleITK  # medmulti's JPEG 2000 series decoder: loaded untimed, as in the parent
from medmulti.io import read_image
folder = Path(sys.argv[1])
read_image(sorted(folder.glob("*.dcm"))[0])  # loads pydicom's decoder (untimed)
w, c = time.perf_counter(), time.process_time()
read_image(folder)
print(json.dumps({"wall": time.perf_counter() - w, "cpu": time.process_time() - c}))
"""


def _medmulti_unguarded(path: Path) -> tuple[float, float]:
    """medmulti in a fresh script without a main guard: (wall s, CPU s) of its series read."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "unguarded.py"
        script.write_text(_UNGUARDED)
        proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, check=True)
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    return rec["wall"], rec["cpu"]


_medmulti_unguarded.self_timed = True  # type: ignore[attr-defined]


def warm_memory(gib: float) -> None:
    """Touch ``gib`` GiB once, untimed, then free it.

    On a freshly booted virtual machine the first touch of guest memory is slow (the
    hypervisor backs it lazily): 300 MB volumes then take 0.1-0.9 s to fault in at
    random, swamping the readers' differences. Touching memory once first makes the
    rounds comparable; it favours no reader.
    """
    chunk = 2**28  # 256 MiB
    for _ in range(int(gib * 2**30 // chunk)):
        a = np.ones(chunk // 4, np.float32)
        del a


def _pool_cpu() -> float:
    """CPU seconds of medmulti's JPEG 2000 worker processes so far (0 without a pool)."""
    from medmulti.io import pixels

    pool = getattr(pixels, "_POOL", None)
    total = 0.0
    for proc in (getattr(pool, "_processes", None) or {}).values():
        try:
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def time_round(fn, arg) -> tuple[float, float]:
    """(wall s, CPU s) of one call; CPU time counts this process and the decoding pool's workers."""
    gc.collect()
    if getattr(fn, "self_timed", False):
        return fn(arg)
    c0, k0 = time.process_time(), _pool_cpu()
    t0 = time.perf_counter()
    out = fn(arg)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0 + max(0.0, _pool_cpu() - k0)
    del out
    return dt, cpu


def _rss_kib() -> tuple[int, int]:
    status = open("/proc/self/status").read()
    return tuple(int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) for key in ("VmRSS", "VmHWM"))


def _measure_peak(fn_name: str, path: Path) -> None:
    """In a fresh process: the peak resident memory of a second read above the size before it."""
    import nibabel  # noqa: F401  - every reader's library is imported before the baseline
    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401

    import medmulti.io  # noqa: F401

    fn = globals()[fn_name]
    fn(path)  # a first read, dropped at once: loads the code it runs (resident too) and warms the pools
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current VmRSS
    except OSError:
        pass
    base, _ = _rss_kib()
    out = fn(path)
    flat = np.asarray(getattr(out, "array", out)).reshape(-1)  # touch every page of the output
    float(flat[:: max(1, 4096 // flat.itemsize)].sum())
    _, peak = _rss_kib()
    print(json.dumps({"peak_bytes": (peak - base) * 1024, "float32_bytes": int(np.prod(out.shape)) * 4}))


def peak_memory(fn, arg) -> tuple[int, int]:
    """Peak resident bytes of one call of ``fn`` in a fresh process, and the output's float32 bytes."""
    proc = subprocess.run([sys.executable, __file__, "--peak-of", fn.__name__, str(arg)],
                          capture_output=True, text=True, check=True)
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    return rec["peak_bytes"], rec["float32_bytes"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small inputs and 2 rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per reader (default 5, quick 2)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where inputs are generated and cached")
    parser.add_argument("--warm-memory", type=float, default=8.0, metavar="GIB",
                        help="touch this much memory once before timing (default 8; 0 skips)")
    parser.add_argument("--skip-pydicom", action="store_true", help="skip the slow plain pydicom loop")
    parser.add_argument("--only", nargs="+", default=None,
                        choices=["raw", "real", "j2k", "j2k_noguard", "nii", "nii_f32"],
                        help="time (and generate) only these inputs")
    parser.add_argument("--peak-of", nargs=2, default=None, help=argparse.SUPPRESS)  # internal: one measured read
    args = parser.parse_args(argv)
    if args.peak_of:
        _measure_peak(args.peak_of[0], Path(args.peak_of[1]))
        return 0
    rounds = args.rounds or (2 if args.quick else 5)
    if args.quick:
        n, size, mr = 40, 256, (64, 128, 128)
    else:
        n, size, mr = 300, 512, (176, 256, 256)
    data_dir = args.data_dir or Path("/tmp") / ("medmulti-io-bench-quick" if args.quick else "medmulti-io-bench")
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    need = frozenset(args.only or ("raw", "j2k", "nii", "nii_f32", "real")) | (
        {"j2k"} if args.only and "j2k_noguard" in args.only else set())
    paths = generate(data_dir, n, size, mr, need)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s under {data_dir}")
    if args.warm_memory > 0:
        warm_memory(args.warm_memory)
    print(f"CT series: {n} slices of {size}x{size} int16; MR: {mr[::-1]} .nii.gz, int16 and float32; "
          f"load average {os.getloadavg()[0]:.1f}")

    cases = {
        "series uncompressed": (
            paths["raw"],
            {"medmulti": _medmulti, "simpleitk": _sitk_series, "pydicom loop": _pydicom_loop},
        ),
        "series uncompressed, real CT header": (
            paths["real"],
            {"medmulti": _medmulti, "simpleitk": _sitk_series, "pydicom loop": _pydicom_loop},
        ),
        "series JPEG 2000 lossless": (
            paths["j2k"],
            {"medmulti": _medmulti, "simpleitk": _sitk_series, "pydicom loop": _pydicom_loop},
        ),
        "series JPEG 2000 lossless, script without a main guard": (
            paths["j2k"],
            {"medmulti": _medmulti_unguarded, "simpleitk": _sitk_series},
        ),
        "nii.gz": (paths["nii"], {"medmulti": _medmulti, "simpleitk": _sitk_file, "nibabel": _nibabel}),
        "nii.gz float32": (paths["nii_f32"], {"medmulti": _medmulti, "simpleitk": _sitk_file, "nibabel": _nibabel}),
    }
    keys = {"series uncompressed": "raw", "series uncompressed, real CT header": "real",
            "series JPEG 2000 lossless": "j2k", "series JPEG 2000 lossless, script without a main guard": "j2k_noguard",
            "nii.gz": "nii", "nii.gz float32": "nii_f32"}
    if args.only:
        cases = {case: v for case, v in cases.items() if keys[case] in args.only}
    if args.skip_pydicom:
        for _, readers in cases.values():
            readers.pop("pydicom loop", None)
    results = {}
    for case, (path, readers) in cases.items():
        cold = time_round(readers["medmulti"], path)[0]  # first call: imports, process pool start
        times = {name: [] for name in readers}
        for _ in range(rounds):
            for name, fn in readers.items():
                times[name].append(time_round(fn, path))
        med = {name: statistics.median(w for w, _ in v) for name, v in times.items()}
        cpu = {name: statistics.median(c for _, c in v) for name, v in times.items()}
        # each round's ratio to SimpleITK's time in the same round, then the median
        ratio = {name: statistics.median(a[0] / b[0] for a, b in zip(v, times["simpleitk"])) for name, v in times.items()}
        cpu_ratio = {name: statistics.median(a[1] / b[1] for a, b in zip(v, times["simpleitk"]))
                     for name, v in times.items()}
        peaks = {name: peak_memory(fn, path) for name, fn in readers.items() if not getattr(fn, "self_timed", False)}
        results[case] = (med, cold, {name: p / v for name, (p, v) in peaks.items()})
        print(f"\n{case}  (median of {rounds}; medmulti first call {cold:.3f} s; load average "
              f"{os.getloadavg()[0]:.1f})")
        for name, m in med.items():
            peak, vol_bytes = peaks.get(name, (None, None))
            memory = "" if peak is None else (f"   peak memory {peak / 2**20:5.0f} MiB = {peak / vol_bytes:.2f}x "
                                              "the float32 volume")
            print(f"  {name:14s} {m:8.3f} s {ratio[name]:5.2f}x SimpleITK   CPU {cpu[name]:7.3f} s "
                  f"{cpu_ratio[name]:5.2f}x{memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
