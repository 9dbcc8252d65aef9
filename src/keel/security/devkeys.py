"""One development signing key for every process of a development server.

Without a configured key (``KEEL_JWT_KEY_FILE``, ``KEEL_JWT_PRIVATE_KEY`` or
``KEEL_JWT_SECRET``) each process would sign with a throwaway key of its own,
and a token issued by one gunicorn worker would be refused by the next. So
``keel serve`` and ``keel dev`` call :func:`development_key_file` in the
master, before any worker starts, and point every worker at the file it
returns: ``var/dev-signing-keys.json`` under the working directory, created
once and then reused, so tokens also outlive a restart.

The file is created the way ``keel keys generate`` creates one: written under
a temporary name with mode 0600, flushed, then linked into place, which fails
if the file already exists. Two servers starting at once therefore agree on
one key: the second finds the first one's complete file and reads it.
Production never gets here; it refuses to start without a configured key
(E015).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keel.errors import ConfigurationError
from keel.security.keys import KeyConfigurationError, KeySet, generate_key_file, load_key_file
from keel.settings import TokenSettings

__all__ = ["DEVELOPMENT_KEY_FILE", "DevelopmentKey", "development_key_file", "has_configured_key"]

#: Relative to the working directory, like the SQLite database.
DEVELOPMENT_KEY_FILE: Final = Path("var") / "dev-signing-keys.json"


@dataclass(frozen=True, slots=True)
class DevelopmentKey:
    """The development key file in use: where it is, its key set, and whether it is new."""

    path: Path
    keys: KeySet
    created: bool


def has_configured_key(settings: TokenSettings) -> bool:
    """Whether any signing-key setting is set (whether it is usable is ``key_findings``'s job)."""
    return bool(settings.key_file or settings.private_key or settings.hmac_secret)


def development_key_file(
    settings: TokenSettings, path: Path = DEVELOPMENT_KEY_FILE
) -> DevelopmentKey:
    """Create ``path`` with one new key of the configured algorithm, or read the one there.

    Raises ``ConfigurationError`` naming the file when it cannot be created or
    read, or holds keys of another algorithm; deleting it is always safe in
    development (keel makes a new one, and tokens signed with the old key stop
    working).
    """
    target = path.absolute()
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            return DevelopmentKey(target, generate_key_file(target, settings.algorithm), True)
        except FileExistsError:
            pass  # made earlier, or by a server starting at the same moment: use that one
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the development signing key file {target} ({exc.strerror}); "
            "run `keel keys generate --file PATH` somewhere writable and set KEEL_JWT_KEY_FILE"
        ) from exc
    try:
        keys = load_key_file(target)
    except KeyConfigurationError as exc:
        raise ConfigurationError(
            f"the development signing key file {target}: {exc.message}; delete it and keel "
            "creates a new one"
        ) from exc
    if keys.algorithm != settings.algorithm:
        raise ConfigurationError(
            f"the development signing key file {target} holds {keys.algorithm} keys but "
            f"KEEL_JWT_ALGORITHM is {settings.algorithm}; delete it and keel creates a new one"
        )
    return DevelopmentKey(target, keys, False)
