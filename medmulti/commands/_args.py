"""Argument types shared by the subcommands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse


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
