"""train()'s option records (ModelOptions, FitOptions, DataOptions) and its keywords, which map onto them.

One 1-epoch run with keywords and one with the records, on a tiny generated cohort with
tiny CNNs, must write the same run card options; the rest is checked without training.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from medmulti import cli, training
from medmulti.models import ModelOptions
from medmulti.training import DataOptions, FitOptions, train
from medmulti.training.options import resolve_train_options

RECORDS = (ModelOptions, FitOptions, DataOptions)

#: the run card's "options" keys before the records existed (tests and users read them)
CARD_OPTION_KEYS = {"epochs", "batch_size", "fusion", "learning_rate", "patience", "monitor", "width", "depth",
                    "embed_dim", "dropout", "modality_dropout", "backbone", "norm", "stem_stride", "pooling",
                    "augment", "class_balance", "on_missing", "on_corrupt"}

#: every keyword train() took before the records existed
LEGACY_KEYWORDS = {"epochs", "batch_size", "seed", "fusion", "modalities", "cache_dir", "learning_rate", "patience",
                   "monitor", "width", "depth", "embed_dim", "dropout", "modality_dropout", "backbone", "norm",
                   "stem_stride", "pooling", "augment", "class_balance", "on_missing", "on_corrupt", "data_root",
                   "deterministic", "progress", "overwrite"}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_old_keyword_has_one_home():
    homes = [_fields(cls) for cls in RECORDS]
    assert sum(len(h) for h in homes) == len(set().union(*homes))  # no field in two records
    explicit = set(inspect.signature(train).parameters) - {"manifest", "spec", "out"}
    assert LEGACY_KEYWORDS <= set().union(*homes) | explicit
    assert not set().union(*homes) & explicit  # no default repeated in train's signature


def test_keywords_map_onto_the_records():
    model, fit, data = resolve_train_options(width=2, fusion="gated", epochs=3, seed=7, deterministic=False,
                                             cache_dir="cache", modalities=["ct"], on_missing="zero")
    assert model == ModelOptions(width=2, fusion="gated")
    assert fit == FitOptions(epochs=3, seed=7, deterministic=False)
    assert data == DataOptions(cache_dir="cache", modalities=("ct",), on_missing="zero")
    # a keyword replaces the field of a given record, the record's other fields stay
    model, fit, data = resolve_train_options(ModelOptions(width=16, depth=2), FitOptions(epochs=4), width=2,
                                             batch_size=2)
    assert (model.width, model.depth, fit.epochs, fit.batch_size) == (2, 2, 4, 2)
    assert data == DataOptions()


def test_cli_defaults_are_the_record_defaults():
    args = cli.build_parser().parse_args(["train", "m.csv", "--spec", "s.yaml", "--out", "run"])
    model, fit = ModelOptions(), FitOptions()
    for name in ("fusion", "width", "depth", "dropout", "modality_dropout", "backbone"):
        assert getattr(args, name) == getattr(model, name), name
    for name in ("epochs", "batch_size", "learning_rate", "patience", "monitor", "seed"):
        assert getattr(args, name) == getattr(fit, name), name
    assert (args.cache, args.modalities, args.on_missing, args.on_corrupt) == (None, None, "error", "error")


def test_unknown_keyword_and_wrong_records_are_type_errors(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TypeError, match=r"train\(\) got an unexpected keyword argument 'widht'"):
        train("missing.csv", "missing.yaml", out, widht=2)
    with pytest.raises(TypeError, match="'fit' must be FitOptions or None, got ModelOptions"):
        train("missing.csv", "missing.yaml", out, fit=ModelOptions())  # type: ignore[arg-type]
    assert not out.exists()  # refused before the run folder is made


def test_fit_options_check_their_values(tmp_path):
    with pytest.raises(ValueError, match="monitor must be one of"):
        FitOptions(monitor="auc")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train("missing.csv", "missing.yaml", tmp_path / "run", epochs=0)
    assert training.MONITORS == ("val_loss", "val_auc", "loss")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medmulti import make_sample_cohort

    root = tmp_path_factory.mktemp("options_cohort")
    return make_sample_cohort(root / "cohort", n_patients=12, seed=3, faults=False, progress=False), root


def test_keywords_and_records_write_the_same_run_card(cohort):
    c, root = cohort
    cache = root / "cache"
    by_keywords = train(c.manifest, c.spec, root / "keywords", epochs=1, batch_size=4, seed=2, width=2, depth=2,
                        embed_dim=4, stem_stride=2, fusion="gated", cache_dir=cache, progress=False)
    by_records = train(c.manifest, c.spec, root / "records", progress=False,
                       model=ModelOptions(width=2, depth=2, embed_dim=4, stem_stride=2, fusion="gated"),
                       fit=FitOptions(epochs=1, batch_size=4, seed=2), data=DataOptions(cache_dir=cache))
    cards = [json.loads((r.run_dir / "run_card.json").read_text()) for r in (by_keywords, by_records)]
    assert cards[0]["options"] == cards[1]["options"]
    assert CARD_OPTION_KEYS <= set(cards[0]["options"])
    assert set(cards[0]["options"]) - CARD_OPTION_KEYS == {"attention_units", "lr_schedule", "cv", "tensorboard",
                                                           "strategy", "mixed_precision", "jit_compile"}
    assert cards[0]["options"]["width"] == 2 and cards[0]["options"]["fusion"] == "gated"
    for key in ("seed", "deterministic", "modalities", "cache_dir", "counts", "model"):
        assert cards[0][key] == cards[1][key], key
    assert by_keywords.history == by_records.history  # same seed, same machine, same run
