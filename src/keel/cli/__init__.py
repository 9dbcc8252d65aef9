"""The ``keel`` command: check, serve, dev, db, audit, keys, users, security-report.

Each subcommand lives in its own module and registers itself on the parser.
Exit status: 0 success, 1 a finding or failed operation, 2 usage error.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from keel import __version__
from keel.cli import audit, check, db, keys, security_report, serve, users
from keel.cli._output import err
from keel.errors import KeelError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"keel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (check, serve, db, audit, keys, users, security_report):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``keel`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except KeelError as exc:
        # Expected failures (database down, bad configuration) get one line, no traceback.
        err(f"keel: {exc.message} [{exc.code}]")
        return 1
    return status
