"""Feeding rate: batches/s of PatientSequence and as_tf_dataset from a warm cache vs plain np.load.

Generates (once, kept in ``--data``) a clean sample cohort, preprocesses it into a
cache on a ``--size``^3 CT grid (two CT windows + one MR channel on the same grid +
a 64x64 X-ray per patient), then, in the same process and alternating the methods
round by round, times one epoch of:

* ``np.load``           plain ``np.load`` of the same cached ``.npy`` files (the baseline)
* ``np.load+stack``     the same plus ``np.stack`` into batch arrays
* ``seq workers=0``     ``seq[i]`` in the main thread (reads into preallocated batches)
* ``seq workers=2``     the Keras PyDataset pipeline (2 threads), as ``model.fit`` iterates it
* ``tf.data``           ``seq.as_tf_dataset()``
* ``fit seq`` / ``fit tf.data``   ``model.fit`` of a trivial model (pool + dense), one epoch
* ``fit tf.data epochs``  the same with ``seq.as_tf_dataset(epochs=E)`` and ``steps_per_epoch``:
                        one iterator for the whole run, reading ahead across epoch boundaries
* ``fit in-memory``     the same model fed one constant in-memory batch (``steps_per_epoch``):
                        what the model itself costs, the ceiling of every ``fit`` row
* ``fit train feed``    what ``medmulti train`` feeds ``model.fit``: the dataset its fit path
                        builds (``medmulti.training.fit._fit_dataset``, every epoch in one
                        pass), ``steps_per_epoch`` and its epoch callback
* ``fit train feed before``  what it fed before 2026-12-06: a ``PyDataset`` wrapper of the
                        sequence (one Keras worker, ``select_inputs`` per batch), a new
                        iterator every epoch
* ``3D CNN``            training steps of a small 3D CNN (four Conv3D, 16-64 filters) on a
                        fixed in-memory batch: how fast a real model consumes batches

Each method runs one untimed warm-up epoch first (the cache checks each entry's CRC
once per process); the median over ``--rounds`` rounds is printed with its ratio to
``np.load`` in the same round, with the CPU seconds per batch (this process, all its
threads; a ``fit`` row's whole calls, tracing epoch included) and the load average
before and after the rounds. The cold cache fill is timed with 1 and all cores, and one
cold epoch of the sequence (empty cache) with 1 and 2 worker threads, each with the number
of cores it kept busy (CPU time / wall time).

    python benchmarks/feed.py            # 128^3, 96 patients, 5 rounds
    python benchmarks/feed.py --no-pool  # the same, allocating every batch afresh (ablation)
    python benchmarks/feed.py --quick    # 64^3, 16 patients, 3 rounds, no cold fill on 1 core
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _spec(size: int):
    from medmulti.examples.cohort import sample_spec
    from medmulti.spec import ModalitySpec, StudySpec

    base = sample_spec()
    mods = []
    for m in base.modalities:
        d = m.to_dict()
        if m.name == "ct":
            d.update(shape=[size] * 3, spacing_mm=[192.0 / size] * 3)
        mods.append(ModalitySpec.from_dict(d))
    return StudySpec(modalities=mods, labels=base.labels, name=f"feed-{size}")


def _rate(fn, min_s: float) -> float:
    """Batches/s of ``fn`` (one epoch per call, returning its batch count), repeated for ``min_s``."""
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return n / dt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64^3, 16 patients, batches of 2, 3 short rounds")
    parser.add_argument("--size", type=int, default=128, help="CT grid edge (voxels)")
    parser.add_argument("--patients", type=int, default=96,
                        help="cohort size (default 96: 24 batches per epoch; with only a few batches per epoch, "
                             "the per-epoch start-up of Keras' enqueuer and tf.data dominates the rate)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="cohort + cache folder (kept; default: temporary)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--no-pool", action="store_true",
                        help="ablation: allocate every batch afresh (disable medmulti.data.buffers' pool)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time each method at least this long")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods to time (default: all); the np.load baseline always runs, "
                             "e.g. --methods 'fit train feed,fit train feed before' for shorter rounds; "
                             "the cold epochs are then not timed")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.patients, args.rounds, args.batch_size, args.min_seconds = 64, 16, 3, 2, 0.5

    import numpy as np

    if args.no_pool:
        from medmulti.data import buffers

        buffers.MAX_POOL_BYTES = 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from medmulti.data.cache import PreprocessCache
    from medmulti.data.cache_fill import preprocess_manifest
    from medmulti.data.cache_key import entry_key
    from medmulti.data.sequence import PatientSequence
    from medmulti.examples.cohort import make_sample_cohort
    from medmulti.manifest import load_manifest

    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="medmulti-feed-")
        data = Path(tmp.name)
    cohort = data / f"cohort{args.patients}"
    if not (cohort / "manifest.csv").is_file():
        make_sample_cohort(cohort, args.patients, seed=0, faults=False, progress=False, overwrite=True)
    spec = _spec(args.size)
    # all rows in one split so every patient is in the epoch
    manifest = load_manifest(cohort / "manifest.csv", spec)
    import dataclasses

    manifest.rows = [dataclasses.replace(r, split="train") for r in manifest.rows]
    cache_dir = data / f"cache{args.size}-{args.patients}"
    cores = os.cpu_count() or 1
    results: dict[str, object] = {"size": args.size, "patients": args.patients, "batch_size": args.batch_size,
                                  "cores": cores}

    # ---- cold work, into fresh folders: the cache fill with all cores and with 1 (unless
    # quick), and one cold epoch of the sequence (nothing cached: preprocessing inside the
    # batches) with 1 and with 2 Keras worker threads; CPU time of this process and its
    # children over wall time shows how many cores the work kept busy
    import resource
    import shutil

    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    def cpu_seconds() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def cold_epoch(workers: int, target: Path) -> tuple[float, float]:
        seq = PatientSequence(manifest, spec, "train", batch_size=args.batch_size, cache_dir=target,
                              shuffle=False, progress=False, workers=workers)
        adapter = PyDatasetAdapter(seq, shuffle=False)
        c0, t0 = cpu_seconds(), time.perf_counter()
        adapter.on_epoch_begin()
        for _ in adapter.get_numpy_iterator():
            pass
        adapter.on_epoch_end()
        wall = time.perf_counter() - t0
        return args.patients / wall, (cpu_seconds() - c0) / wall

    fills, busy, cold = {}, {}, {}
    if not any(PreprocessCache(cache_dir).keys()):
        for workers in ([cores] if args.quick else [cores, 1]):
            target = cache_dir if workers == cores else data / f"cache{args.size}-w1"
            shutil.rmtree(target, ignore_errors=True)
            c0 = cpu_seconds()
            s = preprocess_manifest(manifest, spec, target, workers=workers, progress=False)
            assert s.ok, s.summary()
            fills[workers] = args.patients / s.seconds
            busy[workers] = (cpu_seconds() - c0) / s.seconds
            if target != cache_dir:
                shutil.rmtree(target, ignore_errors=True)
    else:
        print("cache already filled (cold fill not timed)")
    for workers in ([] if args.methods else [2] if args.quick else [1, 2]):  # --methods: warm figures only
        target = data / f"cache{args.size}-cold-epoch"
        shutil.rmtree(target, ignore_errors=True)
        cold[workers] = cold_epoch(workers, target)
        shutil.rmtree(target, ignore_errors=True)
    results["cold_fill_patients_per_s"] = fills
    results["cold_fill_cores_busy"] = {w: round(b, 2) for w, b in busy.items()}
    results["cold_epoch"] = {w: {"patients_per_s": round(r, 2), "cores_busy": round(b, 2)} for w, (r, b) in cold.items()}
    for w, r in fills.items():
        print(f"cold fill, preprocess_manifest({w} process(es)): {r:.2f} patients/s, {busy[w]:.2f} cores busy")
    for w, (r, b) in cold.items():
        print(f"cold epoch, PatientSequence (workers={w}): {r:.2f} patients/s, {b:.2f} cores busy")

    seq0 = PatientSequence(manifest, spec, "train", batch_size=args.batch_size, cache_dir=cache_dir,
                           shuffle=False, progress=False, workers=1)
    seq2 = PatientSequence(manifest, spec, "train", batch_size=args.batch_size, cache_dir=cache_dir,
                           shuffle=False, progress=False, workers=2)
    n_batches = len(seq0)
    cache = PreprocessCache(cache_dir)
    files = []  # per batch: the .npy files of its patients, modality order
    rows = [manifest.rows[i] for i in range(len(manifest.rows))]
    by_key = {r.key: r for r in rows}
    for b in range(n_batches):
        batch_files = []
        for pid in seq0.patient_ids[b * args.batch_size:(b + 1) * args.batch_size]:
            r = by_key[pid]
            for n in spec.names:
                key = entry_key(spec, n, r.sources, root=manifest.root, sha256=r.sha256)
                info = json.loads(cache.sidecar_path(key).read_text())
                batch_files.append((n, cache.sidecar_path(key).parent / info["file"]))
        files.append(batch_files)
    mb_per_epoch = sum(p.stat().st_size for bf in files for _, p in bf) / 1e6
    results["mb_per_epoch"] = round(mb_per_epoch, 1)
    print(f"{args.patients} patients, {n_batches} batches of {args.batch_size}, {mb_per_epoch:.0f} MB per epoch, "
          f"CT grid {args.size}^3, {cores} cores")

    def plain_load():
        for bf in files:
            for _, p in bf:
                np.load(p, allow_pickle=False)
        return n_batches

    def load_stack():
        for bf in files:
            per = {}
            for n, p in bf:
                per.setdefault(n, []).append(np.load(p, allow_pickle=False))
            {n: np.stack(v) for n, v in per.items()}
        return n_batches

    def seq_main():
        for i in range(n_batches):
            seq0[i]
        return n_batches

    def seq_workers():
        adapter = PyDatasetAdapter(seq2, shuffle=False)
        adapter.on_epoch_begin()
        n = sum(1 for _ in adapter.get_numpy_iterator())
        adapter.on_epoch_end()
        return n

    ds = seq0.as_tf_dataset()

    def tf_data():
        return sum(1 for _ in ds)

    shapes = seq0.element_shapes()

    def trivial_model():
        inputs = {n: keras.Input(shape=shapes[n], name=n) for n in seq0.input_names}
        feats = [keras.layers.GlobalAveragePooling3D()(t) if len(t.shape) == 5 else
                 keras.layers.GlobalAveragePooling2D()(t) for t in inputs.values()]
        out = keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()(feats))
        m = keras.Model(inputs, out)
        m.compile(optimizer="sgd", loss="categorical_crossentropy")
        return m

    model_seq, model_tf, model_tf_epochs, model_const = trivial_model(), trivial_model(), trivial_model(), trivial_model()
    model_train, model_train_before = trivial_model(), trivial_model()

    def fit(model, data_, steps_per_epoch=None, callbacks=(), name=None):
        t = {}

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                t[epoch] = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                t[epoch] = time.perf_counter() - t[epoch]

        epochs = max(2, int(args.min_seconds * 4))

        def run():
            c0 = cpu_seconds()
            model.fit(data_, epochs=epochs, verbose=0, callbacks=[Timer(), *callbacks], shuffle=False,
                      steps_per_epoch=steps_per_epoch)
            cpu.setdefault(name, []).append((cpu_seconds() - c0) / (n_batches * epochs))
            return n_batches * (epochs - 1) / sum(t[e] for e in range(1, epochs))  # no tracing epoch

        return run

    fit_epochs = max(2, int(args.min_seconds * 4))
    import tensorflow as tf

    constant = tf.data.Dataset.from_tensors(seq0[0]).repeat()

    # medmulti train's feed: the exact dataset and callback its fit path uses, and the one before
    from medmulti.training.batches import select_inputs
    from medmulti.training.fit import _fit_dataset, _SequenceEpochs

    keys = list(seq0.input_names)
    train_feed = _fit_dataset(seq0, keys, epochs=fit_epochs, first_epoch=seq0.epoch)

    class TrainFeedBefore(keras.utils.PyDataset):  # training/fit.py's wrapper until 2026-12-06
        def __init__(self):
            super().__init__()

        def __len__(self):
            return len(seq0)

        def __getitem__(self, index):
            return select_inputs(seq0[index], keys)

        def on_epoch_end(self):
            seq0.on_epoch_end()

    cpu: dict[str, list[float]] = {}

    methods = {
        "np.load": plain_load,
        "np.load+stack": load_stack,
        "seq workers=0": seq_main,
        "seq workers=2": seq_workers,
        "tf.data": tf_data,
    }
    fits = {"fit seq workers=2": (model_seq, seq2, None, ()), "fit tf.data": (model_tf, ds, None, ()),
            "fit tf.data epochs": (model_tf_epochs, seq0.as_tf_dataset(epochs=fit_epochs), n_batches, ()),
            "fit in-memory": (model_const, constant, n_batches, ()),
            "fit train feed": (model_train, train_feed, n_batches, [_SequenceEpochs(seq0)]),
            "fit train feed before": (model_train_before, TrainFeedBefore(), None, ())}
    if args.methods:
        chosen = {m.strip() for m in args.methods.split(",")} | {"np.load"}
        unknown = chosen - set(methods) - set(fits)
        if unknown:
            parser.error(f"unknown methods {sorted(unknown)}; choose from {[*methods, *fits]}")
        methods = {k: v for k, v in methods.items() if k in chosen}
        fits = {k: v for k, v in fits.items() if k in chosen}
    fits = {name: fit(*fit_args, name=name) for name, fit_args in fits.items()}

    def counted(name, fn):
        def run():
            c0 = cpu_seconds()
            n = fn()
            cpu.setdefault(name, []).append((cpu_seconds() - c0) / n)
            return n
        return run

    methods = {name: counted(name, fn) for name, fn in methods.items()}
    for fn in methods.values():  # warm-up: CRC checks, tf.data tracing, page cache
        fn()
    cpu.update({name: [] for name in [*methods, *fits]})
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {k: [] for k in [*methods, *fits]}
    ratios: dict[str, list[float]] = {k: [] for k in rates}
    plain_load = methods["np.load"]
    for r in range(args.rounds):
        base = _rate(plain_load, args.min_seconds)
        for name, fn in methods.items():
            if name != "np.load":
                rates[name].append(_rate(fn, args.min_seconds))
        for name, fn in fits.items():
            rates[name].append(fn())
        base2 = _rate(plain_load, args.min_seconds)  # bracket the round: the baseline before and after
        rates["np.load"].append((base + base2) / 2)
        for name in rates:
            ratios[name].append(rates[name][-1] / rates["np.load"][-1])
        print(f"round {r + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f}): "
              + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    load_after = os.getloadavg()

    # a small 3D CNN's training consumption rate (in-memory batch: no input cost at all)
    x, y = seq0[0]
    inputs = {n: keras.Input(shape=shapes[n], name=n) for n in seq0.input_names}
    feats = []
    for n, t in inputs.items():
        conv = keras.layers.Conv3D if len(t.shape) == 5 else keras.layers.Conv2D
        pool = keras.layers.MaxPooling3D if len(t.shape) == 5 else keras.layers.MaxPooling2D
        gap = keras.layers.GlobalAveragePooling3D if len(t.shape) == 5 else keras.layers.GlobalAveragePooling2D
        h = t
        for f in (16, 32, 48, 64):
            h = pool(2)(conv(f, 3, padding="same", activation="relu")(h))
        feats.append(gap()(h))
    cnn = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()(feats)))
    cnn.compile(optimizer="adam", loss="categorical_crossentropy")
    cnn.train_on_batch(x, y)
    steps = 2
    t0 = time.perf_counter()
    for _ in range(steps):
        cnn.train_on_batch(x, y)
    cnn_rate = steps / (time.perf_counter() - t0)

    print(f"\n{'method':<24}{'batches/s':>12}{'x np.load':>12}{'CPU ms/batch':>14}   "
          f"(median of {args.rounds} alternating rounds)")
    table = {}
    for name in rates:
        med, ratio = statistics.median(rates[name]), statistics.median(ratios[name])
        cpu_ms = 1000 * statistics.median(cpu[name]) if cpu.get(name) else float("nan")
        table[name] = {"batches_per_s": round(med, 2), "ratio_to_np_load": round(ratio, 3),
                       "cpu_ms_per_batch": round(cpu_ms, 2), "all": [round(v, 2) for v in rates[name]],
                       "all_ratios": [round(v, 3) for v in ratios[name]]}
        print(f"{name:<24}{med:>12.2f}{ratio:>12.2f}{cpu_ms:>14.1f}")
    print(f"load average (1, 5, 15 min): before the rounds {load_before}, after {load_after}")
    results["load_average"] = {"before": load_before, "after": load_after}
    print(f"{'3D CNN training':<22}{cnn_rate:>12.2f}")
    if "fit seq workers=2" in table:
        best_pipeline = table["fit seq workers=2"]["batches_per_s"]
        print(f"\npipeline (fit seq workers=2) / 3D CNN consumption: {best_pipeline / cnn_rate:.1f}x")
    if "fit train feed" in rates and "fit train feed before" in rates:
        paired = [a / b for a, b in zip(rates["fit train feed"], rates["fit train feed before"])]
        results["train_feed_after_over_before"] = [round(v, 3) for v in paired]
        print(f"fit train feed / fit train feed before, same round: median {statistics.median(paired):.2f}x "
              f"({', '.join(f'{v:.2f}' for v in paired)})")
    results["methods"] = table
    results["cnn_batches_per_s"] = round(cnn_rate, 3)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
