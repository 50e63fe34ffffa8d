"""Test and benchmark helpers for medmulti's reliability and privacy battery.

Nothing here is imported by ``import medmulti``. The submodules build hostile
inputs and measure how the readers and pipeline react to them:

* :mod:`medmulti_testing.fuzz` - seeded, deterministic mutators of DICOM and
  NIfTI bytes (bit flips, truncation, length fields, tag duplication/swaps, VR
  swaps, declared sizes blown up) and a structural DICOM element walker.
* :mod:`medmulti_testing.seeds` - the fuzz seed set (pydicom's and nibabel's
  bundled files plus :mod:`medmulti.examples.synth` output), found locally, never downloaded.
* :mod:`medmulti_testing.bombs` - size bombs (huge declared sizes, deflate bombs,
  deeply nested sequences).
* :mod:`medmulti_testing.hostile_text` - spec bombs (YAML alias, merge-key and
  nesting bombs; NaN, infinity, booleans and absurd sizes in every number) and
  manifests with control or invisible characters in one field, or a patient
  leaking into another split under a disguised key.
* :mod:`medmulti_testing.harness` - run a reader on one input and classify the
  outcome (accepted / typed error / untyped escape) with CPU time and memory.
* :mod:`medmulti_testing.canary` - a study whose every PHI attribute holds a
  unique canary string, and a scanner that finds canaries in text and bytes.
* :mod:`medmulti_testing.executor_tasks` - per-item tasks for the executor tests (faults,
  worker processes that die), light to import in a spawned worker.
"""
