"""The user guide documents every error class."""

from pathlib import Path

from medmulti import errors

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_troubleshooting_covers_every_error_class():
    text = (DOCS / "troubleshooting.md").read_text()
    missing = [name for name in errors.__all__
               if isinstance(getattr(errors, name), type) and f"## `{name}`" not in text]
    assert not missing, f"docs/troubleshooting.md lacks sections for {missing}"
