"""Walk an export folder: every regular file under it, without leaving it or blocking.

A hospital export is read from a shared disk: it may hold symlinks (to elsewhere,
dangling, looping), named pipes, device files and names that are not UTF-8. The walk
lists regular files only; everything else is recorded with the reason it was passed
over, never opened, and the walk goes on (a scan of 40,000 files does not stop at one
bad entry). Symlinks to files are followed one component at a time inside the root
(:func:`medmulti.io.safe_files.resolve_within`: a link leading out is refused before
its target is touched); symlinks to folders are not descended (they could loop or
repeat files).

Files named ``DICOMDIR`` are listed apart: :func:`read_dicomdir` reads the files they
reference (``ReferencedFileID``, PS3.3 F.5), so a scan can say which referenced files
are missing. A DICOMDIR is used when present and never required: every file is
recognised by its content whether a DICOMDIR names it or not.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import CorruptFileError, MissingFileError, ResourceLimitError
from ..io.safe_files import SymlinkEscape, non_regular_kind, open_regular, resolve_within

__all__ = ["FileEntry", "Walk", "walk_root", "read_dicomdir", "MAX_DEPTH", "MAX_SCAN_FILES"]

#: Deepest folder nesting walked below the root (real exports nest 3-6 levels).
MAX_DEPTH = 64
#: Most files a scan lists (all folders together) before it stops with ResourceLimitError.
MAX_SCAN_FILES = 2_000_000
#: Largest DICOMDIR read (bytes); a DICOMDIR of 100,000 images is about 40 MB.
MAX_DICOMDIR_BYTES = 512 * 2**20


@dataclass(frozen=True)
class FileEntry:
    """One regular file found under the root.

    Attributes
    ----------
    name : str
        Its path relative to the root, ``/``-separated (a symlink's own name).
    path : str
        The file to open: the entry itself, or a symlink's resolved target inside
        the root (its last component is not a symlink).
    """

    name: str
    path: str


@dataclass
class Walk:
    """What :func:`walk_root` found.

    Attributes
    ----------
    root : pathlib.Path
        The root, with its symlinks resolved.
    folders : dict
        Folder path relative to the root (``""`` for the root) -> its files, by name.
    passed_over : list of (str, str)
        ``(relative path, reason)`` for each entry not listed: FIFOs, sockets,
        devices, symlinks leading out of the root or nowhere, symlinks to folders,
        unreadable folders, names that are not UTF-8, folders nested too deep.
    dicomdirs : list of str
        Relative paths of the files named ``DICOMDIR`` (any case).
    """

    root: Path
    folders: dict[str, list[FileEntry]] = field(default_factory=dict)
    passed_over: list[tuple[str, str]] = field(default_factory=list)
    dicomdirs: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        """Files listed, in every folder."""
        return sum(len(v) for v in self.folders.values())


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes kept as surrogates by os.scandir
        return False
    return True


def walk_root(root: str | os.PathLike[str], *, max_files: int = MAX_SCAN_FILES) -> Walk:
    """List every regular file under ``root``, recording what is passed over and why.

    Parameters
    ----------
    root : str or PathLike
        The export folder.
    max_files : int
        Stop with :class:`~medmulti.errors.ResourceLimitError` beyond this many files.

    Returns
    -------
    Walk
        Folders in walk order (each folder's subfolders by name), files by name.

    Raises
    ------
    MissingFileError
        ``root`` is not a folder, or cannot be listed.
    ResourceLimitError
        More than ``max_files`` files.

    Notes
    -----
    Entries are classified from ``readdir`` (its file type, else ``lstat``); a symlink's
    target is only ``lstat``-ed once :func:`~medmulti.io.safe_files.resolve_within` has
    shown that it lies inside the root. Nothing is opened here; a file swapped for a FIFO
    after the walk is refused when opened (``open_regular`` checks the open descriptor).
    """
    base = Path(os.path.realpath(root))
    if not base.is_dir():
        raise MissingFileError("the folder to scan does not exist or is not a folder", path=str(root))
    walk = Walk(root=base)
    stack: list[tuple[Path, str, int]] = [(base, "", 0)]
    count = 0
    while stack:
        top, rel, depth = stack.pop()
        try:
            with os.scandir(top) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            if not rel:
                raise MissingFileError("the folder to scan cannot be listed (permissions?)", path=str(root)) from None
            walk.passed_over.append((rel, "a folder that cannot be listed (permissions?)"))
            continue
        files: list[FileEntry] = []
        subdirs: list[tuple[Path, str, int]] = []
        for e in found:
            name = f"{rel}/{e.name}" if rel else e.name
            if not _utf8(e.name):
                walk.passed_over.append((name, "a name that is not UTF-8 text (cannot be written into a manifest)"))
                continue
            try:
                is_dir = e.is_dir(follow_symlinks=False)
                is_link = e.is_symlink()
            except OSError:
                walk.passed_over.append((name, "an entry that cannot be read"))
                continue
            if is_dir:
                if depth + 1 > MAX_DEPTH:
                    walk.passed_over.append((name, f"a folder nested more than {MAX_DEPTH} levels deep"))
                else:
                    subdirs.append((Path(e.path), name, depth + 1))
                continue
            path = e.path
            try:
                plain = not is_link and e.is_file(follow_symlinks=False)  # from readdir's d_type: no syscall
            except OSError:
                plain = False
            if not plain:
                if is_link:
                    try:
                        path = os.fspath(resolve_within(Path(e.path), base))
                    except SymlinkEscape as exc:
                        walk.passed_over.append((name, "a symlink loop" if exc.loop else
                                                 "a symlink leading outside the folder scanned (not followed)"))
                        continue
                try:
                    st = os.lstat(path)
                except OSError:
                    walk.passed_over.append((name, "a symlink pointing at nothing" if is_link else
                                             "a file that cannot be read"))
                    continue
                if is_link and stat.S_ISDIR(st.st_mode):
                    walk.passed_over.append((name, "a symlink to a folder (not descended)"))
                    continue
                kind = non_regular_kind(st.st_mode)
                if kind is not None:
                    walk.passed_over.append((name, f"{kind}, not a regular file (never opened)"))
                    continue
            count += 1
            if count > max_files:
                raise ResourceLimitError(f"more than {max_files:,} files under the folder scanned", path=str(root),
                                         hint="scan a smaller folder, or pass a larger max_files")
            files.append(FileEntry(name, path))
            if e.name.upper() == "DICOMDIR":
                walk.dicomdirs.append(name)
        if files:
            walk.folders[rel] = files
        stack.extend(reversed(subdirs))  # depth first, subfolders by name
    return walk


def read_dicomdir(entry: FileEntry) -> list[str]:
    """The files a DICOMDIR references, relative to the root.

    Parameters
    ----------
    entry : FileEntry
        The DICOMDIR (a file found by :func:`walk_root`).

    Returns
    -------
    list of str
        ``ReferencedFileID`` of every directory record (PS3.3 F.5.2), joined with
        ``/`` onto the DICOMDIR's folder, in record order. IDs that would leave
        the DICOMDIR's folder (``..``, absolute, empty components) are dropped.

    Raises
    ------
    CorruptFileError
        The file is not a readable DICOMDIR (its text is not kept: it may quote
        header values).
    """
    import pydicom

    folder = PurePosixPath(entry.name).parent
    try:
        with open_regular(entry.path, name=entry.name, follow=False) as f:
            if os.fstat(f.fileno()).st_size > MAX_DICOMDIR_BYTES:
                raise CorruptFileError(f"the DICOMDIR is larger than {MAX_DICOMDIR_BYTES:,} bytes", path=entry.name)
            ds = pydicom.dcmread(f)
            records = ds.get("DirectoryRecordSequence") or []
            out = []
            for record in records:
                ref = record.get("ReferencedFileID")
                if ref is None:
                    continue
                parts = [str(p).strip() for p in ([ref] if isinstance(ref, str) else list(ref))]
                if not parts or any(p in ("", ".", "..") or "/" in p or "\\" in p for p in parts):
                    continue
                out.append((folder.joinpath(*parts)).as_posix())
            return out
    except CorruptFileError:
        raise
    except Exception:  # pydicom's text may quote header values: not kept
        raise CorruptFileError("the DICOMDIR cannot be read", path=entry.name,
                               hint="the files are scanned by their content anyway") from None
