"""Example data generated on this machine, as ``pydicom.examples`` and ``skimage.data`` ship theirs:
the sample cohort (:mod:`~medmulti.examples.cohort`) and the writers of synthetic DICOM and
NIfTI files it uses (:mod:`~medmulti.examples.synth`).
"""

from __future__ import annotations

from .cohort import FAULT_KINDS, SampleCohort, make_sample_cohort, sample_spec

__all__ = ["make_sample_cohort", "SampleCohort", "sample_spec", "FAULT_KINDS"]
