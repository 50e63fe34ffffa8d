"""The preprocessing cache: one ``.npy`` per (patient, modality), content-addressed.

This module is the store. How an entry's key is derived from its sources and the
spec (fingerprints of the source files, the spec section, the version) is
:mod:`medmulti.data.cache_key`, whose public names are re-exported here
(:func:`entry_key`, :func:`entry_keys`, :func:`fingerprint_source`,
:data:`CACHE_FORMAT`). File names are derived from the key (and the payload
checksum) only, never from patient IDs or paths.

Layout (``ab`` = first two hex digits of the key)::

    CACHE/ab/<key>.json              sidecar: provenance, shape, dtype, checksum (commit record)
    CACHE/ab/<key>-<crc32>.npy       the array (plain .npy, no pickle)
    CACHE/records/<kind>/<key>.json  small JSON records kept beside the arrays (put_record/get_record)

Writes are atomic and lock-free: the array goes to a temporary file in the same
folder, is fsynced and renamed to a name that includes its CRC-32; then the
sidecar is written the same way and renamed over ``<key>.json``, which is the
commit; then the folder is fsynced. A run killed at any moment leaves either the
previous entry or none (plus temporary files that :meth:`PreprocessCache.prune`
removes); concurrent writers of one key never mix one writer's sidecar with the
other's array, because the sidecar names its array file.

On read the array is checked against the sidecar (shape, dtype, size, no object
dtype, CRC-32 of the payload). The CRC is computed on the first read of an entry
by each process and again whenever the files' size, mtime or inode change (a CRC
per read would cost more than the read itself). A corrupt or truncated entry is
removed with a warning and reported as a miss, so the caller recomputes it.

Nothing under the cache folder is trusted (it may be shared, copied or tampered
with): below the root, no symbolic link is followed (folders are opened with
``O_NOFOLLOW`` and files through their folder's descriptor), no FIFO or other
non-regular file is read, and only names derived from a key, inside that key's
own ``ab`` folder, are ever read or removed, whatever a sidecar says. Files and
folders get the permissions of the user's umask. An entry that cannot be read
(permissions, I/O) is a :class:`~medmulti.errors.CacheError` that keeps the
``errno``; so is a failed write (``ENOSPC``: "no space left on device").
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
import time
import zlib
from os import PathLike
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .._version import __version__
from ..errors import CacheError
from .cache_key import (
    CACHE_FORMAT,
    entry_key,
    entry_keys,
    errno_name,
    fingerprint_source,
)

__all__ = [
    "CACHE_FORMAT",
    "CachedArray",
    "CacheReport",
    "PreprocessCache",
    "entry_key",
    "entry_keys",
    "fingerprint_source",
]

log = logging.getLogger("medmulti.data.cache")

STORE_DTYPES = ("float32", "float16")
VERIFY_READS = ("first", "always")
_TMP_PREFIX = ".tmp-"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FLOAT16_MAX = float(np.finfo(np.float16).max)

# per-process memo: sidecar path -> (sidecar stat signature, parsed sidecar,
#                                   (array file stat signature, data offset) once its CRC was verified)
_VERIFIED: dict[str, tuple[tuple, dict[str, Any], Any]] = {}


class _Corrupt(Exception):
    """Internal: an entry failed a check (the reason has no header values)."""


# ---------------------------------------------------------------------- records
@dataclasses.dataclass
class CachedArray:
    """One cache entry read back.

    Attributes
    ----------
    array : numpy.ndarray
        float32 ``(*spatial, channels)`` (converted from float16 if stored so).
    affine : numpy.ndarray or None
        4x4 index -> LPS mm, ``None`` for 2D projections.
    spacing : tuple of float
        mm, array axis order.
    meta : dict
        The non-PHI metadata from preprocessing.
    info : dict
        The whole sidecar.
    """

    array: np.ndarray
    affine: np.ndarray | None
    spacing: tuple[float, ...]
    meta: dict[str, Any]
    info: dict[str, Any]


@dataclasses.dataclass
class CacheReport:
    """What :meth:`PreprocessCache.verify` or :meth:`PreprocessCache.prune` found or did.

    Attributes
    ----------
    entries : int
        Committed entries examined.
    ok : int
        Entries that passed every check.
    problems : list of dict
        ``{"key", "patient_id", "modality", "reason"}`` per bad entry.
    removed : int
        Files removed.
    freed_bytes : int
        Bytes freed by removals.
    failed : list of dict
        ``{"file", "reason"}`` per file that could not be removed (a read-only
        cache, another user's files); never counted in ``removed``.
    """

    entries: int = 0
    ok: int = 0
    problems: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    removed: int = 0
    freed_bytes: int = 0
    failed: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """Return a one-line human summary."""
        text = f"{self.entries} entries, {self.ok} ok, {len(self.problems)} bad"
        if self.removed:
            text += f"; removed {self.removed} files ({self.freed_bytes / 1e6:.1f} MB)"
        if self.failed:
            reasons = sorted({f["reason"] for f in self.failed})
            text += f"; could not remove {len(self.failed)} files ({', '.join(reasons)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ files
# Nothing under the cache folder is trusted (a colleague sharing it, a copied
# cache, a careless `ln -s`): every folder below the root is opened without
# following a symbolic link, every file through that folder's descriptor
# (``dir_fd``), read without following a link or blocking on a FIFO, and only
# single names this module derives from a key are ever unlinked.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_ROOT_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = _ROOT_FLAGS | _NOFOLLOW
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _BINARY
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY
_DIR_FD = (hasattr(os, "O_DIRECTORY") and {os.open, os.stat, os.unlink, os.replace, os.mkdir} <= os.supports_dir_fd
           and os.listdir in os.supports_fd)
_SHARD = re.compile(r"[0-9a-f]{2}")
_ARRAY_NAME = re.compile(r"([0-9a-f]{64})-[0-9a-f]{8}\.npy")
_MAX_SIDECAR_BYTES = 16 * 1024 * 1024
_LINK_ERRNOS = {errno.ELOOP, getattr(errno, "EMLINK", errno.ELOOP)}
_HINTS = {
    errno.ENOSPC: "free disk space or choose another cache folder (--cache / cache_dir)",
    errno.EDQUOT: "your disk quota is exhausted: free space or choose another cache folder",
    errno.EACCES: ("the cache belongs to another user or is read-only to you: ask its owner to make it "
                   "group-readable and -writable (umask 002), or use a cache folder of your own"),
    errno.EPERM: "the cache belongs to another user: use a cache folder of your own",
    errno.EROFS: "the file system is read-only: use a cache folder on a writable disk",
}


class _NotAFolder(Exception):
    """Internal: a symbolic link or a file stands where the cache expects a folder."""


def _cache_error(what: str, exc: OSError, *, path: Any, patient_id: str | None = None,
                 modality: str | None = None) -> CacheError:
    """A :class:`CacheError` for ``exc`` that keeps its errno (``err.errno``) and says it in words."""
    code = exc.errno
    reason = os.strerror(code).lower() if code else type(exc).__name__
    err = CacheError(f"{what}: {reason} ({errno_name(exc)})", path=path, patient_id=patient_id, modality=modality,
                     hint=_HINTS.get(code or 0, "check free space and permissions of the cache folder"))
    err.errno = code  # kept across pickle (MedmultiError.__reduce__ carries __dict__)
    return err


def _not_a_folder_error(path: Path) -> CacheError:
    return CacheError("a symbolic link or a file stands where the cache expects a folder; medmulti never "
                      "follows a link out of the cache", path=path,
                      hint="remove it (medmulti cache verify DIR --remove) or use another cache folder")


def _is_sidecar_name(name: str, shard: str) -> bool:
    return len(name) == 69 and name.endswith(".json") and name[:2] == shard and bool(_HEX64.fullmatch(name[:64]))


def _array_name_ok(key: str, name: Any) -> bool:
    """True when ``name`` is an array file name this cache writes for ``key`` (one component)."""
    m = _ARRAY_NAME.fullmatch(name) if isinstance(name, str) else None
    return m is not None and m.group(1) == key


class _Dir:
    """A folder of the cache, opened without following a symbolic link (except the root itself).

    Operations take single names and go through the folder's descriptor, so a
    folder swapped for a symlink after the check is never followed. Platforms
    without ``dir_fd`` (Windows) use ``lstat`` checks on paths instead.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open_root(cls, path: Path) -> "_Dir":
        if not _DIR_FD:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            return cls(path, None)
        return cls(path, os.open(path, _ROOT_FLAGS))

    def sub(self, name: str, *, create: bool = False) -> "_Dir":
        """Open the child folder ``name``; raise _NotAFolder for a link or a file."""
        path = self.path / name
        if create:
            try:
                if self.fd is not None:
                    os.mkdir(name, dir_fd=self.fd)  # mode 0o777 less the umask
                else:
                    os.mkdir(path)
            except FileExistsError:
                pass
        if self.fd is None:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise _NotAFolder(name)
            return _Dir(path, None)
        try:
            return _Dir(path, os.open(name, _DIR_FLAGS, dir_fd=self.fd))
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS or exc.errno == errno.ENOTDIR:
                raise _NotAFolder(name) from None
            raise

    def names(self) -> list[str]:
        return sorted(os.listdir(self.path if self.fd is None else self.fd))

    def lstat(self, name: str) -> os.stat_result:
        if self.fd is None:
            return os.lstat(self.path / name)
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def open_read(self, name: str) -> int:
        """Open a regular file for reading; a symlink, FIFO or folder is _Corrupt."""
        try:
            if self.fd is None:
                if stat.S_ISLNK(os.lstat(self.path / name).st_mode):
                    raise _Corrupt("a file of the entry is a symbolic link (never followed)")
                fd = os.open(self.path / name, _READ_FLAGS)
            else:
                fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise _Corrupt("a file of the entry is a symbolic link (never followed)") from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                raise _Corrupt("a file of the entry is not a regular file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _Corrupt("a file of the entry is not a regular file (a FIFO, device or folder)")
        return fd

    def read_bytes(self, name: str) -> bytes:
        with os.fdopen(self.open_read(name), "rb") as fh:
            data = fh.read(_MAX_SIDECAR_BYTES + 1)
        if len(data) > _MAX_SIDECAR_BYTES:
            raise _Corrupt("the sidecar is implausibly large")
        return data

    def create_temp(self, suffix: str) -> tuple[int, str]:
        """Create a new temporary file (mode 0o666 less the umask, as for any file the user writes)."""
        while True:
            # the writer's PID and machine in the name let a later run on this machine remove
            # what a killed writer left behind, and never what a writer elsewhere is writing
            name = f"{_TMP_PREFIX}{os.getpid()}.{_host_tag()}-{secrets.token_hex(6)}{suffix}"
            try:
                if self.fd is None:
                    return os.open(self.path / name, _WRITE_FLAGS, 0o666), name
                return os.open(name, _WRITE_FLAGS, 0o666, dir_fd=self.fd), name
            except FileExistsError:
                continue

    def replace(self, src: str, dst: str) -> None:
        if self.fd is None:
            os.replace(self.path / src, self.path / dst)
        else:
            os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        if self.fd is None:
            os.unlink(self.path / name)
        else:
            os.unlink(name, dir_fd=self.fd)

    def fsync(self) -> None:
        if self.fd is None:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(self.fd)
        except OSError:  # pragma: no cover
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "_Dir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _atomic_write(folder: _Dir, name: str, write) -> None:
    """Write via ``write(fh)`` to a new temp file in ``folder``, fsync, rename it over ``name``."""
    fd, tmp = folder.create_temp(os.path.splitext(name)[1])
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        folder.replace(tmp, name)
    except BaseException:
        try:
            folder.unlink(tmp)
        except OSError:
            pass
        raise


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Eight hex digits naming this machine (a digest of its host name) in temporary file names."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _writer_is_dead(name: str) -> bool:
    """True when a temporary file's name carries the PID of a process of this machine that no longer runs.

    ``.tmp-<pid>.<machine>-<random>``: a PID is looked up only when the machine is this
    one, since a cache on shared storage is written from many machines at once.
    ``.tmp-<pid>-<random>`` (older writers) is taken to be of this machine.
    """
    pid_text, _, host = name[len(_TMP_PREFIX):].split("-", 1)[0].partition(".")
    if host and host != _host_tag():
        return False  # a writer on another machine: its PID means nothing here
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else
        return False
    return False


def _payload_crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _sig(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_npy(folder: _Dir, name: str, *, shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None,
              crc: int, trusted: tuple[tuple[int, int, int], int] | None = None) -> tuple[np.ndarray, tuple, int]:
    """Read a plain ``.npy`` (no pickle) straight into ``out`` when it fits; check it.

    ``trusted``: ``(stat signature, data offset)`` of this file as already checked
    in this process (header parsed, CRC verified). When the opened file still has
    that signature, the header parse and the CRC are skipped.
    Returns the array, the opened file's signature and the data offset.
    """
    try:
        fh = os.fdopen(folder.open_read(name), "rb", buffering=0)
    except FileNotFoundError:
        raise _Corrupt("the array file is missing") from None
    with fh:
        sig = _sig(os.fstat(fh.fileno()))
        if trusted is not None and trusted[0] == sig:
            got_shape, fortran, got_dtype = shape, False, dtype
            fh.seek(trusted[1])
            check_crc = False
        else:
            got_shape, fortran, got_dtype = _read_header(fh)
            check_crc = True
        if got_dtype.hasobject:
            raise _Corrupt("the array holds Python objects (pickle); refused")
        if fortran or tuple(got_shape) != tuple(shape) or got_dtype != dtype:
            raise _Corrupt("the array's shape or dtype differs from its sidecar")
        data_offset = fh.tell()
        if out is not None and out.dtype == got_dtype and out.shape == tuple(got_shape) and out.flags.c_contiguous:
            target = out
        else:
            target = np.empty(got_shape, got_dtype)
        buf = memoryview(target.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(buf):
            n = fh.readinto(buf[pos:])
            if not n:
                raise _Corrupt("the array file is truncated")
            pos += n
        if fh.read(1):
            raise _Corrupt("the array file has trailing bytes")
        if check_crc and zlib.crc32(buf) != crc:
            raise _Corrupt("the payload checksum does not match (flipped bytes)")
    if out is not None and target is not out:
        np.copyto(out, target, casting="same_kind")
        return out, sig, data_offset
    return target, sig, data_offset


def _read_header(fh) -> tuple:
    """Parse a .npy header (numpy's own parser, which never unpickles)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, SyntaxError):
        raise _Corrupt("the .npy header is unreadable") from None
    raise _Corrupt(f"unsupported .npy version {version}")


# ------------------------------------------------------------------------ cache
class PreprocessCache:
    """A folder of preprocessed arrays, one entry per (patient, modality).

    Parameters
    ----------
    root : str or PathLike
        The cache folder (created if absent).
    dtype : {"float32", "float16"}
        Storage dtype. ``"float16"`` halves the disk footprint; arrays are
        returned as float32 either way. An array whose values overflow float16
        is stored as float32.
    verify_reads : {"first", "always"}
        When to compute the payload CRC-32 on read: on the first read of an entry
        in each process (and after any change of the files' stat), or on every read.

    Raises
    ------
    CacheError
        If the folder cannot be created or is not a folder.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> cache = PreprocessCache(tempfile.mkdtemp())
    >>> key = "0" * 64
    >>> _ = cache.store(key, np.ones((2, 2, 1), np.float32), patient_id="p1", modality="xray")
    >>> cache.load(key).array.shape
    (2, 2, 1)
    """

    def __init__(self, root: str | PathLike[str], *, dtype: str = "float32", verify_reads: str = "first") -> None:
        if dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {STORE_DTYPES}, got {dtype!r}")
        if verify_reads not in VERIFY_READS:
            raise ValueError(f"verify_reads must be one of {VERIFY_READS}, got {verify_reads!r}")
        self.root = Path(root)
        self.dtype = dtype
        self.verify_reads = verify_reads
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cache_error("cannot create the cache folder", exc, path=self.root) from None
        if not self.root.is_dir():
            raise CacheError("the cache path is not a folder", path=self.root)

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root)!r}, dtype={self.dtype!r})"

    # -- paths -----------------------------------------------------------------
    def sidecar_path(self, key: str) -> Path:
        """Return the sidecar path of ``key`` (it may not exist)."""
        self._check_key(key)
        return self.root / key[:2] / f"{key}.json"

    @staticmethod
    def _check_key(key: str) -> None:
        if not (isinstance(key, str) and _HEX64.fullmatch(key)):
            raise ValueError("a cache key is 64 lowercase hex digits (see entry_key)")

    def _open_root(self) -> _Dir:
        try:
            return _Dir.open_root(self.root)
        except OSError as exc:
            raise _cache_error("cannot open the cache folder", exc, path=self.root) from None

    def _shards(self, root: _Dir) -> Iterator[tuple[str, _Dir | None]]:
        """Yield ``(name, open shard)`` per ``ab`` folder; ``None`` for a link or file of that name."""
        try:
            names = root.names()
        except OSError as exc:
            raise _cache_error("cannot list the cache folder", exc, path=self.root) from None
        for name in names:
            if not _SHARD.fullmatch(name):
                continue  # not ours: never followed, never removed
            try:
                shard = root.sub(name)
            except _NotAFolder:
                yield name, None
                continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _cache_error("cannot open a folder of the cache", exc, path=self.root / name) from None
            with shard:
                yield name, shard

    def _names(self, shard: _Dir) -> list[str]:
        try:
            return shard.names()
        except OSError as exc:
            raise _cache_error("cannot list a folder of the cache", exc, path=shard.path) from None

    def keys(self) -> Iterator[str]:
        """Yield the keys of committed entries (those with a sidecar).

        Raises
        ------
        CacheError
            If the cache folder or one of its folders cannot be listed (permissions).
        """
        with self._open_root() as root:
            for name, shard in self._shards(root):
                if shard is not None:
                    for n in self._names(shard):
                        if _is_sidecar_name(n, name):
                            yield n[:64]

    def __contains__(self, key: str) -> bool:
        side = self.sidecar_path(key)
        try:
            with self._open_root() as root, root.sub(key[:2]) as shard:
                return stat.S_ISREG(shard.lstat(side.name).st_mode)
        except (OSError, _NotAFolder, CacheError):
            return False

    # -- read ------------------------------------------------------------------
    def _sidecar(self, shard: _Dir, key: str, *, use_memo: bool) -> tuple[dict[str, Any], str, Any]:
        """Return (sidecar, array file name, trusted); raise _Corrupt, FileNotFoundError or OSError."""
        side = self.sidecar_path(key)
        st = shard.lstat(side.name)  # FileNotFoundError -> miss
        if not stat.S_ISREG(st.st_mode):
            raise _Corrupt("the sidecar is not a regular file (a symbolic link is never followed)")
        side_sig = _sig(st)
        memo = _VERIFIED.get(str(side))
        if memo is not None and use_memo and memo[0] == side_sig:
            info = memo[1]
            return info, info["file"], memo[2]
        try:
            info = json.loads(shard.read_bytes(side.name).decode("utf-8"))
            if not isinstance(info, dict) or info.get("cache_format") != CACHE_FORMAT or info.get("key") != key:
                raise _Corrupt("the sidecar belongs to another cache format or key")
            if not _array_name_ok(key, info.get("file")):
                raise _Corrupt("the sidecar names an unexpected array file")
            info["shape"] = [int(v) for v in info["shape"]]
            int(info["crc32"])
            np.dtype(info["stored_dtype"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise _Corrupt("the sidecar is unreadable") from None
        _VERIFIED[str(side)] = (side_sig, info, None)
        return info, info["file"], None

    def load(self, key: str, *, out: np.ndarray | None = None) -> CachedArray | None:
        """Read an entry, checking it; a bad entry is removed and reported as a miss.

        Parameters
        ----------
        key : str
            From :func:`entry_key`.
        out : numpy.ndarray, optional
            A C-contiguous float32 array of the entry's shape (e.g. one slot of a
            preallocated batch); the data is read straight into it. If its shape
            differs from the entry's, it is left alone and a new array returned.

        Returns
        -------
        CachedArray or None
            ``None`` on a miss, including a corrupt or truncated entry (logged as a
            warning and removed, so the caller recomputes it). A sidecar or array
            file that is a symbolic link, a FIFO or another non-regular file is
            corrupt: it is never followed or opened for reading.

        Raises
        ------
        CacheError
            If the entry exists but cannot be read (another user's cache, a
            permission or I/O error; ``err.errno`` says which), or a symbolic link
            stands where the cache expects its ``ab`` folder.
        """
        side = self.sidecar_path(key)
        try:
            with self._open_root() as root, root.sub(key[:2]) as shard:
                info, arr_name, trusted = self._sidecar(shard, key, use_memo=self.verify_reads == "first")
                shape = tuple(info["shape"])
                if out is not None and (out.shape != shape or out.dtype != np.float32):
                    out = None  # the caller checks the shape of what it gets back
                arr, sig, offset = _read_npy(shard, arr_name, shape=shape, dtype=np.dtype(info["stored_dtype"]),
                                             out=out, crc=int(info["crc32"]), trusted=trusted)
                memo = _VERIFIED.get(str(side))
                if memo is not None and memo[1] is info:
                    _VERIFIED[str(side)] = (memo[0], info, (sig, offset))
        except FileNotFoundError:
            return None
        except _NotAFolder:
            raise _not_a_folder_error(side.parent) from None
        except _Corrupt as exc:
            self._discard(key, str(exc))
            return None
        except OSError as exc:
            raise _cache_error("cannot read the cache entry", exc, path=side) from None
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        affine = None if info.get("affine") is None else np.asarray(info["affine"], np.float64)
        return CachedArray(arr, affine, tuple(info.get("spacing") or ()), dict(info.get("meta") or {}), info)

    @staticmethod
    def _who(shard: _Dir, key: str) -> dict[str, Any]:
        """Patient and modality a (maybe damaged) sidecar names, plus its array file name if valid."""
        try:
            raw = json.loads(shard.read_bytes(f"{key}.json").decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, _Corrupt):
            return {}
        if not isinstance(raw, dict):
            return {}
        who = {"patient_id": raw.get("patient_id"), "modality": raw.get("modality")}
        who = {k: (v if v is None or isinstance(v, str) else repr(v)) for k, v in who.items()}
        if _array_name_ok(key, raw.get("file")):
            who["file"] = raw["file"]
        return who

    def _discard(self, key: str, reason: str, report: CacheReport | None = None) -> None:
        """Remove a bad entry (its sidecar and the array file it names, both in its own folder)."""
        side = self.sidecar_path(key)
        _VERIFIED.pop(str(side), None)
        try:
            with self._open_root() as root, root.sub(key[:2]) as shard:
                who = self._who(shard, key)
                log.warning("cache entry %s%s is corrupt: %s; it will be recomputed", key[:12],
                            f" (patient {who.get('patient_id')!r}, modality {who.get('modality')!r})" if who else "",
                            reason)
                for name in (side.name, who.get("file")):
                    if name is not None:
                        self._remove(shard, name, report if report is not None else CacheReport(), dry_run=False)
        except (OSError, _NotAFolder, CacheError):
            log.warning("cache entry %s is corrupt: %s; it could not be removed", key[:12], reason)

    @staticmethod
    def _remove(folder: _Dir, name: str, report: CacheReport, *, dry_run: bool) -> None:
        """Unlink one name of ``folder`` (never followed: a link is removed, not its target); count it."""
        try:
            st = folder.lstat(name)
            if stat.S_ISDIR(st.st_mode):
                return  # never descended into or removed
            if not dry_run:
                folder.unlink(name)
                _VERIFIED.pop(str(folder.path / name), None)
            report.removed += 1
            report.freed_bytes += st.st_size
        except FileNotFoundError:
            pass  # removed meanwhile
        except OSError as exc:
            report.failed.append({"file": f"{folder.path.name}/{name}",
                                  "reason": f"{os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__}"})

    # -- write -----------------------------------------------------------------
    def store(
        self,
        key: str,
        array: np.ndarray,
        *,
        patient_id: str | None = None,
        modality: str | None = None,
        affine: np.ndarray | None = None,
        spacing: tuple[float, ...] | None = None,
        meta: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write an entry atomically (see the module notes).

        Files and folders are created with the permissions the user's umask gives
        (``0o666``/``0o777`` less the umask), so a group sharing a cache folder
        can read each other's entries when its members use ``umask 002``.

        Parameters
        ----------
        key : str
            From :func:`entry_key`.
        array : numpy.ndarray
            float32 ``(*spatial, channels)``.
        patient_id : str, optional
            The manifest's patient key (never a header value).
        modality : str, optional
            The spec modality name.
        affine, spacing, meta : optional
            From :class:`medmulti.study.preprocess.Preprocessed`; ``meta`` must be
            JSON-serialisable and free of PHI (the preprocessor guarantees it).
        provenance : Mapping, optional
            Extra non-PHI provenance (spec section, relative source paths).

        Returns
        -------
        Path
            The sidecar path.

        Raises
        ------
        CacheError
            If the folder is not writable or full (``err.errno`` keeps the cause,
            e.g. ``errno.ENOSPC``, and the message says it in words), a symbolic
            link stands where the entry's folder should be, or ``meta`` is not
            JSON-serialisable.
        """
        self._check_key(key)
        arr = np.ascontiguousarray(array, dtype=np.float32)
        stored = arr
        if self.dtype == "float16":
            finite = np.isfinite(arr)
            if not np.any(np.abs(arr[finite]) > _FLOAT16_MAX):
                stored = arr.astype(np.float16)
            else:
                log.debug("entry %s overflows float16; stored as float32", key[:12])
        crc = _payload_crc(stored)
        side = self.sidecar_path(key)
        arr_name = f"{key}-{crc:08x}.npy"
        info: dict[str, Any] = {
            "cache_format": CACHE_FORMAT,
            "key": key,
            "medmulti": __version__,
            "patient_id": patient_id,
            "modality": modality,
            "file": arr_name,
            "shape": list(arr.shape),
            "stored_dtype": str(stored.dtype),
            "crc32": crc,
            "nbytes": int(stored.nbytes),
            "affine": None if affine is None else np.asarray(affine, np.float64).tolist(),
            "spacing": None if spacing is None else [float(v) for v in spacing],
            "meta": dict(meta or {}),
            "provenance": dict(provenance or {}),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            text = json.dumps(info, sort_keys=True, indent=1, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise CacheError(f"the metadata is not JSON-serialisable ({type(exc).__name__})",
                             patient_id=patient_id, modality=modality) from None
        try:
            with self._open_root() as root, root.sub(key[:2], create=True) as shard:
                _atomic_write(shard, arr_name, lambda fh: np.lib.format.write_array(fh, stored, allow_pickle=False))
                _atomic_write(shard, side.name, lambda fh: fh.write(text.encode("utf-8")))
                shard.fsync()
        except _NotAFolder:
            err = _not_a_folder_error(side.parent)
            raise err.with_context(patient_id=patient_id, modality=modality) from None
        except OSError as exc:
            raise _cache_error("cannot write the cache entry", exc, path=self.root, patient_id=patient_id,
                               modality=modality) from None
        _VERIFIED.pop(str(side), None)
        return side

    # -- small JSON records (validation results) ---------------------------------
    def _record_path(self, namespace: str, key: str) -> Path:
        self._check_key(key)
        if not namespace.isidentifier():
            raise ValueError("a record namespace is an identifier")
        return self.root / "records" / namespace / f"{key}.json"

    def get_record(self, namespace: str, key: str) -> Any | None:
        """Return a JSON record stored by :meth:`put_record`, or ``None``.

        Parameters
        ----------
        namespace : str
            E.g. ``"checks"``.
        key : str
            64 hex digits computed by the caller over everything the record depends on.

        Returns
        -------
        object or None
            The decoded JSON; ``None`` when absent, unreadable, or reached through a
            symbolic link (never followed).
        """
        path = self._record_path(namespace, key)
        try:
            with self._open_root() as root, root.sub("records") as rec, rec.sub(namespace) as ns:
                return json.loads(ns.read_bytes(path.name).decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, _NotAFolder, _Corrupt, CacheError):
            return None

    def put_record(self, namespace: str, key: str, value: Any) -> None:
        """Store a small JSON record atomically (no PHI: the caller's duty).

        Parameters
        ----------
        namespace : str
            E.g. ``"checks"``.
        key : str
            64 hex digits.
        value : object
            JSON-serialisable.
        """
        path = self._record_path(namespace, key)
        text = json.dumps(value, sort_keys=True).encode("utf-8")
        try:
            with self._open_root() as root, root.sub("records", create=True) as rec, \
                    rec.sub(namespace, create=True) as ns:
                _atomic_write(ns, path.name, lambda fh: fh.write(text))
        except (OSError, _NotAFolder, CacheError) as exc:
            log.debug("could not store a %s record (%s)", namespace, type(exc).__name__)

    # -- maintenance -------------------------------------------------------------
    def verify(self, *, remove: bool = False, progress: bool = False) -> CacheReport:
        """Read every entry in full and check it (sidecar, shape, dtype, size, CRC-32).

        Only ``ab/<key>.json`` sidecars and the array files they name in their own
        folder are examined; other names are left to :meth:`prune`. A symbolic
        link or a file named like an ``ab`` folder is reported (and with
        ``remove``, the link itself is removed; it is never followed).

        Parameters
        ----------
        remove : bool
            Remove bad entries (they are recomputed on next use).
        progress : bool
            Show a tqdm progress bar.

        Returns
        -------
        CacheReport
            ``removed`` counts files actually removed; ``failed`` lists those that
            could not be (a read-only cache).

        Raises
        ------
        CacheError
            If the cache or an entry cannot be read (permissions, I/O error).
        """
        from tqdm.auto import tqdm

        report = CacheReport()
        with self._open_root() as root:
            keys: list[str] = []
            for name, shard in self._shards(root):
                if shard is None:
                    report.problems.append({"key": name, "patient_id": None, "modality": None,
                                            "reason": "a symbolic link or a file where a cache folder belongs "
                                                      "(not followed)"})
                    if remove:
                        self._remove(root, name, report, dry_run=False)
                    continue
                keys += [n[:64] for n in self._names(shard) if _is_sidecar_name(n, name)]
        for key in tqdm(keys, desc="verify cache", unit="entry", disable=not progress):
            report.entries += 1
            side = self.sidecar_path(key)
            try:
                with self._open_root() as root, root.sub(key[:2]) as shard:
                    try:
                        info, arr_name, _ = self._sidecar(shard, key, use_memo=False)
                        _read_npy(shard, arr_name, shape=tuple(info["shape"]), dtype=np.dtype(info["stored_dtype"]),
                                  out=None, crc=int(info["crc32"]))
                        report.ok += 1
                    except _Corrupt as exc:
                        who = self._who(shard, key)
                        report.problems.append({"key": key, "patient_id": who.get("patient_id"),
                                                "modality": who.get("modality"), "reason": str(exc)})
                        if remove:
                            self._discard(key, str(exc), report)
            except (FileNotFoundError, _NotAFolder):
                report.entries -= 1  # removed or replaced meanwhile
            except OSError as exc:
                raise _cache_error("cannot read the cache entry", exc, path=side) from None
        return report

    def remove_orphan_temps(self) -> int:
        """Remove temporary files left by writers that were killed (their PID no longer runs).

        Temporary files of live writers are left alone, and so are those of writers on
        other machines (named in the file name), so this is safe while other processes, here
        or elsewhere on shared storage, fill the cache; :meth:`prune` removes those once
        stale. :func:`~medmulti.data.cache_fill.preprocess_manifest` calls it before
        filling, so a rerun after a kill leaves no debris.

        Returns
        -------
        int
            The number of files removed.

        Raises
        ------
        CacheError
            If the cache folder cannot be listed (permissions).
        """
        report = CacheReport()
        with self._open_root() as root:
            for _, shard in self._shards(root):
                if shard is None:
                    continue
                for name in self._names(shard):
                    if name.startswith(_TMP_PREFIX) and _writer_is_dead(name):
                        self._remove(shard, name, report, dry_run=False)
        return report.removed

    def prune(self, keep: set[str] | None = None, *, grace_s: float = 600.0, dry_run: bool = False) -> CacheReport:
        """Remove entries not in ``keep``, unreferenced array files and stale temporary files.

        Only names directly inside the cache's ``ab`` folders (and ``records``) are
        removed; a symbolic link is never followed (a link itself is debris like
        any other file), and a sidecar's ``"file"`` field is acted on only when it
        is an array name of its own key, in its own folder.

        Parameters
        ----------
        keep : set of str, optional
            Keys still in use (e.g. from :func:`entry_key` over a manifest). ``None``
            keeps every committed entry and only removes debris.
        grace_s : float
            Temporary and unreferenced files younger than this many seconds are left
            alone (a concurrent writer may be about to commit them), except temporary
            files whose writer process no longer runs.
        dry_run : bool
            Count what would be removed without removing it.

        Returns
        -------
        CacheReport
            ``entries`` committed entries seen, ``ok`` kept, ``removed`` files
            removed, ``failed`` files that could not be removed (read-only cache).

        Raises
        ------
        CacheError
            If the cache, one of its folders or a sidecar cannot be read (permissions).
        """
        report = CacheReport()
        now = time.time()
        with self._open_root() as root:
            if keep is not None:  # records are cheap to rebuild and may describe gone files
                self._prune_records(root, report, dry_run)
            for name, shard in self._shards(root):
                if shard is not None:
                    self._prune_shard(name, shard, keep, report, now=now, grace_s=grace_s, dry_run=dry_run)
        return report

    def _prune_records(self, root: _Dir, report: CacheReport, dry_run: bool) -> None:
        try:
            rec = root.sub("records")
        except (FileNotFoundError, _NotAFolder):
            return
        except OSError as exc:
            raise _cache_error("cannot open a folder of the cache", exc, path=self.root / "records") from None
        with rec:
            for ns_name in self._names(rec):
                try:
                    ns = rec.sub(ns_name)
                except (FileNotFoundError, _NotAFolder):
                    continue
                except OSError as exc:
                    raise _cache_error("cannot open a folder of the cache", exc, path=rec.path / ns_name) from None
                with ns:
                    for name in self._names(ns):
                        if name.endswith(".json"):
                            self._remove(ns, name, report, dry_run=dry_run)

    def _prune_shard(self, shard_name: str, shard: _Dir, keep: set[str] | None, report: CacheReport, *,
                     now: float, grace_s: float, dry_run: bool) -> None:
        names = self._names(shard)
        referenced: set[str] = set()
        doomed: list[str] = []
        for name in names:
            if not _is_sidecar_name(name, shard_name):
                continue
            key = name[:64]
            try:
                info = json.loads(shard.read_bytes(name).decode("utf-8"))
                fname = info.get("file") if isinstance(info, dict) else None
            except FileNotFoundError:
                continue  # removed meanwhile
            except (ValueError, UnicodeDecodeError, _Corrupt):
                fname = None
            except OSError as exc:
                raise _cache_error("cannot read the cache entry", exc, path=shard.path / name) from None
            report.entries += 1
            if not _array_name_ok(key, fname):
                fname = None  # a name outside the entry's own files is never acted on
            if (keep is not None and key not in keep) or fname is None:
                doomed.append(name)
                if fname:
                    doomed.append(fname)
            else:
                referenced.add(fname)
                report.ok += 1
        for name in names:
            if name in doomed or name in referenced or _is_sidecar_name(name, shard_name):
                continue
            try:
                st = shard.lstat(name)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            dead_writer = name.startswith(_TMP_PREFIX) and _writer_is_dead(name)
            if dead_writer or now - st.st_mtime >= grace_s:
                doomed.append(name)
        for name in doomed:
            self._remove(shard, name, report, dry_run=dry_run)
