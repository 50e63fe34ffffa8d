"""A script without an ``if __name__ == "__main__":`` guard: spawned workers would import
it again and run it top to bottom (re-generating or deleting the parent's files), so the
parallel paths (patient checks, cache fill, validation, JPEG 2000 decoding) must see that
and work in the calling process, and give the same result as a guarded run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = """
import json, sys
import numpy as np
from medmulti.data.cache_fill import preprocess_manifest
from medmulti.data.sequence import PatientSequence
from medmulti.examples.cohort import make_sample_cohort
from medmulti.spec import StudySpec

root, spec_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
spec = StudySpec.from_yaml(spec_path)
summary = preprocess_manifest(root + "/manifest.csv", spec, root + "/cache", workers=2, progress=False)
seq = PatientSequence(root + "/manifest.csv", spec, "train", batch_size=4, cache_dir=root + "/cache2",
                      progress=False, shuffle=False)
x, y = seq[0]
np.save(out, x["ct"])
print("RESULT", json.dumps({"computed": summary.computed, "failures": len(summary.failures),
                            "patients": len(seq.patient_ids)}))
"""


def test_unguarded_script_falls_back_to_one_process(tmp_path, spec, spec_path):
    from medmulti.data.sequence import PatientSequence
    from medmulti.examples.cohort import make_sample_cohort

    root = tmp_path / "cohort"
    make_sample_cohort(root, 30, seed=3, faults=False, progress=False)  # > 16 train rows: checks go parallel
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "ct.npy"
    proc = subprocess.run([sys.executable, str(script), str(root), str(spec_path), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert len(results) == 1  # only the parent ran the script's work
    assert "Traceback" not in proc.stderr  # no worker was started to run the script again
    import json

    got = json.loads(results[0].split(" ", 1)[1])
    assert got["failures"] == 0 and got["computed"] == 30 * len(spec.names) - _absent(root, spec)
    assert "preprocessing runs in this process" in proc.stderr  # both paths said why
    assert "checking patients runs in this process" in proc.stderr
    # the same batch as a sequence built here, in the test process
    seq = PatientSequence(root / "manifest.csv", spec, "train", batch_size=4, cache_dir=tmp_path / "cache3",
                          progress=False, shuffle=False)
    assert got["patients"] == len(seq.patient_ids)
    np.testing.assert_array_equal(np.load(out), seq[0][0]["ct"])


def _absent(root, spec) -> int:
    from medmulti.manifest import load_manifest

    m = load_manifest(root / "manifest.csv", spec, strict=False)
    return sum(1 for r in m.rows for n in spec.names if r.sources.get(n) is None)


@pytest.mark.parametrize("source,guarded", [
    ("import medmulti\nmedmulti.preprocess_manifest('m.csv', 's.yaml', 'c')\n", False),
    ("def main():\n    pass\n\nif __name__ == '__main__':\n    main()\n", True),
    ('if "__main__" == __name__:\n    pass\n', True),
])
def test_main_is_guarded_reads_the_main_script(tmp_path, monkeypatch, source, guarded):
    import types

    from medmulti import _processes

    script = tmp_path / "script.py"
    script.write_text(source)
    fake = types.ModuleType("__main__")
    fake.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake)
    _processes._file_is_guarded.cache_clear()
    assert _processes.main_is_guarded() is guarded
    assert _processes.workers_allowed("x", "fork") is True  # forked workers never re-import
    del fake.__file__  # a notebook / REPL / python -c
    assert _processes.main_is_guarded() is True
