"""Maintain the preprocessing cache: ``verify`` reads every entry and checks it,
``prune`` removes entries no longer used and debris from interrupted runs.

``medmulti cache verify DIR [--remove]``: exit 0 all entries intact, 1 bad entries
found (listed; with ``--remove`` they are deleted and recomputed on next use).

``medmulti cache prune DIR [--manifest M --spec S] [--dry-run]``: with a manifest
and spec, keeps only the entries they still use (same files, same spec sections);
without, removes only temporary and unreferenced files. Exit 0, 1 when some files
could not be removed (a read-only cache), or 2 on a usage error.

Neither follows a symbolic link out of the cache or acts on a path a sidecar names
outside its own folder; only files actually removed are reported as removed. A cache
that cannot be read (another user's, no permission) is exit 1 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .arguments import writing

HELP = "verify or prune a preprocessing cache (exit 0 ok, 1 bad entries or unremovable files, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cache verify`` and ``cache prune`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="read every entry and check its checksum (exit 1 if any is bad)")
    v.add_argument("cache", metavar="DIR", help="the cache folder")
    v.add_argument("--remove", action="store_true", help="delete bad entries (they are recomputed on next use)")
    v.add_argument("--json", metavar="FILE", help="write the report as JSON")
    v.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p = sub.add_parser("prune", help="remove unused entries and debris of interrupted runs")
    p.add_argument("cache", metavar="DIR", help="the cache folder")
    p.add_argument("--manifest", metavar="M", help="keep only the entries this manifest still uses (needs --spec)")
    p.add_argument("--spec", metavar="S", help="the study spec YAML of --manifest")
    p.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")


def _keys_in_use(manifest_path: str, spec_path: str) -> set[str]:
    from ..data.cache_key import entry_key
    from ..manifest import load_manifest
    from ..spec import StudySpec

    spec = StudySpec.from_yaml(spec_path)
    manifest = load_manifest(manifest_path, spec, strict=False)
    keys = set()
    for row in manifest.rows:
        sources = {n: row.sources.get(n) for n in spec.names}
        for n in spec.names:
            if sources[n] is not None:
                keys.add(entry_key(spec, n, sources, root=manifest.root, sha256=row.sha256))
    return keys


def run(args: argparse.Namespace) -> int:
    """Run ``verify`` or ``prune``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        See the module doc.
    """
    from ..data.cache import PreprocessCache
    from ..errors import ManifestError, MissingFileError, SpecError
    from ..text import printable

    root = Path(args.cache)
    if not root.is_dir():
        print(f"medmulti cache: no cache folder at {str(root)!r}", file=sys.stderr)
        return 2
    cache = PreprocessCache(root)
    if args.action == "verify":
        report = cache.verify(remove=args.remove, progress=not args.no_progress)
        print(report.summary())
        for p in report.problems:
            print("  " + "  ".join(printable(v) for v in (p["key"][:12], p.get("patient_id") or "-",
                                                          p.get("modality") or "-", p["reason"])))
        code = 0 if not report.problems else 1
    else:
        if bool(args.manifest) != bool(args.spec):
            print("medmulti cache prune: --manifest and --spec go together", file=sys.stderr)
            return 2
        keep = None
        if args.manifest:
            try:
                keep = _keys_in_use(args.manifest, args.spec)
            except (SpecError, ManifestError, MissingFileError) as exc:
                print(f"medmulti cache prune: {exc}", file=sys.stderr)
                return 2
        report = cache.prune(keep, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{report.entries} entries, {report.ok} kept; {verb} {report.removed} files "
              f"({report.freed_bytes / 1e6:.1f} MB)")
        code = 0
        if report.failed:
            reasons = ", ".join(sorted({f["reason"] for f in report.failed}))
            print(f"medmulti cache prune: could not remove {len(report.failed)} files ({printable(reasons)}); "
                  "is the cache read-only or another user's?", file=sys.stderr)
            code = 1
    if args.json:
        with writing(args.json, "the JSON report"), open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=1)
    return code
