"""Open and list input files without leaving a root and without blocking.

Two rules for everything medmulti reads from a data folder:

* **Regular files only.** A named pipe (FIFO), socket or device is refused with
  :class:`~medmulti.errors.UnsupportedDataError` after an ``lstat``/``stat``
  and before any ``open``: opening a FIFO blocks until a writer appears, so a
  FIFO in a manifest would hang ``validate`` forever. Files are also opened
  with ``O_NONBLOCK`` and checked again with ``fstat`` on the open descriptor
  (a file swapped for a FIFO between the check and the open is refused, not
  waited on).
* **Nothing outside the root.** A series folder is listed with ``lstat``
  semantics (:func:`list_files`): a symlink inside it is followed component by
  component, its target checked lexically against the root *before* anything
  at the target is touched (no ``stat``, ``open`` or ``listdir`` outside the
  root), and one that leads outside is refused with
  :class:`~medmulti.errors.UnsafePathError`. The root is the folder itself
  unless the caller names a wider one (``root=``).

These are not defences against a folder modified while it is read (the final
component is opened with ``O_NOFOLLOW`` and checked with ``fstat``, but the
folders above it are not pinned).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import BinaryIO

from ..errors import MissingFileError, ResourceLimitError, UnsafePathError, UnsupportedDataError

__all__ = [
    "FolderEntry",
    "SymlinkEscape",
    "MAX_SYMLINKS",
    "non_regular_kind",
    "check_regular",
    "open_regular",
    "resolve_within",
    "is_within",
    "list_files",
]

#: Most symlinks followed for one path (as Linux's ``MAXSYMLINKS``); more is a loop.
MAX_SYMLINKS = 40

_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_RDONLY | _O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class SymlinkEscape(Exception):
    """A symlink leads outside the root (``loop=False``) or there are too many (``loop=True``).

    Internal: callers turn it into :class:`~medmulti.errors.UnsafePathError` with
    their own wording and context.
    """

    def __init__(self, loop: bool = False) -> None:
        self.loop = loop
        super().__init__("too many symlinks" if loop else "a symlink leads outside the root")


def non_regular_kind(mode: int) -> str | None:
    """Name the kind of a non-regular file from its ``st_mode``.

    Parameters
    ----------
    mode : int
        ``os.stat_result.st_mode``.

    Returns
    -------
    str or None
        ``"a named pipe (FIFO)"``, ``"a socket"``, ``"a character device"``,
        ``"a block device"``, ``"a folder"``, ``"a symlink"`` or ``"not a regular
        file"``; ``None`` for a regular file.

    Examples
    --------
    >>> import stat
    >>> non_regular_kind(stat.S_IFIFO | 0o644)
    'a named pipe (FIFO)'
    >>> non_regular_kind(stat.S_IFREG | 0o644) is None
    True
    """
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return kind
    return "not a regular file"


def _refuse(kind: str, name: str) -> UnsupportedDataError:
    return UnsupportedDataError(
        f"this is {kind}, not a regular file: medmulti reads regular files only and does not open it",
        path=name,
        hint="replace it with the image file it stands for (a DICOM or NIfTI file), or remove it",
    )


def check_regular(path: str | PathLike[str], *, name: str | None = None) -> os.stat_result:
    """``stat`` a path (following symlinks) and refuse anything but a regular file, without opening it.

    Parameters
    ----------
    path : str or PathLike
        The file.
    name : str, optional
        Name for messages (default: the path as given).

    Returns
    -------
    os.stat_result

    Raises
    ------
    MissingFileError
        The path does not exist or cannot be ``stat``-ed.
    UnsupportedDataError
        A FIFO, socket, device or folder.
    """
    name = os.fspath(path) if name is None else name
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        raise MissingFileError("no such file or folder", path=name) from None
    kind = non_regular_kind(st.st_mode)
    if kind is not None:
        raise _refuse(kind, name)
    return st


def open_regular(path: str | PathLike[str], *, name: str | None = None, follow: bool = True) -> BinaryIO:
    """Open a regular file for binary reading, never blocking on a FIFO or device.

    The path is ``stat``-ed (``lstat`` with ``follow=False``) and refused unless
    it is a regular file; it is then opened with ``O_NONBLOCK`` (so a file
    swapped for a FIFO in between does not block), checked again with ``fstat``
    on the descriptor, and only then switched back to blocking reads.

    Parameters
    ----------
    path : str or PathLike
        The file.
    name : str, optional
        Name for messages (default: the path as given).
    follow : bool
        ``False``: refuse a symlink as the last component (``O_NOFOLLOW``); used
        for files a folder listing has already checked.

    Returns
    -------
    BinaryIO
        A buffered binary file object (``.name`` is ``path``).

    Raises
    ------
    OSError
        The file cannot be ``stat``-ed or opened (callers turn it into ``MissingFileError``).
    UnsupportedDataError
        The path is a FIFO, socket, device or folder (or, with ``follow=False``, a symlink).
    """
    name = os.fspath(path) if name is None else name
    kind = non_regular_kind((os.stat if follow else os.lstat)(path).st_mode)  # before any open
    if kind is not None:
        raise _refuse(kind, name)
    flags = _OPEN_FLAGS | (0 if follow else _O_NOFOLLOW)
    fd = os.open(path, flags)  # O_NONBLOCK: a file swapped for a FIFO since the stat does not block
    try:
        kind = non_regular_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _refuse(kind, name)
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    try:
        f.raw.name = os.fspath(path)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover - a FileIO always has a writable name
        pass
    return f


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root`` by its components alone (nothing on disk is touched).

    Parameters
    ----------
    path, root : Path
        Absolute, normalised paths.

    Returns
    -------
    bool
    """
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def resolve_within(path: str | PathLike[str], root: str | PathLike[str]) -> Path:
    """Follow the symlinks of a path inside ``root``, refusing (before any ``stat``) one that leads out.

    ``os.path.realpath`` would ``stat`` the target of an outside-pointing link
    before it could be refused; here each link's target is checked lexically
    first, so nothing outside ``root`` is touched, not even by ``lstat``.

    Parameters
    ----------
    path : str or PathLike
        An absolute path, lexically inside ``root`` (no ``..`` leading out).
    root : str or PathLike
        The allowed folder, a real path (symlinks already resolved).

    Returns
    -------
    pathlib.Path
        The path with every symlink resolved; it may not exist (the first
        component that cannot be ``lstat``-ed ends the walk).

    Raises
    ------
    SymlinkEscape
        A symlink on the path leads outside ``root`` (``loop=False``), more than
        :data:`MAX_SYMLINKS` links (``loop=True``), or ``path`` is not inside
        ``root`` to begin with.
    """
    root = Path(root)
    lexical = Path(os.path.normpath(os.fspath(path)))
    if not is_within(lexical, root):
        raise SymlinkEscape()
    cur = root
    stack = list(lexical.relative_to(root).parts)
    hops = 0
    while stack:
        part = stack.pop(0)
        nxt = cur / part
        try:
            st = os.lstat(nxt)
        except OSError:  # missing or not a folder: reported by whoever opens it
            return nxt.joinpath(*stack)
        if not stat.S_ISLNK(st.st_mode):
            cur = nxt
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise SymlinkEscape(loop=True)
        target = Path(os.path.normpath(cur / os.readlink(nxt)))
        if not is_within(target, root):
            raise SymlinkEscape()
        cur = root
        stack = list(target.relative_to(root).parts) + stack
    return cur


