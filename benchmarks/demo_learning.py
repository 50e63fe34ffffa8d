"""Measure the demo's learning claims over several seeds: the lower bound of the fusion
model's 95% test AUC interval >= 0.85, the fusion model with any two modalities (the third
masked) beating every single-modality model on the same split, and the wall time.

Each seed runs ``medmulti demo --out OUT/seed<k> --seed <k>`` in a fresh process (as
``make demo`` does: cohort generation, validation, preprocessing, four trainings) and
reads its ``demo_summary.json``. Prints one row per seed and the claims; writes
``OUT/demo_learning.json``. Record the figures in benchmarks/RESULTS.md
("Models and demo").

Usage::

    .venv/bin/python benchmarks/demo_learning.py --seeds 0 1 2 --out /tmp/demo_learning
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="demo_learning_runs")
    parser.add_argument("--patients", type=int, default=None, help="override the demo's cohort size")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epoch budget")
    parser.add_argument("--fusion", default=None, help="override the fusion method")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "medmulti.cli", "demo", "--out", str(out / f"seed{seed}"), "--seed", str(seed),
               "--no-progress"]
        for flag, value in (("--patients", args.patients), ("--epochs", args.epochs), ("--fusion", args.fusion)):
            if value is not None:
                cmd += [flag, str(value)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            print(f"seed {seed}: demo failed with exit code {proc.returncode}", file=sys.stderr)
            return 1
        summary = json.loads((out / f"seed{seed}" / "demo_summary.json").read_text())
        singles = {k: v for k, v in summary.items() if isinstance(v, dict) and k != "fusion"}
        rows.append({"seed": seed, "wall_s": round(wall, 1), "summary": summary,
                     "fusion_auc": summary["fusion"]["test_auc"],
                     "single_auc": {k: v["test_auc"] for k, v in singles.items()},
                     "fusion_beats_all": all(summary["fusion"]["test_auc"] > v["test_auc"] for v in singles.values())})
        r = rows[-1]
        subsets = summary["fusion"].get("subsets") or {}
        pairs = {k: v for k, v in subsets.items() if k.count("+") == 1}
        best_single = max(r["single_auc"].values(), default=None)
        r["auc_ci"] = summary["fusion"].get("test_auc_ci")
        r["pairs"] = pairs
        r["every_pair_beats_every_single"] = (bool(pairs) and best_single is not None
                                              and all(v is not None and v > best_single for v in pairs.values()))
        singles_text = "  ".join(f"{k} {v:.3f}" for k, v in r["single_auc"].items())
        ci = r["auc_ci"] or [float("nan")] * 2
        pairs_text = "  ".join(f"{k} {v:.3f}" for k, v in r["pairs"].items())
        print(f"seed {seed}: fusion AUC {r['fusion_auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] acc "
              f"{summary['fusion']['test_accuracy']:.3f} | pairs {pairs_text} | singles {singles_text} | "
              f"demo {summary['seconds']:.0f} s, process {wall:.0f} s", flush=True)
    aucs = [r["fusion_auc"] for r in rows]
    claims = {
        "fusion_auc_min": min(aucs),
        "fusion_auc_mean": sum(aucs) / len(aucs),
        "fusion_auc_ci_low_ge_0.85_all_seeds": all(r["auc_ci"] is not None and r["auc_ci"][0] >= 0.85 for r in rows),
        "every_pair_beats_every_single_all_seeds": all(r["every_pair_beats_every_single"] for r in rows),
        "fusion_beats_every_single_all_seeds": all(r["fusion_beats_all"] for r in rows),
        "max_wall_s": max(r["wall_s"] for r in rows),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(claims, indent=2))
    (out / "demo_learning.json").write_text(json.dumps({"runs": rows, "claims": claims}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
