"""The ``medmulti`` command: one entry point, one module per subcommand.

Each subcommand lives in ``medmulti.commands.<name>`` and defines ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``. Command modules import
their heavy dependencies inside ``run`` so ``medmulti --help`` stays fast.

Exit codes: 0 clean, 1 problems found (or a data error), 2 usage error (bad
arguments, unreadable spec).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .errors import MedmultiError, SpecError

# subcommand -> module; listed in help order
COMMANDS = {
    "demo": "medmulti.commands.demo",
    "sample-data": "medmulti.commands.sample_data",
    "validate": "medmulti.commands.validate",
    "inspect": "medmulti.commands.inspect",
    "info": "medmulti.commands.info",
    "preprocess": "medmulti.commands.preprocess",
    "cache": "medmulti.commands.cache",
    "train": "medmulti.commands.train",
    "evaluate": "medmulti.commands.evaluate",
    "predict": "medmulti.commands.predict",
}

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand.

    Returns
    -------
    argparse.ArgumentParser
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="medmulti",
        description="Multi-modal medical imaging (CT, MR, X-ray) for Keras.",
        epilog="Exit codes: 0 clean, 1 problems found, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"medmulti {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medmulti`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code (0 clean, 1 problems, 2 usage error).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medmulti").setLevel(level)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args))
    except SpecError as exc:
        print(f"medmulti {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MedmultiError as exc:
        print(f"medmulti {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print(f"medmulti {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
