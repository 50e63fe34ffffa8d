"""Long tier of the reliability and privacy battery (issue 8).

Sections (all by default; ``--only`` picks some):

``fuzz``        >= 5,000 mutated inputs per reader: read_image on DICOM files, DICOM
                series folders and NIfTI (.nii / .nii.gz), plus inspect_source.
``truncation``  every seed cut at every byte of its first KiB and 64 offsets after.
``bombs``       the size bombs, with the default caps where that is safe to try.
``kills``       50 SIGKILLs of ``medmulti preprocess`` (40 at file-system commit
                operations, 10 at random times), each followed by verify + rerun.
``models``      the keras.applications backbones saved to .keras and reloaded with
                safe_mode=True (the fast tier covers every other option).
``specbombs``   hostile specs (medmulti_testing.hostile_text.spec_bombs): alias, merge-key
                and nesting bombs, an oversized file, repeated keys, NaN/inf/bool/huge
                values in every number; each must be a SpecError in < 1 CPU s.
``controlchars`` control, format and invisible characters in every manifest field
                (header too; medmulti_testing.hostile_text): strict and lenient loads end
                in a manifest or a typed error, and the same patient in two splits under
                keys differing by one such character is always found (what the command
                prints for such fields is the ``terminal`` section).
``terminal``    every C0/C1 control, DEL, bidi/zero-width character and forged line in
                every manifest field (and a DICOM folder name and Modality), printed
                through ``medmulti validate``, ``preprocess`` and ``info``
                (medmulti_testing.terminal_output): no raw control character, no
                forged line, no traceback.
``datafolders`` symlinks leading out of the root (absolute, relative, chains, folders),
                link loops, dangling links, FIFOs, sockets and device links placed
                in DICOM series folders (medmulti_testing.data_folders); every reader
                must give the expected typed error within a deadline (quick: 1 round, full: 5).

``--quick`` runs every section at about a tenth of the size (a smoke test).
Prints one line of figures per section and writes them all as JSON (``--json``).
Failing fuzz inputs are copied to ``--crashers`` to become regression fixtures.

Usage::

    .venv/bin/python benchmarks/stress.py [--quick] [--only fuzz,kills] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

# the fuzzers, bombs, canaries and kill points live in tools/, outside the installed package
TOOLS = str(Path(__file__).resolve().parents[1] / "tools")
sys.path.insert(0, TOOLS)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TOOLS, os.environ.get("PYTHONPATH")) if p)

SECTIONS = ("fuzz", "truncation", "bombs", "kills", "models", "specbombs", "controlchars", "terminal", "datafolders")


def _fuzz(work: Path, per_reader: int, seed: int, crashers: Path, progress: bool) -> dict:
    from medmulti_testing.campaign import file_inputs, run_campaign, save_input, series_inputs
    from medmulti_testing.seeds import build_seeds

    from medmulti.io import inspect_source, read_image

    seeds = build_seeds(work / "seeds")
    out = {}
    plans = [
        ("read_image[dicom file]", read_image, file_inputs, "dicom", True),
        ("read_image[dicom series]", read_image, series_inputs, "series", True),
        ("read_image[nifti]", read_image, file_inputs, "nifti", True),
        ("inspect_source[dicom file]", inspect_source, file_inputs, "dicom", False),
        ("inspect_source[dicom series]", inspect_source, series_inputs, "series", False),
        ("inspect_source[nifti]", inspect_source, file_inputs, "nifti", False),
    ]
    for label, reader, gen, kind, check in plans:
        n = per_reader if label.startswith("read_image") else max(1, per_reader // 5)
        per_seed = -(-n // len(seeds[kind]))
        s = run_campaign(reader, gen(seeds[kind], per_seed, work / "in", base_seed=seed), label=label,
                         check_shape=check, progress=progress, total=per_seed * len(seeds[kind]),
                         on_failure=lambda o, p: save_input(o, p, crashers))
        out[label] = s.to_dict()
        print(f"{label}: {s.inputs} inputs, {dict(s.statuses)}, untyped escapes {s.untyped_escapes}, "
              f"max {s.max_cpu_s:.2f} CPU s / {s.max_wall_s:.2f} wall s per input, "
              f"peak RSS growth {s.rss_growth_mib:.0f} MiB, failures {len(s.failures)}", flush=True)
    return out


def _truncation(work: Path, after: int, head: int) -> dict:
    from medmulti_testing.campaign import truncation_offsets
    from medmulti_testing.seeds import build_seeds

    from medmulti.errors import CorruptFileError, MedmultiError
    from medmulti.io import read_image

    seeds = build_seeds(work / "seeds")
    res: dict = {"cuts": 0, "outcomes": Counter(), "accepted": [], "escapes": []}
    for seed in seeds["dicom"] + seeds["nifti"]:
        data = seed.read_bytes()
        target = work / ("cut" + seed.suffix)
        for off in truncation_offsets(len(data), head=head, after=after):
            target.write_bytes(data[:off])
            res["cuts"] += 1
            try:
                read_image(target, **seed.kwargs)
                res["outcomes"]["accepted"] += 1
                res["accepted"].append(f"{seed.name}@{off}")
            except CorruptFileError:
                res["outcomes"]["CorruptFileError"] += 1
            except MedmultiError as exc:
                res["outcomes"][type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001
                res["outcomes"]["escape:" + type(exc).__name__] += 1
                res["escapes"].append(f"{seed.name}@{off}")
    res["outcomes"] = dict(res["outcomes"])
    print(f"truncation: {res['cuts']} cuts of {len(seeds['dicom']) + len(seeds['nifti'])} seeds: {res['outcomes']}; "
          f"accepted {res['accepted'][:10]}, escapes {res['escapes'][:10]}", flush=True)
    return res


def _bombs(work: Path) -> dict:
    import resource
    import tracemalloc

    from medmulti_testing import bombs
    from medmulti_testing.harness import peak_rss_mib

    from medmulti.errors import MedmultiError
    from medmulti.io import Limits, inspect_source, read_image

    out = {}
    for name, (builder, kwargs) in sorted(bombs.BOMBS.items()):
        path = builder(work / (name + (".nii" if name.startswith("nifti") else ".dcm")), **kwargs)
        limits = Limits(max_bytes=32 * 2**20) if "deflate" in name else None  # the 4 GiB default would inflate 4 GiB
        for fn in (read_image, inspect_source):
            rss0 = peak_rss_mib()
            tracemalloc.start()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            try:
                fn(path, limits=limits)
                outcome = "ACCEPTED"
            except MedmultiError as exc:
                outcome = type(exc).__name__
            except Exception as exc:  # noqa: BLE001
                outcome = "escape:" + type(exc).__name__
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rec = {"outcome": outcome, "file_bytes": path.stat().st_size,
                   "cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 3),
                   "traced_peak_mib": round(peak / 2**20, 1), "rss_growth_mib": round(peak_rss_mib() - rss0, 1)}
            out[f"{name}/{fn.__name__}"] = rec
            print(f"bomb {name} {fn.__name__}: {rec}", flush=True)
    return out


def _kills(work: Path, n_ops: int, n_random: int, seed: int) -> dict:
    from medmulti_testing.snapshot import cache_snapshot

    from medmulti import StudySpec
    from medmulti.data.cache import PreprocessCache
    from medmulti.data.cache_fill import preprocess_manifest
    from medmulti.examples.cohort import make_sample_cohort

    cohort = make_sample_cohort(work / "cohort", n_patients=4, faults=False, progress=False, overwrite=True,
                                ct_slices=12)
    spec = StudySpec.from_yaml(cohort.spec)
    args = ["preprocess", str(cohort.manifest), "--spec", str(cohort.spec), "--workers", "1", "--no-progress"]
    killpoint = [sys.executable, "-m", "medmulti_testing.killpoint"]
    clean = work / "clean"
    t_run = time.perf_counter()
    done = subprocess.run(killpoint + ["0", *args, "--cache", str(clean)], capture_output=True, text=True)
    t_run = time.perf_counter() - t_run
    total_ops = int(done.stderr.rsplit("killpoint-ops=", 1)[1].split()[0])
    reference = cache_snapshot(clean)
    rng = random.Random(seed)
    res = {"kills": 0, "survived": 0, "broken_entries": 0, "rerun_failures": 0, "not_identical": 0,
           "temp_files_left_after_rerun": 0, "committed_at_kill": [], "total_ops": total_ops}
    plan = [("op", rng.randint(1, total_ops)) for _ in range(n_ops)] + [("time", rng.uniform(0.3, 0.9) * t_run)
                                                                        for _ in range(n_random)]
    for i, (kind, at) in enumerate(plan):
        cache = work / f"k{i}"
        if kind == "op":
            proc = subprocess.run(killpoint + [str(at), *args, "--cache", str(cache)], capture_output=True)
            killed = proc.returncode == -signal.SIGKILL
        else:
            child = subprocess.Popen([sys.executable, "-m", "medmulti.cli", *args, "--cache", str(cache)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(at)
            killed = child.poll() is None
            if killed:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        res["kills"] += killed
        report = PreprocessCache(cache).verify() if cache.exists() else None
        res["broken_entries"] += 0 if report is None else len(report.problems)
        res["committed_at_kill"].append(0 if report is None else report.entries)
        summary = preprocess_manifest(cohort.manifest, spec, cache, workers=1, progress=False)
        res["rerun_failures"] += len(getattr(summary, "failed", []) or [])
        res["temp_files_left_after_rerun"] += len(list(cache.rglob(".tmp*")))
        same = cache_snapshot(cache) == reference
        res["not_identical"] += not same
        res["survived"] += bool(killed and (report is None or not report.problems) and same)
        shutil.rmtree(cache, ignore_errors=True)
    print(f"kills: {res['kills']} SIGKILLs ({n_ops} at commit ops of {total_ops}, {n_random} at random times), "
          f"survived {res['survived']}, broken entries {res['broken_entries']}, rerun failures "
          f"{res['rerun_failures']}, not byte-identical {res['not_identical']}, temporary files left after "
          f"rerun {res['temp_files_left_after_rerun']}", flush=True)
    return res


def _models(work: Path, backbones: list[str]) -> dict:
    import keras
    import numpy as np

    from medmulti.models import build_fusion_model
    from medmulti.spec import StudySpec

    spec = StudySpec.from_dict({"name": "bb", "labels": {"column": "d", "classes": ["a", "b"]},
                                "modalities": [{"name": "xray", "kind": "xray", "shape": [32, 32]}]})
    out = {}
    for bb in backbones:
        model = build_fusion_model(spec, backbone=bb, embed_dim=8, seed=0)
        x = {t.name: np.random.default_rng(0).normal(size=(2, *t.shape[1:])).astype(np.float32) for t in model.inputs}
        y = model.predict(x, verbose=0)
        path = work / f"{bb}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        same = bool(np.array_equal(loaded.predict(x, verbose=0), y))
        lambdas = sum(isinstance(layer, keras.layers.Lambda) for layer in model._flatten_layers())
        out[bb] = {"identical": same, "lambda_layers": lambdas, "file_mib": round(path.stat().st_size / 2**20, 1)}
        print(f"model backbone={bb}: {out[bb]}", flush=True)
        path.unlink()
    return out


def _spec_bombs(work: Path, quick: bool) -> dict:
    import resource
    import tracemalloc

    from medmulti_testing.hostile_text import spec_bombs

    from medmulti.errors import SpecError
    from medmulti.spec import StudySpec

    res: dict = {"specs": 0, "outcomes": Counter(), "failures": [], "max_cpu_s": 0.0, "max_traced_mib": 0.0}
    path = work / "spec.yaml"
    for name, text in spec_bombs(quick=quick):
        path.write_text(text, encoding="utf-8")
        tracemalloc.start()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            StudySpec.from_yaml(path)
            outcome = "ACCEPTED"
        except SpecError:
            outcome = "SpecError"
        except Exception as exc:  # noqa: BLE001
            outcome = "escape:" + type(exc).__name__
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        res["specs"] += 1
        res["outcomes"][outcome] += 1
        res["max_cpu_s"] = round(max(res["max_cpu_s"], cpu), 3)
        res["max_traced_mib"] = round(max(res["max_traced_mib"], peak / 2**20), 1)
        if outcome != "SpecError" or cpu > 1.0:
            res["failures"].append(f"{name}: {outcome}, {cpu:.2f} CPU s")
    res["outcomes"] = dict(res["outcomes"])
    print(f"spec bombs: {res['specs']} specs: {res['outcomes']}, max {res['max_cpu_s']} CPU s, "
          f"max traced {res['max_traced_mib']} MiB, failures {res['failures'][:10]}", flush=True)
    return res


def _control_chars(work: Path, quick: bool) -> dict:
    from medmulti_testing.hostile_text import CONTROL_CHARACTERS, control_character_manifests, leakage_manifests

    from medmulti import StudySpec
    from medmulti.errors import MedmultiError
    from medmulti.examples.cohort import make_sample_cohort
    from medmulti.manifest import load_manifest, validate_manifest

    cohort = make_sample_cohort(work / "cohort", n_patients=4, faults=False, progress=False, overwrite=True,
                                ct_slices=12)
    spec = StudySpec.from_yaml(cohort.spec)
    chars = {k: CONTROL_CHARACTERS[k] for k in ("ESC", "CR", "ZWSP", "RLO", "NUL")} if quick else None
    res: dict = {"manifests": 0, "outcomes": Counter(), "escapes": [], "leaks_missed": []}
    for label, path in control_character_manifests(cohort.manifest, characters=chars):
        res["manifests"] += 1
        for fn in (lambda p: load_manifest(p, spec, strict=False), lambda p: load_manifest(p, spec)):
            try:
                fn(path)
                res["outcomes"]["loaded"] += 1
            except MedmultiError as exc:
                res["outcomes"][type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001
                res["outcomes"]["escape:" + type(exc).__name__] += 1
                res["escapes"].append(label)
    for name, pid, path in leakage_manifests(cohort.manifest, characters=chars):
        report = validate_manifest(path, spec, workers=1, progress=False)
        if not any(p.check == "patient_in_two_splits" and p.patient_id == pid for p in report.problems):
            res["leaks_missed"].append(name)
    res["outcomes"] = dict(res["outcomes"])
    print(f"control characters: {res['manifests']} manifests x strict/lenient load: {res['outcomes']}, "
          f"escapes {res['escapes'][:10]}; disguised leaks missed {res['leaks_missed']}", flush=True)
    return res


def _terminal(work: Path, quick: bool) -> dict:
    from medmulti_testing.terminal_output import TERMINAL_HOSTILE_CHARACTERS, control_character_campaign

    chars = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2028") if quick else TERMINAL_HOSTILE_CHARACTERS
    res = control_character_campaign(work, chars=chars)
    print(f"terminal: {res['runs']} command runs x {res['payloads']} hostile values in {len(res['fields'])} fields; "
          f"raw characters leaked {res['leaks'][:5]}, forged lines {res['forged'][:5]}, "
          f"tracebacks {res['tracebacks'][:5]}", flush=True)
    return res


def _data_folders(work: Path, rounds: int, seed: int) -> dict:
    from medmulti_testing.data_folders import run_placements

    res = run_placements(work, rounds=rounds, seed=seed)
    print(f"data folders: {res['cases']} reader calls on {len(res['outcomes'])} placements, "
          f"max {res['max_s']:.2f} s per call, failures {res['failures'][:10]}", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a tenth of the size (smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--per-reader", type=int, default=None, help="fuzz inputs per reader (5000; quick 500)")
    parser.add_argument("--seed", type=int, default=1000, help="campaign seed (CI uses 8)")
    parser.add_argument("--json", default=None, help="write all figures as JSON here")
    parser.add_argument("--crashers", default="stress-crashers", help="folder for failing inputs")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = Path(args.work or tempfile.mkdtemp(prefix="medmulti-stress-"))
    work.mkdir(parents=True, exist_ok=True)
    q = args.quick
    results: dict = {"quick": q, "seed": args.seed}
    t0 = time.perf_counter()
    if "fuzz" in only:
        per = args.per_reader or (500 if q else 5000)
        results["fuzz"] = _fuzz(work / "fuzz", per, args.seed, Path(args.crashers), not args.no_progress)
    if "truncation" in only:
        results["truncation"] = _truncation(work / "trunc", after=64, head=128 if q else 1024)
    if "bombs" in only:
        (work / "bombs").mkdir(exist_ok=True)
        results["bombs"] = _bombs(work / "bombs")
    if "kills" in only:
        (work / "kills").mkdir(exist_ok=True)
        results["kills"] = _kills(work / "kills", n_ops=4 if q else 40, n_random=1 if q else 10, seed=args.seed)
    if "models" in only:
        (work / "models").mkdir(exist_ok=True)
        from medmulti.models import BACKBONES

        results["models"] = _models(work / "models", ["mobilenet_v2"] if q else sorted(BACKBONES))
    if "specbombs" in only:
        (work / "specbombs").mkdir(exist_ok=True)
        results["specbombs"] = _spec_bombs(work / "specbombs", q)
    if "controlchars" in only:
        (work / "controlchars").mkdir(exist_ok=True)
        results["controlchars"] = _control_chars(work / "controlchars", q)
    if "terminal" in only:
        results["terminal"] = _terminal(work / "terminal", q)
    if "datafolders" in only:
        results["datafolders"] = _data_folders(work / "datafolders", rounds=1 if q else 5, seed=args.seed)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    bad = 0
    for s in (results.get("fuzz") or {}).values():
        bad += len(s["failures"])
    tr = results.get("truncation")
    if tr:
        bad += len(tr["escapes"])
    k = results.get("kills")
    if k:
        bad += k["broken_entries"] + k["rerun_failures"] + k["not_identical"]
    sb = results.get("specbombs")
    if sb:
        bad += len(sb["failures"])
    cc = results.get("controlchars")
    if cc:
        bad += len(cc["escapes"]) + len(cc["leaks_missed"])
    te = results.get("terminal")
    if te:
        bad += len(te["leaks"]) + len(te["forged"]) + len(te["tracebacks"])
    bad += len((results.get("datafolders") or {}).get("failures", []))
    print(f"stress: done in {results['wall_s']} s; {'FAILURES: ' + str(bad) if bad else 'no failures'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
