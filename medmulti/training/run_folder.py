"""The run folder: its card (written atomically, read as untrusted data), its model file,
and what a failed run leaves behind.

A run folder may come from a colleague or another machine. :func:`open_run` reads its
card as data: paths in it are relative to the run folder, the card's cache is used only
inside the run folder, and every defect is one :class:`~medmulti.errors.RunFolderError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._version import __version__
from ..errors import MedmultiError, RunFolderError, os_error_reason
from ..models.saving import load_fusion_model
from ..spec import StudySpec

__all__ = ["MODEL_FILE", "RUN_CARD", "CV_SUMMARY", "MAX_CARD_BYTES", "open_run", "read_card", "is_cv_run",
           "write_text",
           "read_cv_summary", "fold_view", "write_json", "mark_failed", "folder_error", "run_cache",
           "relative_to_run", "card_path", "sha256_file", "versions"]

log = logging.getLogger("medmulti.training")

MODEL_FILE = "model.keras"
RUN_CARD = "run_card.json"
#: a cross-validation run folder's summary of its folds (``train(..., cv=K)``)
CV_SUMMARY = "cv_summary.json"


# -- helpers -------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (temp file + rename): a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "medmulti": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def folder_error(exc: OSError, path: Path, what: str) -> RunFolderError:
    reason = os_error_reason(exc)
    err = RunFolderError(f"cannot write {what}: {reason}", path=path,
                         hint="choose a writable out folder with free space", cli_hint="choose a writable --out "
                         "folder with free space")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


def mark_failed(run_dir: Path, exc: BaseException, *, remove: bool, remove_folder: bool) -> None:
    """Leave no half-written run: remove what this run wrote into a folder that held nothing
    before; over an earlier run (``overwrite``), mark the run card failed so that evaluate and
    predict refuse the folder instead of mixing two runs."""
    try:
        if remove:
            if remove_folder:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for child in run_dir.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            return
        error = {"type": type(exc).__name__,
                 "message": exc.message if isinstance(exc, MedmultiError) else
                 ("interrupted" if isinstance(exc, KeyboardInterrupt) else "unexpected error")}
        write_json(run_dir / RUN_CARD, {"format": 1, "status": "failed", "error": error})
    except OSError:  # a read-only or full disk: the original error is the one to report
        log.debug("could not clean up the failed run folder", exc_info=True)


# -- evaluate / predict --------------------------------------------------------------------
def open_run(run_dir: str | PathLike[str]) -> tuple[Path, dict[str, Any], StudySpec, Any]:
    """Read a run folder: its card (checked), its spec and its model (custom layers registered).

    Nothing in the card is trusted: a card from another machine or a colleague is read
    as data, its paths are resolved against the run folder, and any defect is one
    :class:`~medmulti.errors.RunFolderError` naming the folder.
    """
    run, card, spec = read_card(run_dir)
    model = load_fusion_model(run / MODEL_FILE, run_dir=run)
    return run, card, spec, model


def read_card(run_dir: str | PathLike[str]) -> tuple[Path, dict[str, Any], StudySpec]:
    """Read and check a run folder's card and spec, without loading its model (see :func:`open_run`)."""
    run = Path(run_dir)
    card_path = run / RUN_CARD
    if not run.is_dir():
        raise RunFolderError("the run folder does not exist", path=run,
                             hint="pass the folder `medmulti train` wrote (its out folder)",
                             cli_hint="pass the --out folder of `medmulti train`")
    if not card_path.is_file() and is_cv_run(run):
        raise RunFolderError("a cross-validation run folder holds one run per fold, not a model", path=run,
                             hint="evaluate it with evaluate(), or pass one of its fold-k folders",
                             cli_hint="evaluate it with `medmulti evaluate`, or pass one of its fold-k folders")
    if not card_path.is_file():
        raise RunFolderError("not a medmulti run folder (no run_card.json)", path=card_path,
                             hint="pass the folder `medmulti train` wrote (its out folder)",
                             cli_hint="pass the --out folder of `medmulti train`")
    card = _read_json_file(card_path, "the run card")
    if not isinstance(card, dict):
        raise RunFolderError("the run card is not a JSON object", path=card_path)
    if card.get("status") == "failed":
        raise RunFolderError("this run's training failed; it holds no usable model", path=card_path,
                             hint="train again into this folder with overwrite=True",
                             cli_hint="train again into this folder with --overwrite")
    keys = card.get("input_keys")
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)
            and isinstance(card.get("spec"), dict)):
        raise RunFolderError("the run card lacks its spec or input names", path=card_path,
                             hint="the folder was not written by `medmulti train`, or was edited")
    spec = StudySpec.from_dict(card["spec"])
    return run, card, spec


