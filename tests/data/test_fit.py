"""model.fit with the sequence (threads and processes), errors from workers, and as_tf_dataset."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from medmulti.data.sequence import PatientSequence
from medmulti.errors import CorruptFileError


def _tiny_model(seq):
    """A model whose inputs are exactly the sequence's input names."""
    shapes = seq.element_shapes()
    inputs = {n: keras.Input(shape=shapes[n], name=n) for n in seq.input_names}
    feats = []
    for n, t in inputs.items():
        pool = {5: keras.layers.GlobalAveragePooling3D, 4: keras.layers.GlobalAveragePooling2D}.get(len(t.shape))
        feats.append(pool()(t) if pool else t)
    x = keras.layers.Concatenate()(feats)
    out = keras.layers.Dense(seq.spec.labels.num_classes, activation="softmax")(x)
    model = keras.Model(inputs, out)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    return model


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_fit_one_step(clean_cohort, spec, warm_cache, processes):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=2, cache_dir=warm_cache, progress=False,
                          augment=True, workers=2, use_multiprocessing=processes, max_queue_size=2)
    model = _tiny_model(seq)
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(seq, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_worker_errors_reach_the_parent_typed(cohort_copy, spec, processes):
    root, cache = cohort_copy
    seq = PatientSequence(root / "manifest.csv", spec, "train", batch_size=64, cache_dir=cache,
                          progress=False, workers=2, use_multiprocessing=processes, shuffle=False)
    model = _tiny_model(seq)
    pid = seq.patient_ids[-1]
    victim = sorted((root / pid / "ct").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])  # breaks after construction
    with pytest.raises(CorruptFileError) as info:
        model.fit(seq, epochs=1, verbose=0)
    assert info.value.patient_id == pid and info.value.modality == "ct"


def test_as_tf_dataset_equals_the_sequence_epoch_by_epoch(clean_cohort, spec, warm_cache):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=3, cache_dir=warm_cache, progress=False,
                          augment=True, seed=4, sample_weights=True)
    ds = seq.as_tf_dataset()
    inputs_spec, labels_spec, weights_spec = ds.element_spec
    assert set(inputs_spec) == set(seq.input_names)
    assert inputs_spec["ct"].shape.as_list() == [None, 16, 16, 16, 2]
    assert labels_spec.shape.as_list() == [None, 2] and weights_spec.shape.as_list() == [None]
    assert int(ds.cardinality()) == len(seq)
    for epoch in range(2):  # each iteration is the next epoch of the sequence
        got = list(ds)
        assert len(got) == len(seq)
        for i, (x, y, w) in enumerate(got):
            ex, ey, ew = seq.batch(epoch, i)
            for n in seq.input_names:
                np.testing.assert_array_equal(x[n].numpy(), ex[n])
            np.testing.assert_array_equal(y.numpy(), ey)
            np.testing.assert_array_equal(w.numpy(), ew)


def test_as_tf_dataset_feeds_fit(clean_cohort, spec, warm_cache):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=4, cache_dir=warm_cache, progress=False)
    hist = _tiny_model(seq).fit(seq.as_tf_dataset(), epochs=2, verbose=0, shuffle=False)
    assert len(hist.history["loss"]) == 2 and all(np.isfinite(hist.history["loss"]))


def test_tf_dataset_errors_come_back_typed_inside_typed_errors(cohort_copy, spec):
    import tensorflow as tf

    import medmulti as mm
    from medmulti.data.tfdata import typed_error_of

    root, cache = cohort_copy
    seq = PatientSequence(root / "manifest.csv", spec, "train", batch_size=64, cache_dir=cache,
                          progress=False, shuffle=False)
    pid = seq.patient_ids[-1]
    victim = sorted((root / pid / "ct").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])  # breaks after construction
    ds = seq.as_tf_dataset()
    # without the block: TensorFlow's own error type, carrying the message
    with pytest.raises(tf.errors.OpError) as raw:
        list(ds)
    assert not isinstance(raw.value, CorruptFileError)
    assert "CorruptFileError" in str(raw.value) and pid in str(raw.value)
    carried = typed_error_of(raw.value)
    assert isinstance(carried, CorruptFileError) and carried.patient_id == pid
    # inside it: the typed error, from direct iteration and from model.fit
    with pytest.raises(CorruptFileError) as info, mm.typed_errors():
        list(ds)
    assert info.value.patient_id == pid and info.value.modality == "ct"
    assert victim.name in str(info.value.path)
    with pytest.raises(CorruptFileError) as info, mm.typed_errors():
        _tiny_model(seq).fit(ds, epochs=1, verbose=0, shuffle=False)
    assert info.value.patient_id == pid and info.value.modality == "ct"


def test_typed_errors_lets_go_of_what_the_tensorflow_error_held():
    """The typed error does not keep the failed iteration's frames (a fit's iterator, batches) alive."""
    import gc
    import weakref

    import medmulti as mm
    from medmulti.data.tfdata import _carry

    class Held:
        pass

    refs = []

    def failing_iteration():
        held = Held()
        refs.append(weakref.ref(held))
        raise RuntimeError(str(_carry(CorruptFileError("truncated", patient_id="p1", modality="ct"))))

    with pytest.raises(CorruptFileError) as info, mm.typed_errors():
        failing_iteration()
    gc.collect()
    assert info.value.patient_id == "p1" and refs[0]() is None


def test_typed_errors_lets_other_errors_through():
    import medmulti as mm
    from medmulti.data.tfdata import typed_error_of

    with pytest.raises(ValueError, match="unrelated"), mm.typed_errors():
        raise ValueError("unrelated [medmulti-error:999999999]")  # unknown token: not ours
    assert typed_error_of(KeyError("x")) is None
