"""``keel security-report [--url URL] [--out DIR] [--json] [--strict]``: the security summary.

Runs every check of :mod:`keel.report` against the configured settings (and,
with ``--url``, the running instance there), prints one line per claim (or,
with ``--json``, the JSON document), and writes SECURITY_SUMMARY.md and
security-summary.json into ``--out`` (default: the working directory).
Exit 1 when a check failed (with ``--strict``, also when one could not run).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from keel.cli._lazy import lazy_handler

__all__ = ["register"]


def _url(text: str) -> str:
    from keel.report._wire import Target

    try:
        Target.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "security-report",
        help="check the security claims and write SECURITY_SUMMARY.md and security-summary.json",
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        type=_url,
        default=None,
        help="a running instance to probe live (http://127.0.0.1:8000); without it those "
        "claims are 'not checked'",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path(),
        help="where to write the two files (default: the working directory)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the JSON document instead of one line a claim"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 also when a check could not run"
    )
    parser.set_defaults(handler=lazy_handler("keel.cli._report_command", "security_report"))
