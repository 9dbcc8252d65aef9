"""Signing keys for keel's tokens: key material, key sets, the public JWKS, rotation.

A :class:`SigningKey` holds one private key and its ``kid``; a :class:`KeySet`
holds the current key (the one that signs) and the previous one (still
verifies, so tokens signed just before a rotation live out their ≤ 15 minutes).
Every key in a set has the same algorithm: one family, pinned by configuration
(RFC 8725 §3.1, SEC-28).

- Ed25519 (``EdDSA``) by default; P-256 (``ES256``) and ``HS256`` with ≥ 32
  random bytes (RFC 7518 §3.2) are selectable. A ``kid`` is the RFC 7638 JWK
  thumbprint for asymmetric keys; for HMAC keys it is derived from the secret
  with HMAC, so the published header never carries a plain hash of the secret.
- A ``kid`` from a token is only ever a key into the set's in-memory mapping:
  never a path, a query or a URL (RFC 8725 §3.10, SEC-33).
- :meth:`KeySet.jwks` publishes the public halves only; HMAC keys are never
  published.

Where keys come from (:func:`load_key_set`): ``KEEL_JWT_KEY_FILE`` (JSON
``{"current": <private JWK>, "previous": [<private JWK>...]}``, mode 0600,
written atomically by ``keel keys generate|rotate``), or ``KEEL_JWT_PRIVATE_KEY``
(one PEM key, no rotation), or ``KEEL_JWT_SECRET`` for ``HS256``. Exactly one
of them. Without any, in development, ``keel serve`` and ``keel dev`` create one
development key file and hand it to every worker (``keel.security.devkeys``);
a process built any other way signs with an ephemeral key of its own and warns
that no other process accepts its tokens. Production refuses to start without
a key (:func:`key_findings`, SEC-34).

Workers read the key file at start-up: after ``keel keys rotate``, restart or
reload (``SIGHUP`` to the gunicorn master) every instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from keel._logging import event
from keel.errors import ConfigurationError
from keel.settings import JwtAlgorithm, TokenSettings

__all__ = [
    "ALGORITHMS",
    "MAX_PREVIOUS_KEYS",
    "MIN_HMAC_SECRET_BYTES",
    "KeyConfigurationError",
    "KeySet",
    "SigningKey",
    "generate_key_file",
    "key_findings",
    "load_key_file",
    "load_key_set",
    "rotate",
    "write_key_file",
]

ALGORITHMS: Final[tuple[JwtAlgorithm, ...]] = ("EdDSA", "ES256", "HS256")
#: RFC 7518 §3.2: an HS256 key is at least as long as the hash output.
MIN_HMAC_SECRET_BYTES: Final = 32
#: A key file may name a few older keys (hand-edited); rotation keeps exactly one.
MAX_PREVIOUS_KEYS: Final = 4
_MAX_KEY_FILE_BYTES: Final = 64 * 1024

PrivateMaterial: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | bytes
PublicMaterial: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey | bytes

_log = logging.getLogger("keel.security.keys")

# Values that appear in tutorials, READMEs and jwt.io; a secret equal to one of them (or
# one of them repeated to reach 32 bytes) is public knowledge.
_WELL_KNOWN_SECRETS: Final = frozenset(
    {
        "secret",
        "secretkey",
        "secret-key",
        "secret_key",
        "mysecret",
        "supersecret",
        "super-secret",
        "your-256-bit-secret",
        "your-secret-key",
        "your_secret_key",
        "jwt-secret",
        "jwt_secret",
        "jwtsecret",
        "changeme",
        "password",
        "keyboard cat",
        "default",
        "test",
        "keel",
    }
)
_PLACEHOLDER_MARKERS: Final = (
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "replace_me",
    "your-256-bit-secret",
    "placeholder",
    "example",
    "insecure",
)


class KeyConfigurationError(ConfigurationError):
    """The signing keys cannot be loaded; ``finding_id`` and ``hint`` say which check and how."""

    def __init__(self, finding_id: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.finding_id = finding_id
        self.hint = hint


# --- JWK encoding -----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: object) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); ``ValueError`` otherwise."""
    if not isinstance(value, str) or len(value) % 4 == 1:
        raise ValueError("not base64url")
    if value.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if _b64url(data) != value:
        raise ValueError("not canonical base64url")
    return data


