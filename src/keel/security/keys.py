"""Signing keys for keel's tokens: where they come from, and the public names of the key modules.

The parts, one concern each:

- :mod:`keel.security.signing_key`: one key (:class:`SigningKey`), its ``kid``
  and JWK form, and the HS256 secret checks;
- :mod:`keel.security.key_set`: the key set (:class:`KeySet`): the current key
  that signs, a staged *next* key that is published and verifies but does not
  sign, and retired keys that verify only tokens issued before their
  retirement and are dropped after the longest access-token lifetime;
- :mod:`keel.security.key_file`: the key file's format, read and written atomically;
- :mod:`keel.security.key_rotation`: the lifecycle (stage, promote, emergency, revoke).

Where keys come from (:func:`load_key_set`): ``KEEL_JWT_KEY_FILE`` (written by
``keel keys generate|rotate|promote|revoke``), or ``KEEL_JWT_PRIVATE_KEY``
(one PEM key, no rotation), or ``KEEL_JWT_SECRET`` for ``HS256``. Exactly one
of them. Without any, in development, ``keel serve`` and ``keel dev`` create one
development key file and hand it to every worker (``keel.security.devkeys``);
a process built any other way signs with an ephemeral key of its own and warns
that no other process accepts its tokens. Production refuses to start without
a key (:func:`key_findings`, SEC-34).

Workers read the key file at start-up: after each ``keel keys`` step, restart or
reload (``SIGHUP`` to the gunicorn master) every instance.
"""

from __future__ import annotations

import logging
import os
import stat

from keel._logging import event
from keel.security.key_file import (
    KeyConfigurationError,
    generate_key_file,
    load_key_file,
    read_key_file,
    write_key_file,
)
from keel.security.key_set import (
    JWKS_MAX_AGE,
    MAX_PREVIOUS_KEYS,
    KeySet,
    RetiredKey,
    StagedKey,
    retention,
)
from keel.security.signing_key import (
    ALGORITHMS,
    MIN_HMAC_SECRET_BYTES,
    SigningKey,
    weak_secret_reason,
)
from keel.settings import TokenSettings

__all__ = [
    "ALGORITHMS",
    "JWKS_MAX_AGE",
    "MAX_PREVIOUS_KEYS",
    "MIN_HMAC_SECRET_BYTES",
    "KeyConfigurationError",
    "KeySet",
    "RetiredKey",
    "SigningKey",
    "StagedKey",
    "generate_key_file",
    "key_findings",
    "load_key_file",
    "load_key_set",
    "read_key_file",
    "retention",
    "write_key_file",
]

_log = logging.getLogger("keel.security.keys")


