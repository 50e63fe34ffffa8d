"""The ``medmulti`` command: :func:`main` and one module per subcommand.

``medmulti.cli.entry`` holds :func:`main` and the parser built from :data:`COMMANDS`; each subcommand lives in
``medmulti.cli.<name>`` and defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. ``python -m medmulti.cli`` runs the command.
"""

from __future__ import annotations

from .entry import (
    COMMANDS,
    EXIT_BROKEN_PIPE,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    build_parser,
    main,
)

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_BROKEN_PIPE"]
