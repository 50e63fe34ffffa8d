"""Cache keys depend on exactly the documented inputs (medmulti.data.cache_key).

The key of one (patient, modality) is the SHA-256 of a JSON document holding the cache
format, the medmulti version, the modality's spec section (less ``required``), the
source's fingerprint and, for a non-reference 3D modality, the reference's section and
fingerprint. These tests rebuild that document from its documented parts and check the
key against it, then change each input in turn (and inputs that must not count).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

import medmulti._version
from medmulti.data import cache, cache_key
from medmulti.data.cache_key import (
    CACHE_FORMAT,
    entry_key,
    entry_keys,
    fingerprint_source,
)
from medmulti.io import SourceRef
from medmulti.spec import LabelSpec, ModalitySpec, StudySpec


def _spec(**ct) -> StudySpec:
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, shape=(8, 8, 8), **ct),
            ModalitySpec(name="mr", kind="mr"),
            ModalitySpec(name="pet", kind="mr", dims=3, required=False),
            ModalitySpec(name="xray", kind="xray", shape=(16, 16), required=False),
        ],
        labels=LabelSpec(classes=["a", "b"], column="dx"),
    )


#: file of patient p1 -> size in bytes (contents never matter: no pixel is read for a key)
FILES = {"ct/0.dcm": 10, "ct/1.dcm": 11, "ct/2.dcm": 12, "mr.nii": 20, "pet.nii": 25, "xr.dcm": 30}


@pytest.fixture()
def cohort(tmp_path):
    root = tmp_path / "data"
    patient = root / "p1"
    for rel, size in FILES.items():
        (patient / rel).parent.mkdir(parents=True, exist_ok=True)
        (patient / rel).write_bytes(b"x" * size)
    return root, {"ct": patient / "ct", "mr": patient / "mr.nii", "pet": patient / "pet.nii", "xray": patient / "xr.dcm"}


def _section(mod: ModalitySpec) -> str:
    d = mod.to_dict()
    d.pop("required")
    d.pop("select", None)
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def _documented_key(spec: StudySpec, name: str, sources, root, sha256=None) -> str:
    """The key built from the documented document alone (module docstring of cache_key)."""
    pins = sha256 or {}
    mod = spec.modality(name)
    doc = {
        "cache_format": CACHE_FORMAT,
        "medmulti": medmulti._version.__version__,
        "modality": _section(mod),
        "source": fingerprint_source(sources.get(name), root=root, sha256=pins.get(name)),
    }
    ref = spec.reference
    if mod.dims == 3 and ref is not None and ref.name != name:
        doc["reference"] = {"modality": _section(ref),
                            "source": fingerprint_source(sources.get(ref.name), root=root, sha256=pins.get(ref.name))}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _keys(spec, sources, root, **kw):
    return {n: entry_key(spec, n, sources, root=root, **kw) for n in spec.names}


def _changed(before, after):
    return sorted(n for n in before if before[n] != after[n])


@pytest.fixture(autouse=True)
def _no_memo():
    # the per-process memos must never hide an input: start and end every test without them
    cache_key._KEYS.clear()
    cache_key._SECTIONS.clear()
    yield
    cache_key._KEYS.clear()
    cache_key._SECTIONS.clear()


def test_the_store_module_reexports_the_key_functions():
    for name in ("CACHE_FORMAT", "entry_key", "entry_keys", "fingerprint_source"):
        assert name in cache.__all__ and getattr(cache, name) is getattr(cache_key, name)
    assert set(cache_key.__all__) <= set(cache.__all__)


@pytest.mark.parametrize("pinned", [False, True])
def test_the_key_is_the_hash_of_the_documented_document(cohort, pinned):
    root, src = cohort
    spec = _spec()
    pins = {"ct": "a" * 64, "xray": "B" * 64} if pinned else None
    keys = _keys(spec, src, root, sha256=pins)
    assert keys == {n: _documented_key(spec, n, src, root, pins) for n in spec.names}
    assert all(len(k) == 64 and int(k, 16) >= 0 and k == k.lower() for k in keys.values())
    assert entry_keys(spec, spec.names, src, root=root, sha256=pins) == keys


def test_a_source_choosing_a_series_or_volume_enters_its_own_key_only(cohort):
    root, src = cohort
    spec = _spec()
    base = _keys(spec, src, root)
    chosen = dict(src, ct=SourceRef(src["ct"], series=3), pet=SourceRef(src["pet"], volume=1))
    keys = _keys(spec, chosen, root)
    assert keys == {n: _documented_key(spec, n, chosen, root) for n in spec.names}
    assert _changed(base, keys) == ["ct", "mr", "pet"]  # the reference's choice reaches the 3D modalities
    # a SourceRef choosing nothing keys exactly as the plain path
    assert _keys(spec, dict(src, mr=SourceRef(src["mr"])), root) == base


def test_version_and_cache_format_change_every_key(cohort, monkeypatch):
    root, src = cohort
    spec = _spec()
    base = _keys(spec, src, root)
    monkeypatch.setattr(medmulti._version, "__version__", "999.0")
    cache_key._KEYS.clear()
    assert _changed(base, _keys(spec, src, root)) == sorted(spec.names)
    monkeypatch.undo()
    cache_key._KEYS.clear()
    assert _keys(spec, src, root) == base
    monkeypatch.setattr(cache_key, "CACHE_FORMAT", CACHE_FORMAT + 1)
    cache_key._KEYS.clear()
    assert _changed(base, _keys(spec, src, root)) == sorted(spec.names)


def test_each_source_changes_exactly_the_keys_that_read_it(cohort):
    root, src = cohort
    spec = _spec()
    base = _keys(spec, src, root)
    for name, expected in [("xray", ["xray"]), ("mr", ["mr"]), ("pet", ["pet"]), ("ct", ["ct", "mr", "pet"])]:
        f = src[name] / "1.dcm" if name == "ct" else src[name]
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        now = _keys(spec, src, root)
        assert _changed(base, now) == expected, name
        base = now
    # a file added to the reference series folder is a change of the reference
    (src["ct"] / "3.dcm").write_bytes(b"x")
    assert _changed(base, _keys(spec, src, root)) == ["ct", "mr", "pet"]


def test_each_spec_section_changes_exactly_the_keys_that_use_it(cohort):
    root, src = cohort
    base = _keys(_spec(), src, root)
    spec = _spec()
    spec.modalities[3].crop = "none" if spec.modalities[3].crop != "none" else "center"
    assert _changed(base, _keys(spec, src, root)) == ["xray"]
    spec = _spec()
    spec.modalities[1].intensity = {"method": "zscore"}
    assert _changed(base, _keys(spec, src, root)) == ["mr"]
    assert _changed(base, _keys(_spec(spacing_mm=(2.0, 2.0, 2.0)), src, root)) == ["ct", "mr", "pet"]


def test_inputs_outside_the_document_do_not_change_a_key(cohort, tmp_path):
    root, src = cohort
    spec = _spec()
    base = _keys(spec, src, root)
    # required, select (how `medmulti scan` picks a series), the labels and the spec's name do not change an array
    other = _spec()
    other.modalities[0].required = False
    other.modalities[0].select = {"min_images": 20}
    other.modalities[3].required = True
    other.labels = LabelSpec(classes=["x", "y", "z"], column="other")
    other.name = "renamed"
    assert _keys(other, src, root) == base
    # an absent modality does not change another modality's key (except the reference's)
    assert {n: k for n, k in _keys(spec, dict(src, xray=None), root).items() if n != "xray"} == {
        n: k for n, k in base.items() if n != "xray"}
    # the location of the manifest root does not count: paths enter relative to it
    moved = tmp_path / "elsewhere" / "cohort"
    moved.parent.mkdir()
    os.rename(root, moved)
    assert _keys(spec, {n: moved / p.relative_to(root) for n, p in src.items()}, moved) == base
    # a pin replaces sizes and modification times
    pinned = _keys(spec, {n: moved / p.relative_to(root) for n, p in src.items()}, moved, sha256={"xray": "f" * 64})
    (moved / "p1" / "xr.dcm").write_bytes(b"changed bytes, same pin")
    assert _keys(spec, {n: moved / p.relative_to(root) for n, p in src.items()}, moved,
                 sha256={"xray": "f" * 64}) == pinned


def test_the_memo_never_returns_a_stale_key(cohort):
    root, src = cohort
    spec = _spec()
    first = entry_key(spec, "mr", src, root=root)
    st = src["ct"].joinpath("0.dcm").stat()
    os.utime(src["ct"] / "0.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = entry_key(spec, "mr", src, root=root)  # memo warm, a reference file changed
    assert second != first and second == _documented_key(spec, "mr", src, root)
