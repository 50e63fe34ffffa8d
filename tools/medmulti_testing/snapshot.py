"""Compare caches byte for byte: the kill-safety test and the stress benchmark share this."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["cache_snapshot"]


def cache_snapshot(cache: str | Path) -> dict[str, bytes]:
    """Return every committed file's bytes, keyed by path relative to the cache.

    Parameters
    ----------
    cache : str or Path
        A cache folder.

    Returns
    -------
    dict
        Relative path -> bytes. Temporary files (``.tmp*``) are left out, and JSON
        sidecars are compared without their ``created_utc`` stamp (each write sets it).
    """
    root = Path(cache)
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".tmp"):
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            doc = json.loads(data)
            if isinstance(doc, dict):
                doc.pop("created_utc", None)
            data = json.dumps(doc, sort_keys=True).encode()
        out[str(p.relative_to(root))] = data
    return out
