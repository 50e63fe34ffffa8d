"""Fixtures of the scan tests: pydicom's real ``dicomdirtests`` export, a generated one, a secret."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).parent))

from scan_helpers import SPEC_YAML, write_export  # noqa: E402


@pytest.fixture(autouse=True)
def _private_config(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.config: the default secret goes to a folder of the test's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(scope="session")
def dicomdirtests() -> Path:
    """pydicom's ``dicomdirtests`` tree, as shipped (read only)."""
    return Path(os.path.dirname(get_testdata_file("DICOMDIR")))


@pytest.fixture
def spec_file(tmp_path) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(SPEC_YAML)
    return p


@pytest.fixture
def secret(tmp_path_factory) -> Path:
    """A secret file outside every scanned folder and manifest folder."""
    p = tmp_path_factory.mktemp("secret") / "scan-secret"
    p.write_text("0123456789abcdef0123456789abcdef\n")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="session")
def export(tmp_path_factory):
    """A generated export of two patients (read only): (root, planted)."""
    root = tmp_path_factory.mktemp("export") / "export"
    planted = write_export(root, n_patients=2, seed=3)
    return root, planted
