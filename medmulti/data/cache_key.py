"""Cache keys: what determines a preprocessed array, as a SHA-256 (pure functions: sources + spec -> key).

An entry's key is a SHA-256 over what determines its array:

* the source files of the modality: their paths relative to the manifest root,
  sizes and modification times (or the pinned ``sha256`` from the manifest), and
  the series or volume chosen in it (:class:`~medmulti.io.SourceRef`; a plain
  path, or a ``SourceRef`` choosing nothing, keys exactly as before),
* the modality's spec section (``ModalitySpec.to_dict()`` less ``required`` and ``select``,
  which does not change the array),
* for a non-reference 3D modality, the same two items of the study's reference
  modality, since its grid comes from the reference,
* the medmulti version and the cache format (:data:`CACHE_FORMAT`).

Nothing else enters: not the other modalities' sources or sections, not the
patient ID, not where the manifest root lies. Changing a file or a setting
therefore recomputes exactly the entries it affects. The key is the SHA-256 of
the JSON (sorted keys, compact separators) of::

    {"cache_format": CACHE_FORMAT, "medmulti": medmulti.__version__,
     "modality": <section JSON>, "source": fingerprint_source(...),
     "reference": {"modality": <section JSON>, "source": fingerprint_source(...)}}

with ``"reference"`` only for a non-reference 3D modality of a spec that has a
reference. No pixel is read: a source is fingerprinted by a walk of its folder
(:func:`fingerprint_source`). The store that files arrays under these keys is
:class:`medmulti.data.cache.PreprocessCache`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from .. import _version as _version_module
from ..io.source_ref import SourceRef, parse_series_choice
from ..spec import StudySpec

__all__ = [
    "CACHE_FORMAT",
    "entry_key",
    "entry_keys",
    "fingerprint_source",
]

#: version of the cache layout and key document; enters every key and every sidecar
CACHE_FORMAT = 1


def _version() -> str:
    """The medmulti version that enters every key (read at call time)."""
    return _version_module.__version__


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.relpath(path, root)).as_posix()
        except ValueError:  # other drive on Windows
            pass
    return Path(path).as_posix()


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


def errno_name(exc: OSError) -> str:
    """The symbolic errno of ``exc`` (``"ENOENT"``), or its class name.

    Shared with the store (:mod:`medmulti.data.cache`), whose errors say it too.

    Examples
    --------
    >>> errno_name(FileNotFoundError(2, "No such file or directory"))
    'ENOENT'
    """
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class _Unavailable(Exception):
    """Internal: a source cannot be fingerprinted (the key becomes a miss)."""


def _within(path: str, bound: str) -> bool:
    return path == bound or path.startswith(bound.rstrip(os.sep) + os.sep)


def _walk(top: str, prefix: str, out: list[tuple], bound: list, seen: frozenset) -> None:
    """Append ``(relpath, size, mtime_ns)`` of every file under ``top``, sorted (os.scandir: one
    syscall per entry; this runs for every patient read, so it avoids pathlib).

    An entry that cannot be stat'ed or listed (a dangling symlink, a symlink loop, an
    unreadable subfolder) is recorded as ``(relpath, "unreadable", errno name)``: every
    readable file still enters the fingerprint, so changing one changes the key.
    Symbolic links are followed only to targets inside ``bound`` (the manifest root,
    or the source itself; computed on the first link met); a link leading outside
    raises :class:`_Unavailable` without touching its target, and a linked folder
    already on the current path is recorded as ``"loop"``.
    """
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        rel = prefix + e.name
        try:
            if e.is_symlink():
                _walk_link(e.path, rel, out, bound, seen)
            elif e.is_dir(follow_symlinks=False):
                try:
                    _walk(e.path, rel + "/", out, bound, seen)
                except OSError as exc:  # an unreadable subfolder
                    out.append((rel + "/", "unreadable", errno_name(exc)))
            else:
                st = e.stat(follow_symlinks=False)
                out.append((rel, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            out.append((rel, "unreadable", errno_name(exc)))


def _walk_link(link: str, rel: str, out: list[tuple], bound: list, seen: frozenset) -> None:
    if not bound[2]:  # resolved on the first link only: most series folders hold none
        source = os.path.realpath(bound[1])
        root = None if bound[0] is None else os.path.realpath(bound[0])
        bound[2] = root if root is not None and _within(source, root) else source
    target = os.readlink(link)
    lexical = os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(link)), target))
    if not _within(lexical, bound[2]):  # decided without touching the target
        raise _Unavailable("a symbolic link leads outside the data root")
    real = os.path.realpath(link)
    if not _within(real, bound[2]):
        raise _Unavailable("a symbolic link leads outside the data root")
    st = os.stat(real)  # OSError (dangling, loop) -> "unreadable" in the caller
    if stat.S_ISDIR(st.st_mode):
        if real in seen or _within(os.path.realpath(os.path.dirname(link)), real):
            out.append((rel + "/", "loop", ""))
            return
        try:
            _walk(real, rel + "/", out, bound, seen | {real})
        except OSError as exc:
            out.append((rel + "/", "unreadable", errno_name(exc)))
    else:
        out.append((rel, st.st_size, st.st_mtime_ns))


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
    files: list[tuple] = []
    try:
        if os.path.isdir(path):
            _walk(os.fspath(path), "", files, [None if root is None else os.fspath(root), os.fspath(path), ""], frozenset())
        else:
            st = os.stat(path)
            files.append((".", st.st_size, st.st_mtime_ns))
    except (OSError, _Unavailable) as exc:
        # never a constant: a key that no stored entry can have, so the source is
        # read again (and its reader raises the typed error) instead of a stale hit
        reason = errno_name(exc) if isinstance(exc, OSError) else "ELINKOUT"
        return (rel, "unavailable", reason, secrets.token_hex(16)) + chosen
    return (rel, "files", tuple(files)) + chosen


def _fingerprint_doc(fp: tuple | None) -> dict[str, Any] | None:
    if fp is None:
        return None
    if fp[1] == "sha256":
        doc: dict[str, Any] = {"path": fp[0], "sha256": fp[2]}
        chosen = fp[3:]
    elif fp[1] == "unavailable":
        doc = {"path": fp[0], "files": "unavailable", "reason": fp[2], "miss": fp[3]}
        chosen = fp[4:]
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
        Inside a folder, an entry that cannot be stat'ed or listed (a dangling
        symlink, a symlink loop, an unreadable subfolder) is recorded as
        ``[relpath, "unreadable", errno name]`` while every readable file still
        counts. A source that cannot be fingerprinted at all (missing, unreadable,
        or holding a symbolic link that leads outside ``root``) gets
        ``{"path": ..., "files": "unavailable", "reason": ..., "miss": <random>}``:
        never a constant, so its key matches no stored entry and the source is
        read again (its reader raises the typed error).
        A source choosing a series adds ``"series": [kind, value]`` (kind
        ``"number"``, ``"uid"`` with a 16-hex digest of the UID, or ``"file"``
        with its path relative to the folder); one choosing a volume adds
        ``"volume": index``. Without a choice the dict is as for a plain path.
    """
    return _fingerprint_doc(_fingerprint(path, root, sha256))


def _section(mod: Any) -> str:
    """The spec section that determines the preprocessed array (``required`` and ``select`` do not), as JSON."""
    fields = tuple((f.name, repr(getattr(mod, f.name))) for f in dataclasses.fields(mod))
    hit = _SECTIONS.get(fields)
    if hit is None:
        d = mod.to_dict()
        d.pop("required", None)
        d.pop("select", None)  # how `medmulti scan` chooses a series, not how it is prepared
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
