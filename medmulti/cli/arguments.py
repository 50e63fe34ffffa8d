"""Argument types shared by the subcommands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any, Iterator

from ..errors import OutputError, os_error_reason


def _integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (argparse type).

    Parameters
    ----------
    text : str
        The command-line text.

    Returns
    -------
    int

    Raises
    ------
    argparse.ArgumentTypeError
        If it is not an integer >= 1 (argparse turns this into exit code 2).
    """
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """Parse an integer >= 0 (argparse type).

    Parameters
    ----------
    text : str
        The command-line text.

    Returns
    -------
    int

    Raises
    ------
    argparse.ArgumentTypeError
        If it is not an integer >= 0.
    """
    return _integer(text, 0, "a non-negative integer")


#: ``on_missing`` / ``on_corrupt`` values; kept equal to medmulti.data.sequence.POLICIES by a test
#: (not imported from there so that ``--help`` does not import Keras)
POLICY_CHOICES = ("error", "skip", "zeros")


def add_policy_arguments(parser: argparse.ArgumentParser, *, default: str | None = "error") -> None:
    """Add ``--on-missing`` and ``--on-corrupt`` (the sequence policies, same names as in Python).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    default : str or None
        The default policy; ``None`` means "the run's" (evaluate, predict).
    """
    what = "the run's policy" if default is None else default
    parser.add_argument("--on-missing", choices=POLICY_CHOICES, default=default,
                        help=f"a patient's input is absent: error (stop), skip the patient, or feed zeros "
                             f"(default: {what})")
    parser.add_argument("--on-corrupt", choices=POLICY_CHOICES, default=default,
                        help=f"a patient's input cannot be read: error, skip or zeros (default: {what})")


def add_run_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add how a trained run reads its patients: ``--cache``, the policies, ``--data-root``.

    Shared by ``evaluate``, ``predict`` and ``explain``; the policies default to the run's.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="preprocessing cache (default: the run's, when it lies inside RUN_DIR)")
    add_policy_arguments(parser, default=None)
    add_data_root_argument(parser)


def add_data_root_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-root`` (a folder allowed to hold inputs outside the manifest's folder).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="a folder allowed to hold inputs outside the manifest's folder")


#: ``--executor`` values; kept equal to medmulti.executor.EXECUTORS by a test
EXECUTOR_CHOICES = ("local", "dask")


class _ExecutorAction(argparse.Action):
    """``--executor`` and ``--scheduler``: a scheduler implies dask; ``--executor local`` with one is an error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        if getattr(namespace, "executor", None) == "local" and getattr(namespace, "scheduler", None):
            parser.error("--scheduler needs --executor dask (a scheduler address runs the work on its cluster)")


def scheduler_address(text: str) -> str:
    """Parse a Dask scheduler address or scheduler file (argparse type).

    Parameters
    ----------
    text : str
        ``tcp://host:8786``, ``host:8786``, or the path of a scheduler file
        (JSON, as ``dask scheduler --scheduler-file`` writes it).

    Returns
    -------
    str

    Raises
    ------
    argparse.ArgumentTypeError
        If it is empty or holds spaces or control characters.
    """
    if not text or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a scheduler address or file, got {text!r}")
    return text


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor local|dask`` and ``--scheduler ADDRESS`` (where per-patient work runs).

    Read them back with :func:`executor_options`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None, action=_ExecutorAction,
                        help="where per-patient work runs: local worker processes (default), or a Dask cluster "
                             "(--scheduler, or without one a cluster of --workers processes on this machine)")
    parser.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address, default=None,
                        action=_ExecutorAction,
                        help="a Dask scheduler address (tcp://host:8786) or scheduler file; implies --executor dask")


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``executor`` and ``scheduler`` keywords for :func:`medmulti.executor.map_patients` and its callers.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of a parser given :func:`add_executor_arguments`.

    Returns
    -------
    dict
        ``{"executor": "local" or "dask", "scheduler": str or None}``.
    """
    scheduler = getattr(args, "scheduler", None)
    executor = getattr(args, "executor", None) or ("dask" if scheduler else "local")
    return {"executor": executor, "scheduler": scheduler}


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn an ``OSError`` while writing a user-named output into one typed error.

    Parameters
    ----------
    path : str or PathLike
        The output the user named (``--json``, ``--html``, ``--out``).
    what : str
        What is written, for the message (e.g. ``"the JSON summary"``).

    Raises
    ------
    OutputError
        The folder is read-only or missing, the disk is full, or a folder is in the
        way; ``errno`` is kept on the error.
    """
    try:
        yield
    except OSError as exc:
        reason = os_error_reason(exc)
        err = OutputError(f"cannot write {what}: {reason}", path=path,
                          hint="choose another path, or free some space")
        err.errno = exc.errno  # type: ignore[attr-defined]
        raise err from None
