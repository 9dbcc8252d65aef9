"""``keel keys generate|rotate|show``: the access-token signing key file.

The file holds private keys: it is written atomically with mode 0600, and only
``show`` reads it back to the terminal, printing the public JWK Set and nothing
private. After ``rotate``, reload every keel process (they read the file at
start-up).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from keel.cli._output import out
from keel.errors import ConfigurationError

__all__ = ["register"]


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "keys", help="access-token signing keys (generate, rotate, show)"
    )
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = sub.add_parser("generate", help="create a new key file (refuses to overwrite)")
    generate.add_argument("--file", required=True, metavar="PATH", help="the key file to create")
    generate.add_argument(
        "--algorithm",
        choices=("EdDSA", "ES256", "HS256"),
        default="EdDSA",
        help="signing algorithm (default EdDSA: Ed25519)",
    )
    generate.set_defaults(handler=_generate)
    rotate = sub.add_parser(
        "rotate", help="new current key; the old one verifies until the next rotation"
    )
    rotate.add_argument("--file", required=True, metavar="PATH", help="the key file to rotate")
    rotate.set_defaults(handler=_rotate)
    show = sub.add_parser("show", help="print the public JWK Set (no private parts)")
    show.add_argument("--file", required=True, metavar="PATH", help="the key file to read")
    show.set_defaults(handler=_show)


def _generate(args: argparse.Namespace) -> int:
    from keel.security import keys  # cryptography loads only for the commands that need it

    try:
        created = keys.generate_key_file(args.file, args.algorithm)
    except FileExistsError as exc:
        raise ConfigurationError(
            "the key file already exists; use `keel keys rotate --file PATH` to replace its key"
        ) from exc
    except OSError as exc:
        raise ConfigurationError("the key file cannot be written") from exc
    out(created.current.kid)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from keel.security import keys

    try:
        rotated = keys.rotate(args.file)
    except OSError as exc:
        raise ConfigurationError("the key file cannot be written") from exc
    out(rotated.current.kid)
    return 0


def _show(args: argparse.Namespace) -> int:
    from keel.security import keys

    out(json.dumps(keys.load_key_file(args.file).jwks(), indent=2, sort_keys=True))
    return 0
