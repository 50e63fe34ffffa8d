"""The error tree: one root, context in messages, pickling keeps everything."""

import pickle

import pytest

import medmulti as mm
from medmulti import errors

ALL = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]


@pytest.mark.parametrize("cls", ALL)
def test_every_error_is_a_medmulti_error_and_pickles(cls):
    err = cls("it broke", path="p/1.dcm", modality="ct", patient_id="P001", keyword="PixelData", hint="fix it")
    assert isinstance(err, mm.MedmultiError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.context() == err.context()
    for part in ("P001", "ct", "p/1.dcm", "PixelData", "it broke", "fix it"):
        assert part in str(back)


def test_manifest_error_names_row_and_column_and_pickles():
    err = mm.ManifestError("unknown split 'dev'", row=7, column="split", path="manifest.csv")
    back = pickle.loads(pickle.dumps(err))
    assert back.row == 7 and back.column == "split"
    assert "row 7" in str(back) and "'split'" in str(back)


def test_with_context_fills_only_missing_fields():
    err = mm.CorruptFileError("bad", path="a.dcm")
    err.with_context(path="b.dcm", patient_id="P2", modality="mr")
    assert err.path == "a.dcm" and err.patient_id == "P2" and "P2" in str(err)


def test_missing_file_error_is_also_file_not_found():
    assert issubclass(mm.MissingFileError, FileNotFoundError)


@pytest.mark.parametrize("check", sorted(errors.CHECK_ERRORS))
def test_check_names_round_trip_through_errors_and_pickle(check):
    from medmulti.manifest import Problem

    problem = Problem("P001", "ct", "P001/ct", check, "error", "it broke", "fix it")
    err = problem.to_error()
    assert type(err) is errors.error_class_of(check) and err.check == check
    back = pickle.loads(pickle.dumps(err))
    assert back.check == check and back.patient_id == "P001" and back.modality == "ct"
    again = Problem.from_error(back)
    assert (again.patient_id, again.modality, again.path, again.check, again.hint) == \
        ("P001", "ct", "P001/ct", check, "fix it")


def test_every_error_class_has_a_check_name_and_keeps_an_explicit_one():
    for cls in ALL:
        assert cls("x").check == cls.default_check
    err = errors.CorruptFileError("x", check="sha256_mismatch", argument="series")
    back = pickle.loads(pickle.dumps(err))
    assert (back.check, back.argument) == ("sha256_mismatch", "series")
    assert errors.error_class_of("patient_in_two_splits") is errors.ManifestError
