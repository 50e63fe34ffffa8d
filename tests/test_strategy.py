"""Training on several devices (docs/scaling.md): ``strategy``, ``mixed_precision``, ``jit_compile``.

TensorFlow fixes its devices when it starts, so the two-replica runs happen in a child
process that splits the CPU into two logical devices before anything else. The oracle of
a two-replica run is a one-device run with the same seed on the same batch: the weights
after one step, the metrics and the saved model must agree within float tolerance. A
mixed-precision model is checked against the same model in float32 with the same weights.
``MultiWorkerMirroredStrategy`` is tried with two local workers on loopback: it fails in
Keras 3 today (keras-team/keras#20585), and the test fails loudly once that is fixed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from medmulti import cli
from medmulti.cli import train as train_command
from medmulti.errors import DeviceError
from medmulti.models import build_fusion_model
from medmulti.models.saving import load_fusion_model
from medmulti.spec import StudySpec
from medmulti.training import FitOptions, train
from medmulti.training.devices import check_replica_batches, mixed_precision_policy, replica_devices
from medmulti.training.explain import grad_cam
from medmulti.training.fit import BACKUP_DIR, backup_epoch
from medmulti.training.options import STRATEGIES

TINY = dict(width=2, depth=2, embed_dim=4, stem_stride=2, progress=False)
CHILD_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """12 generated patients (8 train, 2 val, 2 test), preprocessed once."""
    from medmulti.data.cache_fill import preprocess_manifest
    from medmulti.examples.cohort import make_sample_cohort

    root = tmp_path_factory.mktemp("strategy_cohort")
    c = make_sample_cohort(root / "cohort", n_patients=12, seed=3, faults=False, progress=False)
    assert preprocess_manifest(c.manifest, c.spec, root / "cache", workers=1, progress=False).ok
    return c, root / "cache"


def _card(run: Path) -> dict:
    return json.loads((run / "run_card.json").read_text())


# -- options, without training --------------------------------------------------------------
def test_the_options_check_their_values_and_the_cli_offers_the_same():
    with pytest.raises(ValueError, match="strategy must be one of"):
        FitOptions(strategy="horovod")
    with pytest.raises(ValueError, match="jit_compile=True needs deterministic=False"):
        FitOptions(jit_compile=True)
    with pytest.raises(ValueError, match="not supported with strategy='mirrored'"):
        FitOptions(jit_compile=True, deterministic=False, strategy="mirrored")
    assert FitOptions(jit_compile=True, deterministic=False).jit_compile is True
    assert tuple(train_command.STRATEGIES) == STRATEGIES
    args = cli.build_parser().parse_args(["train", "m.csv", "--spec", "s.yaml", "--out", "run"])
    fit = FitOptions()
    assert (args.strategy, args.mixed_precision, args.jit_compile) == (fit.strategy, fit.mixed_precision,
                                                                       fit.jit_compile)
    args = cli.build_parser().parse_args(["train", "m.csv", "--spec", "s.yaml", "--out", "run", "--no-jit-compile"])
    assert args.jit_compile is False


def test_a_batch_the_replicas_cannot_share_is_a_device_error_with_a_cli_hint():
    check_replica_batches({"train": 9, "val": 4}, batch_size=4, replicas=2)  # a short last batch is fine
    check_replica_batches({"train": 3}, batch_size=3, replicas=1)
    with pytest.raises(DeviceError, match="batch size 6 is not a multiple of the 4 replicas") as caught:
        check_replica_batches({"train": 30}, batch_size=6, replicas=4)
    assert "--batch-size 8" in caught.value.cli_text() and "batch_size=8" in str(caught.value)
    with pytest.raises(DeviceError, match="'val' split is one batch of 3 patients"):
        check_replica_batches({"train": 30, "val": 3}, batch_size=8, replicas=2)


def test_mixed_precision_is_bfloat16_on_cpu_and_float16_on_gpu():
    import tensorflow as tf

    on_gpu = bool(tf.config.list_logical_devices("GPU"))
    assert mixed_precision_policy(True) == ("mixed_float16" if on_gpu else "mixed_bfloat16")
    assert mixed_precision_policy(False) == "float32"
    assert len(replica_devices("default")) == 1
    assert len(replica_devices("mirrored")) == max(1, len(tf.config.list_logical_devices("GPU")))


def test_jit_compile_with_mirrored_is_refused_on_the_command_line(cohort, tmp_path, capsys):
    c, cache = cohort
    code = cli.main(["train", str(c.manifest), "--spec", str(c.spec), "--out", str(tmp_path / "run"),
                     "--strategy", "mirrored", "--jit-compile", "--no-progress"])
    assert code == 2 and "drop --jit-compile" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- mixed precision ------------------------------------------------------------------------
def _as_float32(model: keras.Model) -> keras.Model:
    """The same architecture in float32, with the same weights (the oracle of a mixed model)."""
    config = json.loads(json.dumps(model.get_config()).replace('"mixed_bfloat16"', '"float32"')
                        .replace('"mixed_float16"', '"float32"'))
    twin = keras.Model.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def _random_inputs(model: keras.Model, n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.random((n, *t.shape[1:]), dtype=np.float32) for name, t in model.input.items()}


def test_a_mixed_model_keeps_float32_variables_head_and_output_and_leaves_the_global_policy():
    spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b", "c"]},
                                "modalities": [{"name": "xray", "kind": "xray", "shape": [16, 16]},
                                               {"name": "ct", "kind": "ct", "dims": 3, "shape": [8, 8, 8]}]})
    model = build_fusion_model(spec, width=2, depth=2, embed_dim=4, fusion="attention", dtype_policy="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["xray_conv1"] == policies["ct_conv2"] == "mixed_bfloat16"
    assert policies["fusion"] == policies["diagnosis"] == "float32"
    assert all(v.dtype == "float32" for v in model.weights)
    inputs = _random_inputs(model)
    probs = np.asarray(model(inputs, training=False))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    reference = np.asarray(_as_float32(model)(inputs, training=False))
    np.testing.assert_allclose(probs, reference, atol=2e-2)  # bfloat16 keeps ~3 significant digits
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        build_fusion_model(spec, width=2, depth=2, dtype_policy="float16")


def test_a_mixed_precision_xla_run_from_the_command_line_saves_loads_and_predicts_float32(cohort, tmp_path):
    c, cache = cohort
    out = tmp_path / "mixed"
    done = subprocess.run([sys.executable, "-m", "medmulti", "train", str(c.manifest), "--spec", str(c.spec),
                           "--out", str(out), "--cache", str(cache), "--epochs", "1", "--batch-size", "4",
                           "--width", "2", "--depth", "2", "--seed", "1", "--mixed-precision", "--jit-compile",
                           "--no-progress"], capture_output=True, text=True, timeout=600, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    card = _card(out)
    assert card["options"]["mixed_precision"] is True and card["options"]["jit_compile"] is True
    assert card["deterministic"] is False  # Keras compiles with XLA only without op determinism
    assert card["devices"] == {"strategy": "default", "replicas": 1, "devices": ["/device:CPU:0"],
                               "dtype_policy": "mixed_bfloat16", "jit_compile": True}
    model = load_fusion_model(out / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers if "_conv" in layer.name} == {"mixed_bfloat16"}
    inputs = _random_inputs(model)
    probs = np.asarray(model.predict(inputs, verbose=0))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, np.asarray(_as_float32(model)(inputs, training=False)), atol=2e-2)
    heat, explained = grad_cam(model, inputs)  # explain works on it too (its feature maps are bfloat16)
    assert set(heat) == {"ct", "mr", "xray"} and np.allclose(explained, probs, atol=5e-3)  # bfloat16 paths
    assert all(h.dtype == np.float32 and np.isfinite(h).all() and h.max() <= 1.0 for h in heat.values())


# -- resume ----------------------------------------------------------------------------------
def test_resume_checks_the_strategy_and_precision_like_the_other_options(cohort, tmp_path, monkeypatch):
    from medmulti.training import fit as fit_module

    c, cache = cohort
    out = tmp_path / "run"
    original = fit_module._Backup

    class StopAfterFirstEpoch:  # the real backup, then an interruption at the end of epoch 1
        def __new__(cls, run_dir):
            backup = original(run_dir)
            save = backup.on_epoch_end

            def on_epoch_end(epoch, logs=None):
                save(epoch, logs)
                raise KeyboardInterrupt

            backup.on_epoch_end = on_epoch_end
            return backup

    monkeypatch.setattr(fit_module, "_Backup", StopAfterFirstEpoch)
    with pytest.raises(KeyboardInterrupt):
        train(c.manifest, c.spec, out, epochs=2, batch_size=4, seed=1, cache_dir=cache, **TINY)
    assert backup_epoch(out) == 1 and (out / BACKUP_DIR / "options.json").is_file()
    monkeypatch.undo()
    with pytest.raises(ValueError, match="these differ: fit.mixed_precision, fit.strategy$"):
        train(c.manifest, c.spec, out, epochs=2, batch_size=4, seed=1, cache_dir=cache, resume=True,
              strategy="mirrored", mixed_precision=True, **TINY)
    assert backup_epoch(out) == 1  # refused: the backup is still there to resume


# -- two replicas -----------------------------------------------------------------------------
MIRRORED_CHILD = textwrap.dedent('''
    import json, sys

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]  # two logical CPUs, before TensorFlow starts
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    from medmulti.errors import DeviceError
    from medmulti.models import build_fusion_model
    from medmulti.spec import StudySpec
    from medmulti.training import FitOptions, train
    from medmulti.training.devices import plan_devices, synchronize_batch_norm


    def sgd_step(strategy, out):
        """One plain SGD step on one batch of 8 (the update is linear in the summed gradients)."""
        spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]},
                                    "modalities": [{"name": "xray", "kind": "xray", "shape": [16, 16]},
                                                   {"name": "ct", "kind": "ct", "dims": 3, "shape": [8, 8, 8]}]})
        rng = np.random.default_rng(0)
        x = {"xray": rng.random((8, 16, 16, 1), dtype=np.float32), "ct": rng.random((8, 8, 8, 8, 1), dtype=np.float32)}
        y = np.eye(2, dtype=np.float32)[[0, 1, 1, 0, 1, 0, 0, 1]]
        plan = plan_devices(FitOptions(strategy=strategy, batch_size=8))
        keras.utils.set_random_seed(1)
        with plan.scope():
            model = build_fusion_model(spec, width=2, depth=2, embed_dim=4, dropout=0.0)
            if plan.replicas > 1:
                synchronize_batch_norm(model)
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
        before = {v.path: np.asarray(v) for v in model.weights}
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        np.savez(f"{out}/sgd_{strategy}.npz", **{f"before/{k}": v for k, v in before.items()},
                 **{f"after/{v.path}": np.asarray(v) for v in model.weights})
        return plan.replicas


    def main():
        manifest, spec, cache, out = sys.argv[1:5]
        replicas = {name: sgd_step(name, out) for name in ("default", "mirrored")}
        common = dict(epochs=1, batch_size=8, seed=1, width=2, depth=2, embed_dim=4, stem_stride=2, dropout=0.0,
                      patience=0, learning_rate=0.05, cache_dir=cache, progress=False)
        runs = {}
        for name, extra in (("single", {}), ("mirrored", {"strategy": "mirrored"}),
                            ("unmoved", {"learning_rate": 0.0})):
            result = train(manifest, spec, f"{out}/{name}", **{**common, **extra})
            runs[name] = {"history": result.history, "val": result.val_metrics, "test": result.metrics}
        try:
            train(manifest, spec, f"{out}/refused", **{**common, "strategy": "mirrored", "batch_size": 3})
            refused = None
        except DeviceError as exc:
            refused = exc.cli_text()
        print(json.dumps({"runs": runs, "refused": refused, "sgd_replicas": replicas,
                          "refused_folder": __import__("os").path.exists(f"{out}/refused")}))


    if __name__ == "__main__":
        main()
''')


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: np.asarray(v) for v in model.weights}


@pytest.mark.slow
def test_two_replicas_take_the_step_one_device_takes_on_the_same_batch(cohort, tmp_path):
    c, cache = cohort
    script = tmp_path / "mirrored_child.py"
    script.write_text(MIRRORED_CHILD)
    done = subprocess.run([sys.executable, str(script), str(c.manifest), str(c.spec), str(cache), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    # plain SGD, one step: the summed gradients of two replicas are one device's gradient
    assert report["sgd_replicas"] == {"default": 1, "mirrored": 2}
    with np.load(tmp_path / "sgd_default.npz") as one, np.load(tmp_path / "sgd_mirrored.npz") as two:
        assert sorted(one.files) == sorted(two.files)
        for name in one.files:
            # round-off is ~1e-6 here; without synchronised batch normalisation half the weights differ by up to 3e-2
            np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
        moved = [k for k in one.files if k.startswith("after/") and "kernel" in k
                 and np.abs(one[k] - one["before/" + k[6:]]).max() > 1e-3]
        assert len(moved) >= 5

    # train() with Adam: the same, through the sequence, the callbacks and the saved model
    single, mirrored = (tmp_path / "single", tmp_path / "mirrored")
    assert _card(single)["devices"]["replicas"] == 1
    assert _card(mirrored)["devices"] == {"strategy": "mirrored", "replicas": 2,
                                          "devices": ["/device:CPU:0", "/device:CPU:1"], "dtype_policy": "float32",
                                          "jit_compile": False}
    assert _card(mirrored)["options"]["strategy"] == "mirrored"
    assert _card(single)["counts"]["train"]["patients"] == 8  # one batch of 8: one step, 4 patients per replica

    one, two, unmoved = (load_fusion_model(run / "model.keras") for run in (single, mirrored, tmp_path / "unmoved"))
    w1, w2, w0 = _weights(one), _weights(two), _weights(unmoved)
    assert w1.keys() == w2.keys()
    for name in w1:  # every weight, the batch normalisations' moving statistics included
        # Adam's first step is learning_rate * g / (|g| + eps): a round-off in a gradient near 0
        # moves that weight by up to ~1e-3 of the step (learning rate 0.05)
        np.testing.assert_allclose(w2[name], w1[name], rtol=1e-4, atol=2e-4, err_msg=name)
    moved = [name for name in w1 if "kernel" in name and np.abs(w1[name] - w0[name]).max() > 1e-2]
    assert len(moved) >= 5  # the step moved the weights: the agreement above is not two untouched models
    batch_norms = [layer for layer in two.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(layer.synchronized for layer in batch_norms)

    runs = report["runs"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "auc", "val_auc"):
        np.testing.assert_allclose(runs["mirrored"]["history"][key], runs["single"]["history"][key], rtol=1e-4,
                                   atol=1e-5, err_msg=key)
    for split in ("val", "test"):
        assert runs["mirrored"][split]["confusion_matrix"] == runs["single"][split]["confusion_matrix"]
        if runs["single"][split]["auc"] is not None:
            assert runs["mirrored"][split]["auc"] == pytest.approx(runs["single"][split]["auc"], abs=1e-6)

    assert report["refused"] is not None and "--batch-size 4" in report["refused"]
    assert report["refused_folder"] is False  # refused before the run folder was made


# -- several hosts ----------------------------------------------------------------------------
MULTI_WORKER_CHILD = textwrap.dedent('''
    import json, os, sys

    index, ports = int(sys.argv[1]), sys.argv[2].split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    import keras
    import numpy as np
    import tensorflow as tf

    from medmulti.models import build_fusion_model
    from medmulti.spec import StudySpec

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    spec = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]},
                                "modalities": [{"name": "xray", "kind": "xray", "shape": [16, 16]}]})
    with strategy.scope():
        model = build_fusion_model(spec, width=2, depth=2, embed_dim=4)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 1), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)]


    class Batches(keras.utils.PyDataset):  # what medmulti feeds: a PyDataset of ({modality: batch}, labels)
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"xray": x[4 * i:4 * i + 4]}, y[4 * i:4 * i + 4]


    try:
        model.fit(Batches(), epochs=1, verbose=0, shuffle=False)
        print("RESULT ok")
    except Exception as exc:
        print("RESULT " + json.dumps({"type": type(exc).__name__, "message": str(exc)[:300]}))
''')


class UpstreamMultiWorkerFailure(AssertionError):
    """Keras 3's model.fit under MultiWorkerMirroredStrategy fails as keras-team/keras#20585 reports."""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.xfail(raises=UpstreamMultiWorkerFailure, strict=True,
                   reason="keras-team/keras#20585: Keras 3 model.fit under MultiWorkerMirroredStrategy fails in "
                          "_maybe_symbolic_build ('Attempt to convert a value (PerReplica...)'); when this passes, "
                          "support strategy='multi_worker' (docs/scaling.md)")