def _p256_coordinate(value: int) -> str:
    return _b64url(value.to_bytes(32, "big"))


def _public_members(public: PublicMaterial) -> dict[str, str]:
    """The RFC 7638 required members of a public key (the thumbprint's input)."""
    if isinstance(public, Ed25519PublicKey):
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public.public_bytes_raw())}
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": _p256_coordinate(numbers.x),
            "y": _p256_coordinate(numbers.y),
        }
    raise TypeError("HMAC keys have no public members")


def _thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, without whitespace."""
    canonical = json.dumps(dict(members), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _hmac_kid(secret: bytes) -> str:
    return "hs-" + _b64url(hmac.new(secret, b"keel jwt key id", hashlib.sha256).digest()[:16])


# --- keys -------------------------------------------------------------------------------------


class SigningKey:
    """One signing key: its ``kid``, its algorithm and its private material.

    Build one with :meth:`generate`, :meth:`from_pem`, :meth:`from_secret` or
    :meth:`from_jwk`. The private material never appears in ``repr``.
    """

    __slots__ = ("_algorithm", "_kid", "_private", "_public")

    def __init__(self, private: PrivateMaterial) -> None:
        self._private = private
        self._public: PublicMaterial
        if isinstance(private, Ed25519PrivateKey):
            self._algorithm: JwtAlgorithm = "EdDSA"
            self._public = private.public_key()
            self._kid = _thumbprint(_public_members(self._public))
        elif isinstance(private, ec.EllipticCurvePrivateKey):
            if not isinstance(private.curve, ec.SECP256R1):
                raise ValueError("ES256 needs a P-256 key")
            self._algorithm = "ES256"
            self._public = private.public_key()
            self._kid = _thumbprint(_public_members(self._public))
        elif isinstance(private, bytes):
            if len(private) < MIN_HMAC_SECRET_BYTES:
                raise ValueError(f"an HS256 secret needs at least {MIN_HMAC_SECRET_BYTES} bytes")
            self._algorithm = "HS256"
            self._public = private
            self._kid = _hmac_kid(private)
        else:
            raise TypeError("unsupported key type")

    @classmethod
    def generate(cls, algorithm: JwtAlgorithm = "EdDSA") -> SigningKey:
        """A new random key for ``algorithm`` (HS256: 32 bytes from the CSPRNG)."""
        if algorithm == "EdDSA":
            return cls(Ed25519PrivateKey.generate())
        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "HS256":
            return cls(secrets.token_bytes(MIN_HMAC_SECRET_BYTES))
        raise ValueError("unsupported algorithm")

    @classmethod
    def from_pem(cls, pem: str | bytes, algorithm: JwtAlgorithm) -> SigningKey:
        """An unencrypted PKCS#8 PEM private key, which must suit ``algorithm``."""
        data = pem.encode("utf-8") if isinstance(pem, str) else pem
        loaded = load_pem_private_key(data, password=None)
        if not isinstance(loaded, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("the PEM key is neither Ed25519 nor P-256")
        key = cls(loaded)
        if key.algorithm != algorithm:
            raise ValueError(f"the PEM key is for {key.algorithm}, not {algorithm}")
        return key

    @classmethod
    def from_secret(cls, secret: str) -> SigningKey:
        """An HS256 key from a configured secret; weak or well-known secrets are refused."""
        reason = _weak_secret_reason(secret)
        if reason is not None:
            raise ValueError(f"the HS256 secret {reason}")
        return cls(secret.encode("utf-8"))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, object]) -> SigningKey:
        """A private JWK (RFC 7517/7518/8037) as written by :meth:`private_jwk`.

        ``kid`` and ``alg``, when present, must agree with the key itself.
        """
        kty = jwk.get("kty")
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519":
                raise ValueError("only Ed25519 OKP keys are supported")
            key = cls(Ed25519PrivateKey.from_private_bytes(_b64url_decode(jwk.get("d"))))
        elif kty == "EC":
            if jwk.get("crv") != "P-256":
                raise ValueError("only P-256 EC keys are supported")
            d = _b64url_decode(jwk.get("d"))
            if len(d) != 32:
                raise ValueError("a P-256 private key is 32 bytes")
            key = cls(ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1()))
        elif kty == "oct":
            key = cls(_b64url_decode(jwk.get("k")))
        else:
            raise ValueError("unsupported key type")
        public = key.public_jwk()
        if public is not None:
            for member in ("x", "y"):
                if member in public and jwk.get(member) != public[member]:
                    raise ValueError("the public part does not match the private key")
        if "kid" in jwk and jwk["kid"] != key.kid:
            raise ValueError("the kid does not match the key")
        if "alg" in jwk and jwk["alg"] != key.algorithm:
            raise ValueError("the alg does not match the key")
        return key

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def algorithm(self) -> JwtAlgorithm:
        return self._algorithm

    @property
    def is_symmetric(self) -> bool:
        return self._algorithm == "HS256"

    @property
    def private_material(self) -> PrivateMaterial:
        """What signs: a ``cryptography`` private key, or the HMAC secret."""
        return self._private

    @property
    def public_material(self) -> PublicMaterial:
        """What verifies: a ``cryptography`` public key, or the HMAC secret."""
        return self._public

    def public_jwk(self) -> dict[str, str] | None:
        """The public JWK (RFC 7517), or ``None`` for an HMAC key, which is never published."""
        if isinstance(self._public, bytes):
            return None
        return {
            **_public_members(self._public),
            "kid": self._kid,
            "alg": self._algorithm,
            "use": "sig",
        }

    def private_jwk(self) -> dict[str, str]:
        """The private JWK, for the key file only."""
        private = self._private
        if isinstance(private, bytes):
            return {"kty": "oct", "k": _b64url(private), "kid": self._kid, "alg": "HS256"}
        public = self.public_jwk()
        assert public is not None
        if isinstance(private, Ed25519PrivateKey):
            d = _b64url(private.private_bytes_raw())
        else:
            d = _p256_coordinate(private.private_numbers().private_value)
        return {**public, "d": d}

    def __repr__(self) -> str:
        return f"SigningKey(kid={self._kid!r}, algorithm={self._algorithm!r})"


