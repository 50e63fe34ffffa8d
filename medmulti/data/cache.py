"""The preprocessing cache: one ``.npy`` per (patient, modality), content-addressed.

An entry's key is a SHA-256 over what determines its array:

* the source files of the modality: their paths relative to the manifest root,
  sizes and modification times (or the pinned ``sha256`` from the manifest), and
  the series or volume chosen in it (:class:`~medmulti.io.SourceRef`; a plain
  path, or a ``SourceRef`` choosing nothing, keys exactly as before),
* the modality's spec section (``ModalitySpec.to_dict()`` less ``required``,
  which does not change the array),
* for a non-reference 3D modality, the same two items of the study's reference
  modality, since its grid comes from the reference,
* the medmulti version and the cache format.

Changing a file or a setting therefore recomputes exactly the entries it affects.
File names are derived from the key (and the payload checksum) only, never from
patient IDs or paths.

Layout (``ab`` = first two hex digits of the key)::

    CACHE/ab/<key>.json              sidecar: provenance, shape, dtype, checksum (commit record)
    CACHE/ab/<key>-<crc32>.npy       the array (plain .npy, no pickle)
    CACHE/records/checks/<key>.json  header-level validation results of a manifest row

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zlib
from os import PathLike
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import CacheError
from ..io.dicom_series import parse_series_choice
from ..io.source import SourceRef
from ..spec import StudySpec

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

CACHE_FORMAT = 1
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


# --------------------------------------------------------------------------- keys
def _version() -> str:
    from .. import __version__

    return __version__


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.relpath(path, root)).as_posix()
        except ValueError:  # other drive on Windows
            pass
    return Path(path).as_posix()


def _walk(top: str, prefix: str, out: list[tuple[str, int, int]]) -> None:
    """Append ``(relpath, size, mtime_ns)`` of every file under ``top``, sorted (os.scandir: one
    syscall per entry; this runs for every patient read, so it avoids pathlib)."""
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            _walk(e.path, f"{prefix}{e.name}/", out)
        else:
            st = e.stat()
            out.append((prefix + e.name, st.st_size, st.st_mtime_ns))


def _selection(source: Any) -> tuple:
    """The series/volume a :class:`~medmulti.io.SourceRef` chooses, as key items (empty for none).

    A SeriesInstanceUID enters as a digest (the key document never holds a UID);
    a series file as its path relative to the source folder.
    """
    if not isinstance(source, SourceRef):
        return ()
    out: tuple = ()
    if source.series is not None:
        kind, value = parse_series_choice(source.series)
        if kind == "uid":
            value = hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:16]
        elif kind == "file":
            target = Path(value)
            if target.is_absolute():
                try:
                    value = Path(os.path.relpath(target, source.path)).as_posix()
                except ValueError:  # other drive on Windows
                    value = target.as_posix()
            else:
                value = target.as_posix()
        out += (("series", (kind, value)),)
    if source.volume is not None:
        out += (("volume", source.volume),)
    return out


def _fingerprint(path: Any, root: Any, pin: str | None) -> tuple | None:
    """Hashable form of :func:`fingerprint_source`."""
    if path is None:
        return None
    chosen = _selection(path)
    if isinstance(path, SourceRef):
        path = path.path
    rel = _relative(Path(path), None if root is None else Path(root))
    if pin:
        return (rel, "sha256", str(pin).lower()) + chosen
    files: list[tuple[str, int, int]] = []
    try:
        if os.path.isdir(path):
            _walk(os.fspath(path), "", files)
        else:
            st = os.stat(path)
            files.append((".", st.st_size, st.st_mtime_ns))
    except OSError:
        return (rel, "missing") + chosen
    return (rel, "files", tuple(files)) + chosen


def _fingerprint_doc(fp: tuple | None) -> dict[str, Any] | None:
    if fp is None:
        return None
    if fp[1] == "sha256":
        doc: dict[str, Any] = {"path": fp[0], "sha256": fp[2]}
        chosen = fp[3:]
    elif fp[1] == "missing":
        doc = {"path": fp[0], "files": "missing"}
        chosen = fp[2:]
    else:
        doc = {"path": fp[0], "files": [list(f) for f in fp[2]]}
        chosen = fp[3:]
    for item, value in chosen:  # only for a source choosing a series or a volume
        doc[item] = list(value) if isinstance(value, tuple) else value
    return doc


def fingerprint_source(
    path: str | PathLike[str] | None,
    *,
    root: str | PathLike[str] | None = None,
    sha256: str | None = None,
) -> dict[str, Any] | None:
    """Describe a modality source for the cache key, without reading pixels.

    Parameters
    ----------
    path : str or PathLike or SourceRef or None
        A file or a folder (a DICOM series), or a :class:`~medmulti.io.SourceRef`
        choosing a series or a volume in one. ``None`` means the modality is absent.
    root : str or PathLike, optional
        The manifest root; paths are recorded relative to it so a cohort can move.
    sha256 : str, optional
        A pinned digest from the manifest; when given it replaces sizes and
        modification times.

    Returns
    -------
    dict or None
        ``{"path": ..., "files": [[relpath, size, mtime_ns], ...]}`` or
        ``{"path": ..., "sha256": ...}``; ``None`` for an absent source.
        A missing file is recorded as ``"missing"`` (the reader raises later).
        A source choosing a series adds ``"series": [kind, value]`` (kind
        ``"number"``, ``"uid"`` with a 16-hex digest of the UID, or ``"file"``
        with its path relative to the folder); one choosing a volume adds
        ``"volume": index``. Without a choice the dict is as for a plain path.
    """
    return _fingerprint_doc(_fingerprint(path, root, sha256))


def _section(mod: Any) -> str:
    """The spec section that determines the preprocessed array (``required`` does not), as JSON."""
    fields = tuple((f.name, repr(getattr(mod, f.name))) for f in dataclasses.fields(mod))
    hit = _SECTIONS.get(fields)
    if hit is None:
        d = mod.to_dict()
        d.pop("required", None)
        hit = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        if len(_SECTIONS) > 256:
            _SECTIONS.clear()
        _SECTIONS[fields] = hit
    return hit


_SECTIONS: dict[tuple, str] = {}


def entry_keys(
    spec: StudySpec,
    names: Any,
    sources: Mapping[str, str | PathLike[str] | None],
    *,
    root: str | PathLike[str] | None = None,
    sha256: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return :func:`entry_key` for several modalities of one patient, fingerprinting each source once.

    Parameters
    ----------
    spec, sources, root, sha256
        As for :func:`entry_key`.
    names : iterable of str
        The modality names.

    Returns
    -------
    dict
        Modality name -> key.
    """
    pins = dict(sha256 or {})
    names = list(names)
    ref = spec.reference
    wanted = set(names)
    if ref is not None and any(spec.modality(n).dims == 3 for n in names):
        wanted.add(ref.name)
    fps = {n: _fingerprint(sources.get(n), root, pins.get(n)) for n in sorted(wanted)}
    token = (tuple(names), tuple(_section(spec.modality(n)) for n in sorted(wanted)),
             None if ref is None else ref.name, tuple(fps.items()))
    hit = _KEYS.get(token)
    if hit is None:
        hit = {n: _key_of(spec, n, lambda m: _fingerprint_doc(fps[m])) for n in names}
        if len(_KEYS) > 100_000:
            _KEYS.clear()
        _KEYS[token] = hit
    return dict(hit)


