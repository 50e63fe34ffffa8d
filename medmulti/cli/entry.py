"""The ``medmulti`` command: one entry point, one module per subcommand.

Each subcommand lives in ``medmulti.cli.<name>`` and defines ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``. Command modules import
their heavy dependencies inside ``run`` so ``medmulti --help`` stays fast.

Exit codes: 0 clean, 1 problems found (or a data error), 2 usage error (bad
arguments, unreadable spec).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from .._processes import exit_on_interrupt
from .._version import __version__
from ..errors import MedmultiError, SpecError
from ..text import PrintableFormatter
from .native_log import NativeLogFilter

# subcommand -> module; listed in help order
COMMANDS = {
    "demo": "medmulti.cli.demo",
    "sample-data": "medmulti.cli.sample_data",
    "scan": "medmulti.cli.scan",
    "validate": "medmulti.cli.validate",
    "inspect": "medmulti.cli.inspect",
    "info": "medmulti.cli.info",
    "preprocess": "medmulti.cli.preprocess",
    "cache": "medmulti.cli.cache",
    "split": "medmulti.cli.split",
    "train": "medmulti.cli.train",
    "evaluate": "medmulti.cli.evaluate",
    "predict": "medmulti.cli.predict",
    "explain": "medmulti.cli.explain",
}

#: Exit code: the job finished and found nothing wrong.
EXIT_OK = 0
#: Exit code: problems found (validation errors, failed inputs, a typed data error).
EXIT_PROBLEMS = 1
#: Exit code: bad arguments, an unreadable spec or manifest.
EXIT_USAGE = 2
#: 128 + SIGPIPE, what a shell reports for a program whose reader closed the pipe
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand.

    Returns
    -------
    argparse.ArgumentParser
    """

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
    log_handler = logging.StreamHandler()  # log lines quote manifest keys and paths: escape control characters
    log_handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[log_handler])
    logging.getLogger("medmulti").setLevel(level)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    if args.verbose == 0:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's filtered C++ logging
        with NativeLogFilter():  # and the absl lines TensorFlow prints regardless of it
            return _dispatch(args)
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args))
    except SpecError as exc:
        print(f"medmulti {args.command}: {exc.cli_text()}", file=sys.stderr)
        return EXIT_USAGE
    except MedmultiError as exc:
        print(f"medmulti {args.command}: {type(exc).__name__}: {exc.cli_text()}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        exit_on_interrupt()  # a second Ctrl-C is ignored from here on; no worker outlives us
        print(f"medmulti {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (``medmulti info ... | head``): stop quietly;
        # stdout now points at /dev/null so the interpreter's final flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
