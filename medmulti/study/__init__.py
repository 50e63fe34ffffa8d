"""One study: its modalities read, co-registered onto the reference grid, intensity-normalised
(:mod:`~medmulti.study.preprocess`), and drawn as one picture (:mod:`~medmulti.study.picture`).
"""

from __future__ import annotations

from .picture import inspect_study, plot_preprocessed, render_study
from .preprocess import Preprocessed, preprocess_study, reference_grid

__all__ = ["preprocess_study", "Preprocessed", "reference_grid", "render_study", "inspect_study",
           "plot_preprocessed"]