# per-process memo: (names, spec sections, reference, fingerprints) -> keys
_KEYS: dict[tuple, dict[str, str]] = {}


def _key_of(spec: StudySpec, name: str, fp) -> str:
    mod = spec.modality(name)
    doc: dict[str, Any] = {
        "cache_format": CACHE_FORMAT,
        "medmulti": _version(),
        "modality": _section(mod),
        "source": fp(name),
    }
    ref = spec.reference
    if mod.dims == 3 and ref is not None and ref.name != name:
        doc["reference"] = {"modality": _section(ref), "source": fp(ref.name)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_key(
    spec: StudySpec,
    name: str,
    sources: Mapping[str, str | PathLike[str] | None],
    *,
    root: str | PathLike[str] | None = None,
    sha256: Mapping[str, str] | None = None,
) -> str:
    """Return the cache key of one (patient, modality).

    Parameters
    ----------
    spec : StudySpec
        The study spec.
    name : str
        The modality name.
    sources : Mapping[str, path or SourceRef or None]
        Modality name -> resolved source path of this patient, or a
        :class:`~medmulti.io.SourceRef` choosing a series or volume
        (``ManifestRow.sources``). Two choices in one folder get different keys;
        a plain path keys as it always did.
    root : str or PathLike, optional
        The manifest root (paths enter the key relative to it).
    sha256 : Mapping[str, str], optional
        Pinned digests per modality (``ManifestRow.sha256``).

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    SpecError
        If ``name`` is not a modality of the spec.
    """
    return entry_keys(spec, [name], sources, root=root, sha256=sha256)[name]


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
    """

    entries: int = 0
    ok: int = 0
    problems: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    removed: int = 0
    freed_bytes: int = 0

    def summary(self) -> str:
        """Return a one-line human summary."""
        text = f"{self.entries} entries, {self.ok} ok, {len(self.problems)} bad"
        if self.removed:
            text += f"; removed {self.removed} files ({self.freed_bytes / 1e6:.1f} MB)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Write via ``write(fh)`` to a temp file beside ``path``, fsync, rename over it."""
    # the writer's PID in the name lets a later run remove what a killed writer left behind
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _writer_is_dead(name: str) -> bool:
    """True when a temporary file's name carries the PID of a process that no longer runs."""
    pid_text = name[len(_TMP_PREFIX):].split("-", 1)[0]
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


def _read_npy(path: Path, *, shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None,
              crc: int, trusted: tuple[tuple[int, int, int], int] | None = None) -> tuple[np.ndarray, tuple, int]:
    """Read a plain ``.npy`` (no pickle) straight into ``out`` when it fits; check it.

    ``trusted``: ``(stat signature, data offset)`` of this file as already checked
    in this process (header parsed, CRC verified). When the opened file still has
    that signature, the header parse and the CRC are skipped.
    Returns the array, the opened file's signature and the data offset.
    """
    try:
        fh = open(path, "rb", buffering=0)
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
            raise CacheError(f"cannot create the cache folder ({type(exc).__name__})", path=self.root,
                             hint="choose a writable folder for --cache / cache_dir") from None
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

    def keys(self) -> Iterator[str]:
        """Yield the keys of committed entries (those with a sidecar)."""
        for sub in sorted(self.root.glob("??")):
            if sub.is_dir():
                for p in sorted(sub.glob("*.json")):
                    if not p.name.startswith(_TMP_PREFIX):
                        yield p.stem

    def __contains__(self, key: str) -> bool:
        return self.sidecar_path(key).is_file()

    # -- read ------------------------------------------------------------------
    def _sidecar(self, key: str, *, use_memo: bool) -> tuple[dict[str, Any], Path, Any]:
        """Return (sidecar, array path, trusted); raise _Corrupt or FileNotFoundError."""
        side = self.sidecar_path(key)
        side_sig = _sig(os.stat(side))  # FileNotFoundError -> miss
        memo = _VERIFIED.get(str(side))
        if memo is not None and use_memo and memo[0] == side_sig:
            info = memo[1]
            return info, side.parent / info["file"], memo[2]
        try:
            info = json.loads(side.read_bytes().decode("utf-8"))
            if info.get("cache_format") != CACHE_FORMAT or info.get("key") != key:
                raise _Corrupt("the sidecar belongs to another cache format or key")
            fname = str(info["file"])
            if "/" in fname or "\\" in fname or not fname.startswith(key):
                raise _Corrupt("the sidecar names an unexpected array file")
            info["shape"] = [int(v) for v in info["shape"]]
            int(info["crc32"])
            np.dtype(info["stored_dtype"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise _Corrupt("the sidecar is unreadable") from None
        _VERIFIED[str(side)] = (side_sig, info, None)
        return info, side.parent / fname, None

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
            warning and removed, so the caller recomputes it).
        """
        side = self.sidecar_path(key)
        try:
            info, arr_path, trusted = self._sidecar(key, use_memo=self.verify_reads == "first")
            shape = tuple(info["shape"])
            if out is not None and (out.shape != shape or out.dtype != np.float32):
                out = None  # the caller checks the shape of what it gets back
            arr, sig, offset = _read_npy(arr_path, shape=shape, dtype=np.dtype(info["stored_dtype"]), out=out,
                                         crc=int(info["crc32"]), trusted=trusted)
            memo = _VERIFIED.get(str(side))
            if memo is not None and memo[1] is info:
                _VERIFIED[str(side)] = (memo[0], info, (sig, offset))
        except FileNotFoundError:
            return None
        except _Corrupt as exc:
            self._discard(key, str(exc))
            return None
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        affine = None if info.get("affine") is None else np.asarray(info["affine"], np.float64)
        return CachedArray(arr, affine, tuple(info.get("spacing") or ()), dict(info.get("meta") or {}), info)

    def _discard(self, key: str, reason: str) -> None:
        side = self.sidecar_path(key)
        who = ""
        try:
            info = json.loads(side.read_text(encoding="utf-8"))
            who = f" (patient {info.get('patient_id')!r}, modality {info.get('modality')!r})"
            arr = side.parent / str(info.get("file", ""))
        except (OSError, ValueError, UnicodeDecodeError):
            arr = None
        log.warning("cache entry %s%s is corrupt: %s; it will be recomputed", key[:12], who, reason)
        _VERIFIED.pop(str(side), None)
        for p in (side, arr):
            if p is not None and p.name.startswith(key):
                try:
                    p.unlink()
                except OSError:
                    pass

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
            From :class:`medmulti.preprocess.Preprocessed`; ``meta`` must be
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
            If the folder is not writable or ``meta`` is not JSON-serialisable.
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
        sub = self.root / key[:2]
        side = sub / f"{key}.json"
        arr_path = sub / f"{key}-{crc:08x}.npy"
        info: dict[str, Any] = {
            "cache_format": CACHE_FORMAT,
            "key": key,
            "medmulti": _version(),
            "patient_id": patient_id,
            "modality": modality,
            "file": arr_path.name,
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
            sub.mkdir(exist_ok=True)
            _atomic_write(arr_path, lambda fh: np.lib.format.write_array(fh, stored, allow_pickle=False))
            _atomic_write(side, lambda fh: fh.write(text.encode("utf-8")))
            _fsync_dir(sub)
        except OSError as exc:
            raise CacheError(f"cannot write the cache entry ({type(exc).__name__})", path=self.root,
                             patient_id=patient_id, modality=modality,
                             hint="check free space and permissions of the cache folder") from None
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
            The decoded JSON; ``None`` when absent or unreadable.
        """
        try:
            return json.loads(self._record_path(namespace, key).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
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
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, lambda fh: fh.write(text))
        except OSError as exc:
            log.debug("could not store a %s record (%s)", namespace, type(exc).__name__)

    # -- maintenance -------------------------------------------------------------
    def verify(self, *, remove: bool = False, progress: bool = False) -> CacheReport:
        """Read every entry in full and check it (sidecar, shape, dtype, size, CRC-32).

        Parameters
        ----------
        remove : bool
            Remove bad entries (they are recomputed on next use).
        progress : bool
            Show a tqdm progress bar.

        Returns
        -------
        CacheReport
        """
        from tqdm.auto import tqdm

        report = CacheReport()
        keys = list(self.keys())
        for key in tqdm(keys, desc="verify cache", unit="entry", disable=not progress):
            report.entries += 1
            side = self.sidecar_path(key)
            try:
                info, arr_path, _ = self._sidecar(key, use_memo=False)
                _read_npy(arr_path, shape=tuple(info["shape"]), dtype=np.dtype(info["stored_dtype"]), out=None,
                          crc=int(info["crc32"]))
                report.ok += 1
            except FileNotFoundError:
                report.entries -= 1  # removed meanwhile
            except _Corrupt as exc:
                who: dict[str, Any] = {}
                try:
                    raw = json.loads(side.read_text(encoding="utf-8"))
                    who = {"patient_id": raw.get("patient_id"), "modality": raw.get("modality")}
                except (OSError, ValueError, UnicodeDecodeError):
                    pass
                report.problems.append({"key": key, **who, "reason": str(exc)})
                if remove:
                    before = self._size_of(key)
                    self._discard(key, str(exc))
                    report.removed += 1
                    report.freed_bytes += before
        return report

    def _size_of(self, key: str) -> int:
        total = 0
        for p in (self.root / key[:2]).glob(f"{key}*"):
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def remove_orphan_temps(self) -> int:
        """Remove temporary files left by writers that were killed (their PID no longer runs).

        Temporary files of live writers are left alone, so this is safe while other
        processes fill the cache. :func:`~medmulti.data.preprocess_all.preprocess_manifest`
        calls it before filling, so a rerun after a kill leaves no debris.

        Returns
        -------
        int
            The number of files removed.
        """
        removed = 0
        for sub in self.root.glob("??"):
            if not sub.is_dir():
                continue
            for p in sub.glob(f"{_TMP_PREFIX}*"):
                if _writer_is_dead(p.name):
                    try:
                        p.unlink()
                        removed += 1
                    except OSError:
                        pass
        return removed

    def prune(self, keep: set[str] | None = None, *, grace_s: float = 600.0, dry_run: bool = False) -> CacheReport:
        """Remove entries not in ``keep``, unreferenced array files and stale temporary files.

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
            ``entries`` committed entries seen, ``ok`` kept, ``removed`` files removed.
        """
        report = CacheReport()
        now = time.time()
        records = self.root / "records"
        if keep is not None and records.is_dir():  # cheap to rebuild; may describe gone files
            for p in sorted(records.rglob("*.json")):
                try:
                    size = p.stat().st_size
                    if not dry_run:
                        p.unlink()
                    report.removed += 1
                    report.freed_bytes += size
                except OSError:
                    pass
        for sub in sorted(self.root.glob("??")):
            if not sub.is_dir():
                continue
            referenced: set[str] = set()
            doomed: list[Path] = []
            for side in sorted(sub.glob("*.json")):
                if side.name.startswith(_TMP_PREFIX):
                    continue
                report.entries += 1
                key = side.stem
                try:
                    fname = str(json.loads(side.read_text(encoding="utf-8"))["file"])
                except (OSError, ValueError, KeyError, UnicodeDecodeError):
                    fname = None
                if (keep is not None and key not in keep) or fname is None:
                    doomed.append(side)
                    if fname:
                        doomed.append(sub / fname)
                else:
                    referenced.add(fname)
                    report.ok += 1
            for p in sorted(sub.iterdir()):
                if p in doomed or p.suffix == ".json" and not p.name.startswith(_TMP_PREFIX):
                    continue
                if p.name in referenced:
                    continue
                try:
                    dead_writer = p.name.startswith(_TMP_PREFIX) and _writer_is_dead(p.name)
                    if dead_writer or now - p.stat().st_mtime >= grace_s:
                        doomed.append(p)
                except OSError:
                    pass
            for p in doomed:
                try:
                    size = p.stat().st_size
                    if not dry_run:
                        p.unlink()
                        _VERIFIED.pop(str(p), None)
                    report.removed += 1
                    report.freed_bytes += size
                except OSError:
                    pass
        return report
