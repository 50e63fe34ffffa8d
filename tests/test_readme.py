"""The README's Python example runs as written, as a plain script (no main guard) in an
empty folder: no error, no worker re-running the script, the promised outputs printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    text = README.read_text()
    section = text.split("## In Python", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_readme_python_example_runs_as_a_script(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_python_example())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "(40, 64, 64)" in proc.stdout and "CT" in proc.stdout  # the CT series shape it prints
    assert "Epoch 2/2" in proc.stdout
    assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").rglob("*.npy"))
