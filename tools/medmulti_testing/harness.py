"""Run a reader on one hostile input and classify what happened.

An outcome is one of:

``"accepted"``
    The reader returned an image whose shape matches what the file declares
    (checked against pydicom's / nibabel's own reading of the same bytes) and
    whose values are all finite.
``"typed"``
    A :class:`~medmulti.errors.MedmultiError` subclass was raised.
``"escape"``
    Anything else escaped (``ValueError``, ``struct.error``, ``MemoryError``...).
``"bad_accept"``
    An image came back with the wrong shape or non-finite values.

CPU time (this process and its children, so decoder pools count), wall time and
the growth of the process's peak resident memory are recorded for every input.
"""

from __future__ import annotations

import resource
import time
import traceback
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medmulti.errors import MedmultiError

__all__ = ["Outcome", "run_input", "declared_shape", "peak_rss_mib"]


@dataclass
class Outcome:
    """What one input did to a reader (see the module docstring)."""

    name: str
    mutator: str
    status: str
    error: str | None
    cpu_s: float
    wall_s: float
    rss_growth_mib: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable record."""
        return asdict(self)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def declared_shape(path: str | PathLike[str], kwargs: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """The voxel count and in-plane shape the file declares, per pydicom / nibabel.

    Parameters
    ----------
    path : str or PathLike
        A DICOM file, a folder of DICOM files (one series) or a NIfTI file.
    kwargs : dict, optional
        The reader's extra arguments (``volume`` for 4D NIfTI).

    Returns
    -------
    tuple of int or None
        ``(n_voxels, rows, columns)`` for DICOM (rows/columns of one frame),
        ``(n_voxels,)`` for NIfTI; ``None`` when the oracle cannot read the header.
    """
    p = Path(path)
    try:
        if p.is_dir() or p.suffix == ".dcm" or not (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
            import pydicom

            files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
            total, rc = 0, None
            for f in files:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                frames = int(ds.get("NumberOfFrames", 1) or 1)
                rc = (int(ds.Rows), int(ds.Columns))
                total += frames * rc[0] * rc[1]
            return (total, *rc) if rc else None
        import nibabel as nib

        shape = nib.load(str(p)).header.get_data_shape()
        n = int(np.prod(shape[:3], dtype=np.int64))
        if len(shape) > 3 and (kwargs or {}).get("volume") is None:
            n *= int(np.prod(shape[3:], dtype=np.int64))
        return (n,)
    except Exception:
        return None


def run_input(reader: Callable[..., Any], path: str | PathLike[str], *, name: str = "", mutator: str = "",
              kwargs: dict[str, Any] | None = None, check_shape: bool = True) -> Outcome:
    """Call ``reader(path, **kwargs)`` and classify the result.

    Parameters
    ----------
    reader : callable
        ``medmulti.io.read_image`` or ``inspect_source`` (or any callable taking a path).
    path : str or PathLike
        The input.
    name, mutator : str
        Recorded in the outcome.
    kwargs : dict, optional
        Extra arguments for ``reader``.
    check_shape : bool
        Compare an accepted image's shape with :func:`declared_shape`.

    Returns
    -------
    Outcome
    """
    kwargs = kwargs or {}
    rss0 = peak_rss_mib()
    cpu0, wall0 = _cpu(), time.perf_counter()
    status, error, detail, result = "accepted", None, "", None
    try:
        result = reader(path, **kwargs)
    except MedmultiError as exc:
        status, error = "typed", type(exc).__name__
    except BaseException as exc:  # noqa: BLE001 - classifying is the point
        if isinstance(exc, KeyboardInterrupt):
            raise
        status, error = "escape", type(exc).__name__
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))[-3000:]
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    growth = peak_rss_mib() - rss0
    if status == "accepted" and hasattr(result, "array"):
        arr = np.asarray(result.array)
        if not np.all(np.isfinite(arr)):
            status, detail = "bad_accept", "non-finite values"
        elif check_shape:
            declared = declared_shape(path, kwargs)
            if declared is not None:
                n = declared[0]
                ok = arr.size == n and (len(declared) == 1 or arr.shape[-2:] == tuple(declared[1:]))
                if not ok:
                    status, detail = "bad_accept", f"shape {arr.shape} but the header declares {declared}"
    return Outcome(name, mutator, status, error, round(cpu, 4), round(wall, 4), round(growth, 1), detail)
