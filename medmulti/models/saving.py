"""Save and load medmulti models: atomic writes, custom layers registered, typed errors.

A model written by :func:`save_model_atomic` is either the complete ``.keras`` zip or
absent (a full disk or a kill leaves the previous file, never a truncated one).
:func:`load_fusion_model` registers medmulti's custom layers before Keras reads the
file, so any process can load a run's model, and it turns every way a file can fail to
load into one :class:`~medmulti.errors.RunFolderError` naming the file.
"""

from __future__ import annotations

import os
import tempfile
from os import PathLike
from pathlib import Path

import keras

from ..errors import RunFolderError, os_error_reason
from . import layers as _layers  # noqa: F401 - registers the custom layers with Keras

__all__ = ["load_fusion_model", "save_model_atomic"]


def _disk_error(exc: OSError, path: Path, what: str) -> RunFolderError:
    reason = os_error_reason(exc)
    err = RunFolderError(f"cannot write {what}: {reason}", path=path,
                         hint="free some space or choose another run folder")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


def save_model_atomic(model: keras.Model, path: str | PathLike[str]) -> Path:
    """Save a Keras model so that ``path`` is always a complete file or untouched.

    The model is written to a temporary ``.keras`` file in the same folder, flushed
    to disk, then renamed over ``path``.

    Parameters
    ----------
    model : keras.Model
        The model to save.
    path : str or PathLike
        The destination (a ``.keras`` file).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    RunFolderError
        The folder cannot be written (read-only, disk full); ``errno`` is kept
        on the error and no partial file is left behind.
    """
    path = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.keras", dir=path.parent)
    except OSError as exc:
        raise _disk_error(exc, path, "the model") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        model.save(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _disk_error(exc, path, "the model") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_fusion_model(path: str | PathLike[str], *, run_dir: str | PathLike[str] | None = None) -> keras.Model:
    """Load a model written by medmulti (``safe_mode=True``), its custom layers registered.

    Parameters
    ----------
    path : str or PathLike
        The ``.keras`` file.
    run_dir : str or PathLike, optional
        The run folder it belongs to, named in the error message.

    Returns
    -------
    keras.Model

    Raises
    ------
    RunFolderError
        The file is absent, cut short, not a Keras archive, or holds layers that
        cannot be rebuilt safely (e.g. a ``Lambda`` layer from elsewhere).
    """
    path = Path(path)
    where = path if run_dir is None else Path(run_dir) / path.name
    if not path.is_file():
        raise RunFolderError("the run folder has no model file", path=where,
                             hint="pass the folder `medmulti train` wrote (its --out)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception:  # noqa: BLE001 - any way of failing to load is one typed error
        raise RunFolderError(
            "the model file does not load (cut short, corrupt, or not written by medmulti)", path=where,
            hint="train the run again (`medmulti train ... --overwrite`) or restore the folder from a backup",
        ) from None

