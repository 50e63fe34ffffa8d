"""Keep pydicom's value-quoting warnings and log records out of medmulti's output.

pydicom reports an invalid value by quoting it (``Invalid value for VR UI:
'<the UID>'``) through both :func:`warnings.warn` and the ``pydicom`` logger, so a
damaged header would put PHI into logs, CI output and notebooks. The readers'
entry points run under :func:`quiet_pydicom`: while a medmulti read runs in a
thread, records of the ``pydicom`` logger from that thread are dropped, and
warnings raised from pydicom modules are ignored (a process-wide warnings filter,
re-asserted at each read because ``warnings.catch_warnings`` may have reset it).
medmulti's own errors and warnings already say what is wrong without values.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from typing import Any, Callable, TypeVar

__all__ = ["quiet_pydicom"]

F = TypeVar("F", bound=Callable[..., Any])
_state = threading.local()


class _DuringMedmultiRead(logging.Filter):
    """Drop ``pydicom`` log records emitted by a thread that is inside a medmulti read."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_state, "depth", 0)


_FILTER = _DuringMedmultiRead()


def quiet_pydicom(fn: F) -> F:
    """Decorate a reader entry point so pydicom cannot echo header values while it runs.

    On each call the wrapper adds a filter to the ``pydicom`` logger (once)
    that drops its records from this thread while a decorated call is running
    (nested calls are counted), and re-asserts a process-wide filter ignoring
    warnings raised from pydicom modules. That warnings filter stays in place
    after the call returns.

    Parameters
    ----------
    fn : callable
        The function to wrap.

    Returns
    -------
    callable
        A wrapper with ``fn``'s name, docstring and signature
        (:func:`functools.wraps`) that returns what ``fn`` returns and lets its
        exceptions through.

    Examples
    --------
    >>> @quiet_pydicom
    ... def double(x):
    ...     return 2 * x
    >>> double(3), double.__name__
    (6, 'double')
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logger = logging.getLogger("pydicom")
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _state.depth -= 1

    return wrapper  # type: ignore[return-value]