def test_multi_worker_mirrored_strategy_with_keras_fit_on_two_local_workers(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER_CHILD)
    ports = ",".join(map(str, _free_ports(2)))
    logs = [(tmp_path / f"worker{i}.out", tmp_path / f"worker{i}.err") for i in range(2)]
    workers = []
    try:
        for i, (out, err) in enumerate(logs):
            with open(out, "w") as stdout, open(err, "w") as stderr:
                workers.append(subprocess.Popen([sys.executable, str(script), str(i), ports], stdout=stdout,
                                                stderr=stderr, env=CHILD_ENV))
        for worker in workers:
            worker.wait(timeout=240)  # a worker waiting for its peer forever is a failure, not a hang
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    results = []
    for (out, err), worker in zip(logs, workers):
        lines = [line[7:] for line in out.read_text().splitlines() if line.startswith("RESULT ")]
        assert worker.returncode == 0 and lines, err.read_text()[-3000:]  # the worker itself ran to the end
        results.append(lines[-1])
    failures = [json.loads(r) for r in results if r != "ok"]
    upstream = [f for f in failures if f["type"] == "ValueError" and f["message"].startswith("Attempt to convert a "
                "value (") and "PerReplica" in f["message"]]
    if failures and upstream == failures:
        raise UpstreamMultiWorkerFailure(failures[0]["message"])
    assert not failures, failures  # any other failure is ours to look at
