"""``as_tf_dataset(epochs=E)``: E epochs of the sequence in one pass, for ``model.fit`` with
``steps_per_epoch`` (one iterator for the whole run: reading goes on across epoch boundaries)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from medmulti.data.sequence import PatientSequence


def _tiny_model(seq):
    shapes = seq.element_shapes()
    inputs = {n: keras.Input(shape=shapes[n], name=n) for n in seq.input_names}
    feats = []
    for t in inputs.values():
        pool = {5: keras.layers.GlobalAveragePooling3D, 4: keras.layers.GlobalAveragePooling2D}.get(len(t.shape))
        feats.append(pool()(t) if pool else t)
    out = keras.layers.Dense(seq.spec.labels.num_classes, activation="softmax")(keras.layers.Concatenate()(feats))
    model = keras.Model(inputs, out)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    return model


def test_one_pass_serves_consecutive_epochs(clean_cohort, spec, warm_cache):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=3, cache_dir=warm_cache, progress=False,
                          augment=True, seed=4, sample_weights=True)
    seq.on_epoch_end()  # starts from the sequence's current epoch (1)
    ds = seq.as_tf_dataset(epochs=2)
    n = len(seq)
    assert int(ds.cardinality()) == 2 * n
    for first in (1, 3):  # the next pass serves the two epochs after those
        got = list(ds)
        assert len(got) == 2 * n
        for k, (x, y, w) in enumerate(got):
            ex, ey, ew = seq.batch(first + k // n, k % n)
            for name in seq.input_names:
                np.testing.assert_array_equal(x[name].numpy(), ex[name])
            np.testing.assert_array_equal(y.numpy(), ey)
            np.testing.assert_array_equal(w.numpy(), ew)


def test_first_epoch_fixes_the_epochs_of_every_pass(clean_cohort, spec, warm_cache):
    """What ``medmulti.train`` relies on: ``model.fit`` may open a second iterator (under a
    strategy it takes a first batch to build the model), which must serve the same epochs."""
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=4, cache_dir=warm_cache, progress=False,
                          seed=4)
    ds = seq.as_tf_dataset(epochs=2, first_epoch=3)
    n = len(seq)
    for _ in range(2):
        got = [y.numpy() for _, y in ds]
        assert len(got) == 2 * n
        for k, y in enumerate(got):
            np.testing.assert_array_equal(y, seq.batch(3 + k // n, k % n)[1])
    assert seq.epoch == 0  # the sequence's own counter is left alone


def test_fit_with_steps_per_epoch_runs_every_epoch_on_its_batches(clean_cohort, spec, warm_cache):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=4, cache_dir=warm_cache, progress=False)
    seen = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(0)

        def on_train_batch_end(self, batch, logs=None):
            seen[-1] += 1

    hist = _tiny_model(seq).fit(seq.as_tf_dataset(epochs=3), epochs=3, steps_per_epoch=len(seq), verbose=0,
                                shuffle=False, callbacks=[Count()])
    assert seen == [len(seq)] * 3
    assert len(hist.history["loss"]) == 3 and all(np.isfinite(hist.history["loss"]))


@pytest.mark.parametrize("epochs", [0, -1, 1.5, "2"])
def test_epochs_must_be_a_positive_integer(clean_cohort, spec, warm_cache, epochs):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=4, cache_dir=warm_cache, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        seq.as_tf_dataset(epochs=epochs)
    if epochs != 0:
        with pytest.raises(ValueError, match="first_epoch"):
            seq.as_tf_dataset(epochs=2, first_epoch=epochs)
