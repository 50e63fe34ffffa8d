"""Validation throughput: patients/s and files/s of ``medmulti.validate_manifest``.

Generates (once, cached in ``--data``) a clean sample cohort of ``--patients`` patients
(40-slice CT series + MR NIfTI + X-ray DICOM per patient, 42 files), then times
``validate_manifest`` in fast mode (and ``--deep``) with the given worker counts,
repeating each ``--repeat`` times and printing the median.

    python benchmarks/validate.py                   # 1000 patients
    python benchmarks/validate.py --quick           # 100 patients, one repeat
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 patients, one repeat")
    parser.add_argument("--data", type=Path, default=None,
                        help="cohort folder (generated when missing; default: a temporary folder)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to time (default: 1 and all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deep", action="store_true", help="also time deep mode")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.repeat = 100, 1
    cores = os.cpu_count() or 1
    workers = args.workers or sorted({1, cores})

    from medmulti.examples.cohort import make_sample_cohort
    from medmulti.manifest import validate_manifest

    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="medmulti-bench-validate-")
        data = Path(tmp.name) / f"cohort{args.patients}"
    if not (data / "manifest.csv").is_file():
        t0 = time.perf_counter()
        make_sample_cohort(data, n_patients=args.patients, seed=0, faults=False, workers=cores, progress=False)
        print(f"generated {args.patients} patients in {time.perf_counter() - t0:.1f} s ({cores} processes)")
    manifest, spec = data / "manifest.csv", data / "spec.yaml"
    load = os.getloadavg()[0]
    print(f"cohort: {args.patients} patients, {cores} cores, load average {load:.1f}, "
          f"python {sys.version.split()[0]}", flush=True)
    print(f"{'mode':<6} {'workers':>7} {'median s':>9} {'patients/s':>11} {'files/s':>9} {'cpu s':>7} "
          f"{'patients/cpu-s':>14}  ok")
    modes = [False, True] if args.deep else [False]
    for deep in modes:
        for w in workers:
            times, cpus = [], []
            report = None
            for _ in range(args.repeat):
                c0 = _cpu()
                t0 = time.perf_counter()
                report = validate_manifest(manifest, spec, workers=w, deep=deep, progress=False)
                times.append(time.perf_counter() - t0)
                cpus.append(_cpu() - c0)
            med, cpu = statistics.median(times), statistics.median(cpus)
            n_files = report.n_files if report else 0
            print(f"{'deep' if deep else 'fast':<6} {w:>7} {med:>9.2f} {args.patients / med:>11.1f} "
                  f"{n_files / med:>9.0f} {cpu:>7.1f} {args.patients / cpu:>14.2f}  {report.ok if report else '-'}",
                  flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
