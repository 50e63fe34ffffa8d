"""The readers' caps (:class:`~medmulti.limits.Limits`); they live in :mod:`medmulti.limits`,
a foundation module, because the spec checks its shapes against them too."""

from __future__ import annotations

from ..limits import DEFAULT_LIMITS, Limits

__all__ = ["Limits", "DEFAULT_LIMITS"]
