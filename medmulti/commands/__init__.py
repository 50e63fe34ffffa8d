"""Subcommands of the ``medmulti`` command (see :mod:`medmulti.cli`)."""
