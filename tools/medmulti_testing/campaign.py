"""Fuzz campaigns: many deterministic mutations of the seed set through one reader.

Used by the fast tier (``tests/reliability``) with a few hundred inputs per
reader and by ``benchmarks/stress.py`` with thousands.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .fuzz import mutate, rng_for
from .harness import Outcome, peak_rss_mib, run_input
from .seeds import Seed

__all__ = ["Summary", "file_inputs", "series_inputs", "run_campaign", "truncation_offsets"]

#: per-input budget (CPU seconds) and memory budget (MiB of peak RSS growth)
MAX_CPU_S = 2.0
MAX_RSS_GROWTH_MIB = 512.0


@dataclass
class Summary:
    """Figures of one campaign."""

    reader: str
    inputs: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    failures: list[Outcome] = field(default_factory=list)
    max_cpu_s: float = 0.0
    max_wall_s: float = 0.0
    rss_growth_mib: float = 0.0

    @property
    def untyped_escapes(self) -> int:
        """Inputs that let something other than a MedmultiError escape."""
        return self.statuses["escape"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable figures (failures by name, mutator, status and error type)."""
        return {
            "reader": self.reader,
            "inputs": self.inputs,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "untyped_escapes": self.untyped_escapes,
            "failures": [f.to_dict() for f in self.failures],
            "max_cpu_s": round(self.max_cpu_s, 3),
            "max_wall_s": round(self.max_wall_s, 3),
            "rss_growth_mib": round(self.rss_growth_mib, 1),
        }


def file_inputs(seeds: Iterable[Seed], per_seed: int, work: Path, *, base_seed: int = 0,
                start: int = 0) -> Iterator[tuple[str, str, Path, dict]]:
    """Yield ``(name, mutator, path, kwargs)`` for mutated copies of single-file seeds.

    Each mutated input is written to the same file under ``work`` (overwritten
    for the next), keeping the seed's suffix so NIfTI detection sees ``.nii.gz``.
    """
    work.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        data = seed.read_bytes()
        target = work / ("input" + seed.suffix)
        for i in range(start, start + per_seed):
            m = mutate(data, seed.fmt, seed_name=seed.name, index=i, base_seed=base_seed)
            target.write_bytes(m.data)
            yield m.name, m.mutator, target, seed.kwargs


_SERIES_OPS = ("mutate_one",) * 8 + ("delete_one", "duplicate_one", "junk_file", "empty_file", "mutate_two")


def series_inputs(seeds: Iterable[Seed], per_seed: int, work: Path, *, base_seed: int = 0,
                  start: int = 0) -> Iterator[tuple[str, str, Path, dict]]:
    """Yield mutated copies of DICOM series folders.

    Operations: one (or two) files mutated with the DICOM mutators, a slice
    deleted or duplicated, a junk or empty file added.
    """
    for seed in seeds:
        files = sorted(f for f in seed.path.iterdir() if f.is_file())
        blobs = [f.read_bytes() for f in files]
        for i in range(start, start + per_seed):
            rng = rng_for(base_seed, seed.name, "series", i)
            folder = work / "series"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            data = {f.name: b for f, b in zip(files, blobs)}
            op = rng.choice(_SERIES_OPS)
            names = sorted(data)
            if op in ("mutate_one", "mutate_two"):
                for k in range(1 if op == "mutate_one" else 2):
                    victim = rng.choice(names)
                    m = mutate(data[victim], "dicom", seed_name=f"{seed.name}/{victim}", index=i * 2 + k,
                               base_seed=base_seed)
                    data[victim] = m.data
                    op += ":" + m.mutator
            elif op == "delete_one":
                del data[rng.choice(names[1:-1] or names)]
            elif op == "duplicate_one":
                data["ZZ_copy.dcm"] = data[rng.choice(names)]
            elif op == "junk_file":
                data["notes.txt"] = bytes(rng.getrandbits(8) for _ in range(rng.choice((3, 200, 1000))))
            elif op == "empty_file":
                data["IM_empty.dcm"] = b""
            for n, b in data.items():
                (folder / n).write_bytes(b)
            yield f"{seed.name}#{i}", op, folder, seed.kwargs


def run_campaign(reader: Callable[..., Any], inputs: Iterable[tuple[str, str, Path, dict]], *, label: str,
                 check_shape: bool = True, progress: bool = False,
                 on_failure: Callable[[Outcome, Path], None] | None = None,
                 total: int | None = None) -> Summary:
    """Run ``reader`` over ``inputs`` and collect the figures.

    A failure is an untyped escape, a bad accept, an input over :data:`MAX_CPU_S`
    CPU seconds, or peak memory growing more than :data:`MAX_RSS_GROWTH_MIB`.

    Parameters
    ----------
    reader : callable
        ``read_image`` or ``inspect_source``.
    inputs : iterable
        From :func:`file_inputs` / :func:`series_inputs`.
    label : str
        Name of the campaign in the summary.
    check_shape : bool
        Check accepted images against the oracle's declared shape.
    progress : bool
        Show a tqdm bar.
    on_failure : callable, optional
        Called with ``(outcome, path)`` for each failure (to save the input).
    total : int, optional
        Number of inputs, for the progress bar.

    Returns
    -------
    Summary
    """
    summary = Summary(label)
    rss0 = peak_rss_mib()
    it: Iterable = inputs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(inputs, total=total, desc=label, unit="input")
    for name, mutator, path, kwargs in it:
        out = run_input(reader, path, name=name, mutator=mutator, kwargs=kwargs, check_shape=check_shape)
        summary.inputs += 1
        summary.statuses[out.status] += 1
        if out.error:
            summary.errors[out.error] += 1
        summary.max_cpu_s = max(summary.max_cpu_s, out.cpu_s)
        summary.max_wall_s = max(summary.max_wall_s, out.wall_s)
        failed = out.status in ("escape", "bad_accept")
        if out.cpu_s > MAX_CPU_S:
            failed, out.detail = True, out.detail + f" took {out.cpu_s:.2f} CPU s"
        if peak_rss_mib() - rss0 > MAX_RSS_GROWTH_MIB and out.rss_growth_mib > 0:
            failed, out.detail = True, out.detail + f" peak memory grew {out.rss_growth_mib:.0f} MiB"
        if failed:
            summary.failures.append(out)
            if on_failure is not None:
                on_failure(out, Path(path))
    summary.rss_growth_mib = peak_rss_mib() - rss0
    return summary


def truncation_offsets(size: int, *, head: int = 1024, after: int = 64) -> list[int]:
    """Every offset in ``[0, min(head, size))`` plus ``after`` evenly spread offsets beyond it."""
    offs = list(range(min(head, size)))
    if size > head and after:
        step = (size - head) / (after + 1)
        offs += sorted({head + int(step * (k + 1)) for k in range(after)} - {size})
    return offs


def save_input(out: Outcome, path: Path, dest: str | PathLike[str]) -> Path:
    """Copy a failing input (file or folder) to ``dest`` under a name derived from the outcome."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    safe = out.name.replace("/", "_").replace("#", "_")
    target = dest / (safe + ("" if path.is_dir() else "".join(path.suffixes)))
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
    else:
        shutil.copyfile(path, target)
    return target