class KeySet:
    """The current signing key and the previous ones that still verify.

    Lookup by ``kid`` is a lookup in a fixed in-memory mapping and nothing else.
    """

    __slots__ = ("_by_kid", "_current", "_previous")

    def __init__(self, current: SigningKey, previous: Sequence[SigningKey] = ()) -> None:
        if len(previous) > MAX_PREVIOUS_KEYS:
            raise ValueError(f"at most {MAX_PREVIOUS_KEYS} previous keys")
        keys = (current, *previous)
        if any(key.algorithm != current.algorithm for key in keys):
            raise ValueError("every key in a key set has the same algorithm")
        by_kid = {key.kid: key for key in keys}
        if len(by_kid) != len(keys):
            raise ValueError("the same key appears twice")
        self._current = current
        self._previous = tuple(previous)
        self._by_kid: Mapping[str, SigningKey] = MappingProxyType(by_kid)

    @classmethod
    def generate(cls, algorithm: JwtAlgorithm = "EdDSA") -> KeySet:
        """A key set of one new key."""
        return cls(SigningKey.generate(algorithm))

    @property
    def current(self) -> SigningKey:
        return self._current

    @property
    def previous(self) -> tuple[SigningKey, ...]:
        return self._previous

    @property
    def algorithm(self) -> JwtAlgorithm:
        return self._current.algorithm

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._by_kid)

    def find(self, kid: str) -> SigningKey | None:
        """The key named ``kid``, or ``None``."""
        return self._by_kid.get(kid)

    def __iter__(self) -> Iterator[SigningKey]:
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def rotated(self) -> KeySet:
        """A new current key of the same algorithm; the current one becomes the only previous."""
        return KeySet(SigningKey.generate(self.algorithm), (self._current,))

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set (RFC 7517 §5): current and previous public keys, nothing private."""
        return {"keys": [jwk for key in self if (jwk := key.public_jwk()) is not None]}

    def __repr__(self) -> str:
        return f"KeySet(algorithm={self.algorithm!r}, kids={list(self.kids)!r})"


# --- key files --------------------------------------------------------------------------------


def _file_error(message: str) -> KeyConfigurationError:
    return KeyConfigurationError(
        "E017",
        f"the JWT key file {message}",
        "create it with `keel keys generate --file PATH` and point KEEL_JWT_KEY_FILE at it",
    )


def load_key_file(path: str | os.PathLike[str]) -> KeySet:
    """The key set stored in ``path``; ``KeyConfigurationError`` (E017) if it cannot be used."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise _file_error("cannot be read") from exc
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise _file_error("is too large")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _file_error("is not JSON") from exc
    if not isinstance(document, dict) or set(document) - {"current", "previous"}:
        raise _file_error('must be {"current": {...}, "previous": [...]}')
    current, previous = document.get("current"), document.get("previous", [])
    if not isinstance(current, dict) or not isinstance(previous, list):
        raise _file_error('must be {"current": {...}, "previous": [...]}')
    if not all(isinstance(jwk, dict) for jwk in previous):
        raise _file_error("lists a previous key that is not a JWK object")
    try:
        return KeySet(SigningKey.from_jwk(current), [SigningKey.from_jwk(p) for p in previous])
    except (ValueError, TypeError) as exc:
        raise _file_error(f"holds an unusable key ({exc})") from exc


