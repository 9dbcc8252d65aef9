"""``keel keys generate|rotate|promote|revoke|show``: the access-token signing key file.

The file holds private keys: it is written atomically with mode 0600, and only
``show`` reads it back to the terminal, printing the public JWK Set and nothing
private. A rotation is two steps, each followed by a reload of every keel
process (they read the file at start-up):

- ``rotate`` stages a new key: published in the JWKS and accepted by every
  reloaded instance, not yet signing; ``rotate --emergency`` replaces the
  signing key at once and drops every other key (a leaked key);
- ``promote`` makes the staged key sign, once it has been published for the
  JWKS cache lifetime (``--force`` skips the wait), and retires the old key:
  it verifies tokens issued before its retirement and is dropped after the
  access-token lifetime plus the leeway;
- ``revoke KID`` drops a staged or retired key at once.

``rotate``, ``promote`` and ``revoke`` are audited (``key_*`` actions), so they
need the database settings, as ``keel audit`` does.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from keel.cli._lazy import lazy_handler
from keel.cli._output import out
from keel.errors import ConfigurationError

__all__ = ["register"]

_COMMANDS = "keel.cli._keys_commands"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "keys", help="access-token signing keys (generate, rotate, promote, revoke, show)"
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
        "rotate", help="stage a new key: published and verifying, not signing (audited)"
    )
    rotate.add_argument("--file", required=True, metavar="PATH", help="the key file to rotate")
    rotate.add_argument(
        "--emergency",
        action="store_true",
        help="sign with a new key at once and drop every other key (a leaked key)",
    )
    rotate.set_defaults(handler=lazy_handler(_COMMANDS, "rotate_keys"))
    promote = sub.add_parser(
        "promote", help="the staged key signs; the current one retires (audited)"
    )
    promote.add_argument("--file", required=True, metavar="PATH", help="the key file")
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote before the JWKS cache lifetime has passed (caches may refuse tokens)",
    )
    promote.set_defaults(handler=lazy_handler(_COMMANDS, "promote_key"))
    revoke = sub.add_parser("revoke", help="drop a staged or retired key at once (audited)")
    revoke.add_argument("--file", required=True, metavar="PATH", help="the key file")
    revoke.add_argument("kid", metavar="KID", help="the key id to drop")
    revoke.set_defaults(handler=lazy_handler(_COMMANDS, "revoke_key"))
    show = sub.add_parser("show", help="print the public JWK Set (no private parts)")
    show.add_argument("--file", required=True, metavar="PATH", help="the key file to read")
    show.set_defaults(handler=_show)


def _generate(args: argparse.Namespace) -> int:
    from keel.security import key_file  # cryptography loads only for the commands that need it

    try:
        created = key_file.generate_key_file(args.file, args.algorithm)
    except FileExistsError as exc:
        raise ConfigurationError(
            "the key file already exists; use `keel keys rotate --file PATH` to replace its key"
        ) from exc
    except OSError as exc:
        raise ConfigurationError("the key file cannot be written") from exc
    out(created.current.kid)
    return 0


def _show(args: argparse.Namespace) -> int:
    from keel.security import key_file

    out(json.dumps(key_file.load_key_file(args.file).jwks(), indent=2, sort_keys=True))
    return 0
