"""Shared by the auth tests: token settings, a test record, and a token forger.

``Directory`` stands in for the database: subject states with a version that
every change moves on (as the ``users`` row's trigger does), and the ended
sessions. It counts how often it is asked, so a test can prove that the warm
path never reaches it. ``forge`` signs arbitrary headers and claims with any
key (or none), so an HTTP test controls every byte of an attack.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jwt.algorithms import get_default_algorithms

from keel._clock import Clock
from keel.auth import UNKNOWN_SUBJECT, SubjectRecord, SubjectState
from keel.security.keys import SigningKey
from keel.settings import JwtAlgorithm, TokenSettings

__all__ = [
    "AUDIENCE",
    "EPOCH",
    "ISSUER",
    "Directory",
    "active",
    "claims_for",
    "forge",
    "header_for",
    "sign_with",
    "token_settings",
]

ISSUER = "https://keel.test"
AUDIENCE = "keel-api"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def token_settings(algorithm: JwtAlgorithm = "EdDSA", *, leeway: int = 30) -> TokenSettings:
    return TokenSettings(
        algorithm=algorithm,
        key_file=None,
        private_key=None,
        hmac_secret=None,
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl=900,
        leeway=leeway,
    )


def active(*scopes: str, valid_after: datetime = EPOCH) -> SubjectState:
    return SubjectState(active=True, tokens_valid_after=valid_after, scopes=frozenset(scopes))


@dataclass
class Directory:
    """The record, as dicts; ``loads``/``session_loads`` count the "database round trips"."""

    states: dict[str, SubjectState] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    loads: int = 0
    session_loads: int = 0

    async def load(self, subject_id: str) -> SubjectRecord:
        """The subject's record (a ``RecordLoader``)."""
        self.loads += 1
        state = self.states.get(subject_id)
        if state is None:
            return UNKNOWN_SUBJECT
        profile = json.dumps({"id": subject_id}).encode()
        return SubjectRecord(self.versions.get(subject_id, 1), state, profile)

    async def state(self, subject_id: str) -> SubjectState | None:
        """The subject's state alone (a ``StateLoader``)."""
        return (await self.load(subject_id)).state

    async def session(self, subject_id: str, session_id: str) -> bool:
        """Whether the session is live (a ``SessionLoader``)."""
        self.session_loads += 1
        return subject_id in self.states and session_id not in self.ended

    def change(self, subject_id: str, state: SubjectState | None) -> None:
        """Commit a change of ``subject_id`` (``None``: delete it); its version moves on."""
        if state is None:
            self.states.pop(subject_id, None)
        else:
            self.states[subject_id] = state
        self.versions[subject_id] = self.versions.get(subject_id, 1) + 1


# --- forging ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_segment(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def sign_with(key: SigningKey) -> Callable[[bytes], bytes]:
    """A JWS signer for ``key``'s algorithm (what any JOSE library would produce)."""
    algorithm = get_default_algorithms()[key.algorithm]
    return lambda data: algorithm.sign(data, key.private_material)


def forge(
    header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None
) -> str:
    """``header.claims.signature`` in compact form; an empty signature when ``sign`` is None."""
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    signature = sign(signing_input.encode("ascii")) if sign is not None else b""
    return f"{signing_input}.{_b64(signature)}"


def header_for(key: SigningKey, **changes: Any) -> dict[str, Any]:
    """keel's access-token header for ``key``, with ``changes`` (``...`` removes a member)."""
    header: dict[str, Any] = {"alg": key.algorithm, "typ": "at+jwt", "kid": key.kid, **changes}
    return {name: value for name, value in header.items() if value is not ...}


def claims_for(clock: Clock, subject: str = "user-1", **changes: Any) -> dict[str, Any]:
    """Valid access-token claims at ``clock``'s time, with ``changes`` (``...`` removes one)."""
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 600,
        "jti": "forged-jti-0001",
        "sid": "session-1",
        "scope": "user",
        **changes,
    }
    return {name: value for name, value in claims.items() if value is not ...}