def _read_json_file(path: Path, what: str) -> Any:
    """Parse a size-capped JSON file of the run folder; any defect is a RunFolderError naming ``what``."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise RunFolderError(f"{what} is larger than {MAX_CARD_BYTES} bytes", path=path)
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise RunFolderError(f"{what} is not valid JSON", path=path) from None
    except OSError as exc:
        raise RunFolderError(f"{what} cannot be read ({os.strerror(exc.errno or 0)})", path=path) from None


#: A run card larger than this is refused (a real one is a few kB).
MAX_CARD_BYTES = 16 * 1024 * 1024


def card_path(run: Path, value: Any) -> Path | None:
    """A path stored in a run card: relative to the run folder (absolute in older cards)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    path = Path(value)
    return path if path.is_absolute() else run / path


def relative_to_run(run: Path, path: Path) -> str:
    """How a run card stores ``path``: relative to the run folder when on the same drive."""
    try:
        return os.path.relpath(path.resolve(), run.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def run_cache(run: Path, card: Mapping[str, Any], cache_dir: Any) -> Any:
    """The cache evaluate/predict use: the user's ``cache_dir``, else the run card's only when
    it lies inside the run folder (a card names no place outside the run for medmulti to write)."""
    if cache_dir is not None:
        return cache_dir
    path = card_path(run, card.get("cache_dir"))
    if path is None:
        return None
    real, inside = os.path.realpath(path), os.path.realpath(run)
    if os.path.commonpath([real, inside]) == inside and os.path.isdir(real):
        return real
    log.info("not using the cache the run card names outside the run folder; pass cache_dir (--cache) to use it")
    return None


# -- cross-validation run folders -----------------------------------------------------------
def is_cv_run(run_dir: str | PathLike[str]) -> bool:
    """True for a cross-validation run folder: ``cv_summary.json`` and no ``run_card.json``."""
    run = Path(run_dir)
    return (run / CV_SUMMARY).is_file() and not (run / RUN_CARD).is_file()


def read_cv_summary(run_dir: str | PathLike[str]) -> dict[str, Any]:
    """Read a cross-validation run folder's ``cv_summary.json`` as untrusted data.

    Returns
    -------
    dict
        The summary, with ``folds`` a list of objects holding a whole ``fold`` number
        and ``assignment`` a mapping of row key -> whole fold number.

    Raises
    ------
    RunFolderError
        The summary is missing, unreadable or malformed.
    """
    path = Path(run_dir) / CV_SUMMARY
    data = _read_json_file(path, "the cross-validation summary")
    folds = data.get("folds") if isinstance(data, dict) else None
    assignment = data.get("assignment") if isinstance(data, dict) else None
    if not (isinstance(folds, list) and folds and all(isinstance(f, dict) and _whole(f.get("fold")) for f in folds)
            and isinstance(assignment, dict) and all(_whole(v) for v in assignment.values())):
        raise RunFolderError("the cross-validation summary lacks its folds or their assignment", path=path,
                             hint="the folder was not written by `medmulti train --cv`, or was edited")
    return data


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10_000


def fold_view(run: Path, card: Mapping[str, Any], manifest: Any) -> Any:
    """The manifest as a cross-validation fold's run saw it: rows of the fold ``val``, rows of
    the other folds ``train``, unassigned ``test`` rows ``test`` and rows without a split
    (a manifest of patients to score) as they are (others left out).

    A fold's run folder (``RUN/fold-k``, its card holding ``"cv"``) was trained on splits
    that are not the manifest's ``split`` column; they are read back from the
    ``assignment`` of ``RUN/cv_summary.json``. A run that is not a fold, or a fold whose
    summary is absent (a cross-validation still running), gets ``manifest`` unchanged.

    Raises
    ------
    RunFolderError
        The summary exists but is malformed.
    """
    fold = card.get("cv")
    if not isinstance(fold, dict) or not _whole(fold.get("fold")):
        return manifest
    if not (run.parent / CV_SUMMARY).is_file():
        log.warning("this fold's cross-validation summary (%s) is missing: its splits are read from the "
                    "manifest's split column", CV_SUMMARY)
        return manifest
    assignment = read_cv_summary(run.parent)["assignment"]
    rows, left_out = [], 0
    for r in manifest.rows:
        k = assignment.get(r.key)
        if k is not None:
            rows.append(dataclasses.replace(r, split="val" if k == fold["fold"] else "train"))
        elif r.split in ("test", ""):  # "": a row without a split, to score (predict)
            rows.append(r)
        else:
            left_out += 1
    if left_out:
        log.warning("%d manifest rows outside the 'test' split are in no fold of this cross-validation: left out",
                    left_out)
    return dataclasses.replace(manifest, rows=rows)
