"""StudySpec: YAML round trip, strict validation naming the key."""

import numpy as np
import pytest

from medmulti import SpecError, StudySpec

BASE = {
    "labels": {"column": "diagnosis", "classes": ["healthy", "disease"]},
    "modalities": [
        {"name": "ct", "kind": "ct", "shape": [16, 16, 16], "intensity": {"windows": ["brain", [40, 80]]}},
        {"name": "mr", "kind": "mr"},
        {"name": "xray", "kind": "xray", "shape": [32, 32], "required": False},
    ],
}


def test_yaml_round_trip(tmp_path):
    spec = StudySpec.from_dict(BASE)
    spec.to_yaml(tmp_path / "spec.yaml")
    assert StudySpec.from_yaml(tmp_path / "spec.yaml") == spec
    assert not list(tmp_path.glob(".*tmp"))


def test_defaults_and_derived_values():
    spec = StudySpec.from_dict(BASE)
    assert spec.reference.name == "ct"
    assert spec.modality("ct").input_shape == (16, 16, 16, 2)
    assert spec.modality("xray").dims == 2 and spec.modality("mr").dims == 3
    assert spec.names == ["ct", "mr", "xray"]
    np.testing.assert_array_equal(spec.labels.encode({"diagnosis": "disease"}), [0, 1])


@pytest.mark.parametrize(
    "patch, keyword",
    [
        ({"modalities": [{"name": "ct", "kind": "pet"}]}, "kind"),
        ({"modalities": [{"name": "ct", "kind": "ct", "colour": 1}]}, "colour"),
        ({"modalities": [{"name": "x", "kind": "xray"}]}, "shape"),
        ({"modalities": [{"name": "ct", "kind": "ct", "shape": [0, 4, 4]}]}, "shape"),
        ({"modalities": [{"name": "ct", "kind": "ct", "register": "affine"}]}, "register"),
        ({"labels": {"column": "d", "classes": ["a"]}}, "classes"),
        ({"labels": {"column": "d", "classes": ["a", "b"], "encoding": "ordinal"}}, "encoding"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_values_name_the_key(patch, keyword):
    data = {**BASE, **patch}
    with pytest.raises(SpecError) as info:
        StudySpec.from_dict(data)
    assert info.value.keyword == keyword


def test_unknown_label_is_refused():
    spec = StudySpec.from_dict(BASE)
    with pytest.raises(SpecError):
        spec.labels.encode({"diagnosis": "flu"})


def test_multi_label_encoding():
    spec = StudySpec.from_dict({**BASE, "labels": {"columns": ["effusion", "nodule"]}})
    assert spec.labels.multi_label and spec.labels.classes == ["effusion", "nodule"]
    np.testing.assert_array_equal(spec.labels.encode({"effusion": "1", "nodule": "0"}), [1, 0])