def _configured_key_set(settings: TokenSettings) -> KeySet | None:
    """The configured keys, ``None`` when none are configured; raises on a bad configuration."""
    sources = [
        name
        for name, value in (
            ("KEEL_JWT_KEY_FILE", settings.key_file),
            ("KEEL_JWT_PRIVATE_KEY", settings.private_key),
            ("KEEL_JWT_SECRET", settings.hmac_secret),
        )
        if value
    ]
    if len(sources) > 1:
        raise KeyConfigurationError(
            "E018",
            f"{' and '.join(sources)} are both set; keel takes its signing keys from one place",
            "keep KEEL_JWT_KEY_FILE (EdDSA/ES256, rotatable) or KEEL_JWT_SECRET (HS256)",
        )
    algorithm = settings.algorithm
    if settings.key_file:
        keys = load_key_file(settings.key_file)
        if keys.algorithm != algorithm:
            raise KeyConfigurationError(
                "E017",
                f"the JWT key file holds {keys.algorithm} keys but KEEL_JWT_ALGORITHM is "
                f"{algorithm}",
                "set KEEL_JWT_ALGORITHM to the file's algorithm, or generate a new file",
            )
        return keys
    if settings.private_key is not None:
        if algorithm == "HS256":
            raise KeyConfigurationError(
                "E018",
                "KEEL_JWT_PRIVATE_KEY is set but KEEL_JWT_ALGORITHM is HS256",
                "use KEEL_JWT_SECRET for HS256, or set KEEL_JWT_ALGORITHM=EdDSA or ES256",
            )
        try:
            return KeySet(SigningKey.from_pem(settings.private_key.get_secret_value(), algorithm))
        except (ValueError, TypeError) as exc:
            raise KeyConfigurationError(
                "E018",
                f"KEEL_JWT_PRIVATE_KEY is not an unencrypted PEM {algorithm} private key",
                "use `keel keys generate --file PATH` and KEEL_JWT_KEY_FILE instead",
            ) from exc
    if settings.hmac_secret is not None:
        if algorithm != "HS256":
            raise KeyConfigurationError(
                "E018",
                f"KEEL_JWT_SECRET is set but KEEL_JWT_ALGORITHM is {algorithm}",
                "unset KEEL_JWT_SECRET, or set KEEL_JWT_ALGORITHM=HS256 to use it",
            )
        try:
            return KeySet(SigningKey.from_secret(settings.hmac_secret.get_secret_value()))
        except ValueError as exc:
            raise KeyConfigurationError(
                "E016",
                f"KEEL_JWT_SECRET {weak_secret_reason(settings.hmac_secret.get_secret_value())}",
                f"use at least {MIN_HMAC_SECRET_BYTES} random bytes from a secret store, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
            ) from exc
    return None


def _missing_key_error() -> KeyConfigurationError:
    return KeyConfigurationError(
        "E015",
        "no access-token signing key is configured",
        "run `keel keys generate --file PATH` and set KEEL_JWT_KEY_FILE=PATH "
        "(or KEEL_JWT_SECRET for HS256)",
    )


def load_key_set(settings: TokenSettings, *, production: bool) -> KeySet:
    """The signing keys ``settings`` name; see the module docstring for the sources.

    Raises ``KeyConfigurationError`` for a missing (production only), weak,
    unreadable or conflicting key. In development, without any key (only when
    the process was not started by ``keel serve`` or ``keel dev``), returns an
    ephemeral key of the configured algorithm and logs a warning.
    """
    keys = _configured_key_set(settings)
    if keys is not None:
        return keys
    if production:
        raise _missing_key_error()
    keys = KeySet.generate(settings.algorithm)
    event(
        _log,
        logging.WARNING,
        "jwt_ephemeral_key",
        kid=keys.current.kid,
        detail="no signing key configured: this process signs with a throwaway key; tokens "
        "die with it and other processes refuse them. Serve with `keel serve` or `keel dev` "
        "(they share a development key file), or set KEEL_JWT_KEY_FILE",
    )
    return keys


def key_findings(settings: TokenSettings, *, production: bool) -> list[tuple[str, str, str]]:
    """Configuration findings about the signing keys, as ``(id, message, hint)``.

    ``E0nn`` ids are errors, ``W0nn`` warnings. Messages name settings, never
    their values. E015 no key (production), E016 weak HS256 secret, E017
    unusable key file, E018 conflicting or invalid key settings; W010 key file
    readable by others. W009 (each process a throwaway key, in development) is
    retired: ``keel serve`` and ``keel dev`` share a development key file.
    """
    try:
        keys = _configured_key_set(settings)
    except KeyConfigurationError as exc:
        return [(exc.finding_id, exc.message, exc.hint)]
    findings: list[tuple[str, str, str]] = []
    if keys is None and production:
        missing = _missing_key_error()
        findings.append((missing.finding_id, missing.message, missing.hint))
    if settings.key_file:
        try:
            mode = os.stat(settings.key_file).st_mode
        except OSError:  # pragma: no cover - it was readable a moment ago
            mode = 0
        if stat.S_IMODE(mode) & 0o077:
            findings.append(
                (
                    "W010",
                    "the JWT key file (KEEL_JWT_KEY_FILE) is readable by other users",
                    "chmod 600 it; `keel keys generate|rotate` write it that way",
                )
            )
    return findings