def _serialise(keys: KeySet) -> bytes:
    document = {
        "current": keys.current.private_jwk(),
        "previous": [key.private_jwk() for key in keys.previous],
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_key_file(path: str | os.PathLike[str], keys: KeySet, *, overwrite: bool = True) -> None:
    """Write ``keys`` to ``path`` atomically with mode 0600.

    The file is written next to ``path`` under a temporary name, flushed to
    disk, then renamed over ``path`` (or, with ``overwrite=False``, linked to
    it, which fails if ``path`` exists), so a reader sees the old file or the
    new one, never half of one.
    """
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_serialise(keys))
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)
            os.unlink(temporary)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_key_file(path: str | os.PathLike[str], algorithm: JwtAlgorithm = "EdDSA") -> KeySet:
    """Create ``path`` holding one new key; ``FileExistsError`` if it exists."""
    keys = KeySet.generate(algorithm)
    write_key_file(path, keys, overwrite=False)
    return keys


def rotate(key_file: str | os.PathLike[str]) -> KeySet:
    """Rotate the keys in ``key_file``: a new current key; the old current becomes the previous.

    Exactly one previous key is kept, so a key rotated out twice no longer
    verifies. Rotate at least one access-token lifetime apart, or tokens signed
    just before the first rotation stop verifying early.
    """
    keys = load_key_file(key_file).rotated()
    write_key_file(key_file, keys)
    return keys


# --- from settings ----------------------------------------------------------------------------


def _entropy_bits_per_char(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _weak_secret_reason(secret: str) -> str | None:
    """Why ``secret`` is unfit to sign tokens, or ``None`` (SEC-34)."""
    if len(secret.encode("utf-8")) < MIN_HMAC_SECRET_BYTES:
        return f"is shorter than {MIN_HMAC_SECRET_BYTES} bytes"
    lowered = secret.strip().lower()
    for known in _WELL_KNOWN_SECRETS:
        repeats, remainder = divmod(len(lowered), len(known))
        if remainder == 0 and lowered == known * repeats:
            return "is a well-known value"
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return "looks like a placeholder"
    if _entropy_bits_per_char(secret) < 3.0:
        return "has too little randomness"
    return None


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
                f"KEEL_JWT_SECRET {_weak_secret_reason(settings.hmac_secret.get_secret_value())}",
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
