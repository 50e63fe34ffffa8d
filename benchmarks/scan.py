"""Scan throughput: files/s of ``medmulti.scanning`` on the sample cohort, against a plain pydicom walk.

Generates (once, cached in ``--data``) a clean sample cohort of ``--patients`` patients
(40-slice CT series + X-ray DICOM + MR NIfTI per patient: 42 files, 42,004 with the
cohort's own CSV/YAML/JSON files for 1,000 patients), then times, alternating, ``--repeat``
times each:

* ``scan``: ``medmulti.scanning.scan(root, spec, nifti={"mr": "{key}/mr.nii.gz"})`` (headers
  only, every file recognised by content, series grouped and checked, one series chosen
  per modality and patient; no output written) with each worker count;
* ``pydicom``: the walk a user would write: ``os.walk`` + ``pydicom.dcmread(path,
  stop_before_pixels=True)`` in one process, non-DICOM files skipped on
  ``InvalidDicomError``, (PatientID, SeriesInstanceUID) collected per file.

Prints the median wall time, files/s and CPU seconds (this process and its workers).

    python benchmarks/scan.py                         # 1000 patients, workers 1 and all cores
    python benchmarks/scan.py --quick                 # 100 patients, one repeat
    python benchmarks/scan.py --data /tmp/scanb1000   # reuse a generated cohort
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def pydicom_walk(root: Path) -> tuple[int, int]:
    """The baseline: every file through ``pydicom.dcmread(stop_before_pixels=True)``; (files, DICOM files)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[tuple[str, str], int] = {}
    n = n_dicom = 0
    for folder, _, files in os.walk(root):
        for name in files:
            n += 1
            try:
                ds = pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True)
            except (InvalidDicomError, OSError):
                continue
            n_dicom += 1
            key = (str(ds.get("PatientID", "")), str(ds.get("SeriesInstanceUID", "")))
            series[key] = series.get(key, 0) + 1
    return n, n_dicom


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 patients, one repeat")
    parser.add_argument("--data", type=Path, default=None,
                        help="cohort folder (generated when missing; default: a temporary folder)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="scan worker counts to time (default: 1 and all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.repeat = 100, 1
    cores = os.cpu_count() or 1
    workers = args.workers or sorted({1, cores})

    from medmulti.examples.cohort import make_sample_cohort
    from medmulti.scanning import scan

    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="medmulti-bench-scan-")
        data = Path(tmp.name) / f"cohort{args.patients}"
    if not (data / "manifest.csv").is_file():
        t0 = time.perf_counter()
        make_sample_cohort(data, n_patients=args.patients, seed=0, faults=False, workers=cores, progress=False)
        print(f"generated {args.patients} patients in {time.perf_counter() - t0:.1f} s ({cores} processes)")
    secret_dir = tempfile.TemporaryDirectory(prefix="medmulti-bench-secret-")
    secret = Path(secret_dir.name) / "secret"
    secret.write_text("benchmark-secret-0123456789abcdef\n")
    secret.chmod(0o600)
    print(f"cohort: {args.patients} patients, {cores} cores, load average {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}", flush=True)
    runs: dict[str, tuple[list[float], list[float], int]] = {}
    for _ in range(args.repeat):  # alternate, so that a noisy neighbour hits every variant alike
        for w in workers:
            c0, t0 = _cpu(), time.perf_counter()
            result = scan(data, data / "spec.yaml", nifti={"mr": "{key}/mr.nii.gz"}, secret=secret, workers=w,
                          progress=False)
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            assert len(result.rows) == args.patients and result.ok, "the scan must find every patient complete"
            times, cpus, _ = runs.setdefault(f"scan, {w} worker(s)", ([], [], result.n_files))
            times.append(wall)
            cpus.append(cpu)
        c0, t0 = _cpu(), time.perf_counter()
        n, _ = pydicom_walk(data)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        times, cpus, _ = runs.setdefault("pydicom dcmread walk, 1 process", ([], [], n))
        times.append(wall)
        cpus.append(cpu)
    print(f"{'variant':<34} {'median s':>9} {'files/s':>9} {'cpu s':>7} {'files/cpu-s':>12}  (load {os.getloadavg()[0]:.1f})")
    for name, (times, cpus, n) in runs.items():
        med, cpu = statistics.median(times), statistics.median(cpus)
        print(f"{name:<34} {med:>9.2f} {n / med:>9.0f} {cpu:>7.1f} {n / cpu:>12.0f}")
    if tmp is not None:
        tmp.cleanup()
    secret_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
