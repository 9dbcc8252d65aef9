"""``keel audit verify|checkpoint|export|prune``: the tamper-evident audit trail.

- ``verify [--against SEQ:HASH]`` prints ``OK <count> events, head SEQ:HASH``
  (exit 0) or ``BROKEN at seq N: <reason>`` (exit 1).
- ``checkpoint`` records a sealed manual checkpoint and prints the head as
  ``SEQ:HASH`` on its last line: keep it outside the database and pass it to
  ``verify --against`` later (that catches deletion of the newest rows).
- ``export --since SEQ`` writes every event with a greater seq as JSON Lines.
- ``prune --before SEQ --archive FILE`` archives and deletes older events,
  leaving a checkpoint; it is itself audited (``audit_pruned``).

Settings come from the environment (``DATABASE_URL``, ``KEEL_AUDIT_KEY``...).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from keel.cli._lazy import lazy_handler

__all__ = ["register"]

_COMMANDS = "keel.cli._audit_commands"


def _position(text: str) -> Any:
    from keel.audit.chain import ChainLink

    try:
        return ChainLink.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seq(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError("a seq is a non-negative integer")
    return int(text)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "audit", help="verify, checkpoint, export or prune the audit trail"
    )
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    check = sub.add_parser("verify", help="walk the chain; exit 0 only when it is sound")
    check.add_argument(
        "--against",
        metavar="SEQ:HASH",
        type=_position,
        help="a head printed earlier by `keel audit checkpoint` the chain must still reach",
    )
    check.add_argument(
        "--archive",
        metavar="FILE",
        type=Path,
        default=None,
        help="verify a `keel audit prune` archive against the prune checkpoint that followed it",
    )
    check.set_defaults(handler=lazy_handler(_COMMANDS, "verify_chain"))

    mark = sub.add_parser("checkpoint", help="record and print the current head as SEQ:HASH")
    mark.set_defaults(handler=lazy_handler(_COMMANDS, "checkpoint"))

    export = sub.add_parser("export", help="write events as JSON Lines on stdout")
    export.add_argument(
        "--since",
        metavar="SEQ",
        type=_seq,
        default=0,
        help="export events with a seq greater than SEQ (default 0: all)",
    )
    export.set_defaults(handler=lazy_handler(_COMMANDS, "export"))

    cut = sub.add_parser("prune", help="archive and delete events before a seq (audited)")
    cut.add_argument("--before", metavar="SEQ", type=_seq, required=True)
    cut.add_argument("--archive", metavar="FILE", type=Path, required=True)
    cut.set_defaults(handler=lazy_handler(_COMMANDS, "prune_events"))
