"""The key file (``KEEL_JWT_KEY_FILE``): its format, and reading and writing it safely.

Format (version 2, written by ``keel keys generate|rotate|promote|revoke``)::

    {"version": 2,
     "current": <private JWK>,
     "next":    {"key": <private JWK>, "staged_at": <Unix seconds>},          (optional)
     "retired": [{"key": <private JWK>, "retired_at": <Unix seconds>}, ...]}

A version 1 file (``{"current": <JWK>, "previous": [<JWK>...]}``, from before
keys had states) is still read: its previous keys count as retired when the
file was last written (its modification time), which is when the rotation
that wrote it happened. Every write is atomic with mode 0600: a reader sees the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Final

from keel.errors import ConfigurationError
from keel.security.key_set import KeySet, RetiredKey, StagedKey
from keel.security.signing_key import SigningKey
from keel.settings import JwtAlgorithm

__all__ = [
    "KeyConfigurationError",
    "generate_key_file",
    "load_key_file",
    "read_key_file",
    "serialise",
    "write_key_bytes",
    "write_key_file",
]

_MAX_KEY_FILE_BYTES: Final = 64 * 1024
_VERSION: Final = 2
_SHAPE: Final = '{"version": 2, "current": {...}, "next": {...}, "retired": [...]}'


class KeyConfigurationError(ConfigurationError):
    """The signing keys cannot be loaded; ``finding_id`` and ``hint`` say which check and how."""

    def __init__(self, finding_id: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.finding_id = finding_id
        self.hint = hint


def _file_error(message: str) -> KeyConfigurationError:
    return KeyConfigurationError(
        "E017",
        f"the JWT key file {message}",
        "create it with `keel keys generate --file PATH` and point KEEL_JWT_KEY_FILE at it",
    )


def read_key_file(path: str | os.PathLike[str]) -> tuple[KeySet, bytes]:
    """The key set stored in ``path`` and the file's bytes; ``KeyConfigurationError`` (E017)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE_BYTES + 1)
            modified = int(os.fstat(handle.fileno()).st_mtime)
    except OSError as exc:
        raise _file_error("cannot be read") from exc
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise _file_error("is too large")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _file_error("is not JSON") from exc
    if not isinstance(document, dict):
        raise _file_error(f"must be {_SHAPE}")
    try:
        if "version" in document:
            return _version_2(document), data
        return _version_1(document, modified), data
    except (ValueError, TypeError) as exc:
        raise _file_error(f"holds an unusable key ({exc})") from exc


def load_key_file(path: str | os.PathLike[str]) -> KeySet:
    """The key set stored in ``path``; ``KeyConfigurationError`` (E017) if it cannot be used."""
    return read_key_file(path)[0]


def _version_1(document: dict[str, Any], modified: int) -> KeySet:
    if set(document) - {"current", "previous"}:
        raise _file_error(f"must be {_SHAPE}")
    current, previous = document.get("current"), document.get("previous", [])
    if not isinstance(current, dict) or not isinstance(previous, list):
        raise _file_error(f"must be {_SHAPE}")
    if not all(isinstance(jwk, dict) for jwk in previous):
        raise _file_error("lists a previous key that is not a JWK object")
    retired = [RetiredKey(SigningKey.from_jwk(jwk), modified) for jwk in previous]
    return KeySet(SigningKey.from_jwk(current), retired)


def _timestamp(entry: dict[str, Any], name: str) -> int:
    value = entry.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _file_error(f"has a key without a valid {name}")
    return value


def _entry(value: object, name: str) -> tuple[SigningKey, int]:
    if not isinstance(value, dict) or set(value) != {"key", name}:
        raise _file_error(f'must hold {{"key": {{...}}, "{name}": <seconds>}} entries')
    jwk = value["key"]
    if not isinstance(jwk, dict):
        raise _file_error("holds a key that is not a JWK object")
    return SigningKey.from_jwk(jwk), _timestamp(value, name)


def _version_2(document: dict[str, Any]) -> KeySet:
    if document.get("version") != _VERSION or set(document) - {
        "version",
        "current",
        "next",
        "retired",
    }:
        raise _file_error(f"must be {_SHAPE}")
    current, retired = document.get("current"), document.get("retired", [])
    if not isinstance(current, dict) or not isinstance(retired, list):
        raise _file_error(f"must be {_SHAPE}")
    staged = None
    if document.get("next") is not None:
        staged = StagedKey(*_entry(document["next"], "staged_at"))
    old = [RetiredKey(*_entry(entry, "retired_at")) for entry in retired]
    return KeySet(SigningKey.from_jwk(current), old, next=staged)


def serialise(keys: KeySet) -> bytes:
    """The key file's bytes for ``keys`` (version 2)."""
    document: dict[str, Any] = {"version": _VERSION, "current": keys.current.private_jwk()}
    if keys.next is not None:
        document["next"] = {"key": keys.next.key.private_jwk(), "staged_at": keys.next.staged_at}
    document["retired"] = [
        {"key": r.key.private_jwk(), "retired_at": r.retired_at} for r in keys.retired
    ]
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_key_file(path: str | os.PathLike[str], keys: KeySet, *, overwrite: bool = True) -> None:
    """Write ``keys`` to ``path`` atomically with mode 0600 (see :func:`write_key_bytes`)."""
    write_key_bytes(path, serialise(keys), overwrite=overwrite)


def write_key_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600.

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
            handle.write(data)
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