@dataclass(frozen=True)
class FolderEntry:
    """One regular file found by :func:`list_files`.

    Attributes
    ----------
    name : str
        Its path relative to the listed folder, as found (a symlink's own name).
    path : pathlib.Path
        The file to open: the entry itself, or a symlink's resolved target
        (inside the root, its last component not a symlink).
    size : int
        Bytes.
    """

    name: str
    path: Path
    size: int


def list_files(
    folder: str | PathLike[str],
    *,
    root: str | PathLike[str] | None = None,
    max_files: int | None = None,
    display: str | None = None,
) -> tuple[list[FolderEntry], int]:
    """List the regular files under a folder (recursively) without leaving ``root``.

    Parameters
    ----------
    folder : str or PathLike
        The folder (e.g. a DICOM series folder).
    root : str or PathLike, optional
        The folder symlinks may point into (default: ``folder`` itself). A
        manifest passes its folder or its data root.
    max_files : int, optional
        Refuse more entries than this (files, links and special files counted).
    display : str, optional
        Folder name for messages (default: ``folder`` as given).

    Returns
    -------
    (entries, skipped)
        The regular files, in path order (each folder's files by name, then
        its subfolders by name), and the number of symlinks to folders inside
        the root that were skipped (subfolders reached through a symlink are
        not listed: they could loop or repeat files).

    Raises
    ------
    UnsafePathError
        A symlink under the folder leads outside ``root`` (or through more than
        :data:`MAX_SYMLINKS` links); ``folder`` is outside ``root``. The path is
        the link's, relative to ``folder``.
    UnsupportedDataError
        A FIFO, socket or device under the folder (found by ``lstat``, never opened).
    MissingFileError
        ``folder`` or a subfolder cannot be listed; a symlink inside the root
        points at nothing.
    ResourceLimitError
        More than ``max_files`` entries.

    Notes
    -----
    Entries are classified from ``readdir``/``lstat`` (``follow_symlinks=False``);
    a symlink's target is only ``lstat``-ed once :func:`resolve_within` has shown
    it lies inside ``root``.
    """
    shown = os.fspath(folder) if display is None else display
    base = Path(os.path.realpath(folder))
    allowed = base if root is None else Path(os.path.realpath(root))
    if not is_within(base, allowed):
        raise UnsafePathError("the folder lies outside the allowed root", path=shown,
                              hint="pass a root that contains the folder")
    entries: list[FolderEntry] = []
    skipped = 0
    count = 0

    def unsafe(rel: str, exc: SymlinkEscape) -> UnsafePathError:
        where = "its series folder" if root is None else "the allowed root"
        if exc.loop:
            return UnsafePathError("a symlink in the folder loops (too many symlinks)", path=rel,
                                   hint="remove the symlink loop")
        return UnsafePathError(f"a symlink in the folder points outside {where}; medmulti does not follow it",
                               path=rel,
                               hint="copy the file into the folder instead of linking to it, or remove the link")

    def walk(top: Path, prefix: str) -> None:
        nonlocal skipped, count
        try:
            with os.scandir(top) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            raise MissingFileError("a folder cannot be listed (permissions?)",
                                   path=prefix.rstrip(os.sep) or shown) from None
        subdirs = []
        for e in found:
            rel = prefix + e.name
            try:
                is_dir = e.is_dir(follow_symlinks=False)
                is_link = e.is_symlink()
            except OSError:
                raise MissingFileError("a file in the folder cannot be read", path=rel) from None
            if is_dir:
                subdirs.append(e)
                continue
            count += 1
            if max_files is not None and count > max_files:
                raise ResourceLimitError(
                    f"more than {max_files:,} files under this folder", path=shown,
                    hint="point medmulti at one series folder, or raise Limits(max_files=...)",
                )
            path = Path(e.path)
            if is_link:
                try:
                    path = resolve_within(path, allowed)
                except SymlinkEscape as exc:
                    raise unsafe(rel, exc) from None
            try:
                st = os.lstat(path)
            except OSError:
                raise MissingFileError("a symlink in the folder points at nothing (dangling)" if is_link
                                       else "a file in the folder cannot be read", path=rel) from None
            if is_link and stat.S_ISDIR(st.st_mode):
                skipped += 1
                continue
            kind = non_regular_kind(st.st_mode)
            if kind is not None:
                raise _refuse(kind, rel)
            entries.append(FolderEntry(rel, path, st.st_size))
        for e in subdirs:
            walk(Path(e.path), prefix + e.name + os.sep)

    walk(base, "")
    return entries, skipped
