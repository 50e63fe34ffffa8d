"""The readers' error ladder: any exception at a reader's boundary becomes a medmulti error.

Third-party readers (pydicom, nibabel, zlib, struct, the pixel decoders) raise
``ValueError``, ``EOFError``, ``struct.error``, ``zlib.error``, ``KeyError``...
whose text may hold header values. Every reader wraps its work in
:class:`reader_errors`, which lets :class:`~medmulti.errors.MedmultiError`
through (filling in missing context when asked) and turns anything else into a
typed error naming the file, never the original text (``from None``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType

from ..errors import CorruptFileError, MedmultiError, MissingFileError, ResourceLimitError

__all__ = ["reader_errors", "source_errors"]

logger = logging.getLogger("medmulti.io")
_NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass(frozen=True)
class reader_errors:
    """Context manager converting exceptions raised inside it into medmulti errors.

    The rungs, in order:

    1. :class:`~medmulti.errors.MedmultiError` passes through, with the context
       fields named in ``fill`` filled in where it lacks them;
    2. ``RecursionError`` -> ``ResourceLimitError(nested)`` when ``nested`` is given;
    3. ``MemoryError`` -> ``ResourceLimitError(memory)`` when ``memory`` is given;
    4. ``OSError`` -> ``MissingFileError(unreadable)`` when ``unreadable`` is given;
    5. any other ``Exception`` -> ``CorruptFileError(corrupt)``.

    ``KeyboardInterrupt``, ``SystemExit`` and other non-``Exception`` exceptions
    pass through untouched, unless ``panics`` is set.

    Parameters
    ----------
    path : str
        File or folder named in the errors raised here.
    corrupt : str
        Message of the ``CorruptFileError`` for any other exception.
    modality : str, optional
        Modality named in the errors raised here.
    memory : str, optional
        Message for ``MemoryError`` (without it, a ``MemoryError`` counts as corrupt data).
    nested : str, optional
        Message for ``RecursionError`` (without it, corrupt data).
    unreadable : str, optional
        Message for ``OSError`` (without it, corrupt data).
    fill : tuple of {"path", "modality"}
        Context filled into a passing ``MedmultiError`` that lacks it.
    keyword : str, optional
        DICOM keyword named in the errors raised here.
    panics : bool
        Also count as corrupt data the failures that are not an ``Exception``
        (pyo3's ``PanicException`` when a Rust decoder panics), except
        ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit``.

    Examples
    --------
    >>> from medmulti.errors import CorruptFileError
    >>> try:
    ...     with reader_errors("scan.dcm", corrupt="the file cannot be read"):
    ...         int("header text")
    ... except CorruptFileError as err:
    ...     print(type(err).__name__, err.path, err.__cause__)
    CorruptFileError scan.dcm None
    """

    path: str
    corrupt: str
    modality: str | None = None
    memory: str | None = None
    nested: str | None = None
    unreadable: str | None = None
    fill: tuple[str, ...] = ()
    keyword: str | None = None
    panics: bool = False

    def __enter__(self) -> reader_errors:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or isinstance(exc, _NEVER_CAUGHT) or not (self.panics or isinstance(exc, Exception)):
            return False
        if isinstance(exc, MedmultiError):
            if self.fill:
                exc.with_context(
                    path=self.path if "path" in self.fill else None,
                    modality=self.modality if "modality" in self.fill else None,
                )
            return False  # re-raised as it is: same type, same traceback
        where = {"path": self.path, "modality": self.modality, "keyword": self.keyword}
        if isinstance(exc, RecursionError) and self.nested is not None:
            raise ResourceLimitError(self.nested, **where) from None
        if isinstance(exc, MemoryError) and self.memory is not None:
            raise ResourceLimitError(self.memory, **where) from None
        if isinstance(exc, OSError) and self.unreadable is not None:
            raise MissingFileError(self.unreadable, **where) from None
        logger.debug("unexpected reader failure", exc_info=False)
        raise CorruptFileError(self.corrupt, **where) from None


def source_errors(path: str, modality: str | None, *, memory: str, fill: tuple[str, ...]) -> reader_errors:
    """The ladder of the entry points that take any source (``read_image``, ``inspect_source``).

    Parameters
    ----------
    path : str
        The source as given.
    modality : str, optional
        The modality asked for.
    memory : str
        Message for ``MemoryError``.
    fill : tuple of {"path", "modality"}
        Context filled into a passing ``MedmultiError`` that lacks it.

    Returns
    -------
    reader_errors
        Deep nesting -> ``ResourceLimitError``; an ``OSError`` ->
        ``MissingFileError("the file cannot be read")``; anything else ->
        ``CorruptFileError("the file cannot be read")``.
    """
    return reader_errors(
        path,
        modality=modality,
        fill=fill,
        nested="the file is nested too deeply to read",
        memory=memory,
        unreadable="the file cannot be read",
        corrupt="the file cannot be read",
    )
