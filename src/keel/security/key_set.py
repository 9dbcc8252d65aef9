"""A key set: the key that signs, the key staged to sign next, and retired keys.

Every key in a set has the same algorithm: one family, pinned by configuration
(RFC 8725 §3.1, SEC-28). A key is in one of three states:

- **current**: signs every new token, verifies;
- **next** (staged by ``keel keys rotate``): published in the JWKS and
  verifies, but does not sign, so every instance and every JWKS cache knows
  it before the first token it signs exists;
- **retired** (the previous current key, from ``keel keys promote``): verifies
  only tokens whose ``iat`` is at most its retirement time plus the leeway,
  and is dropped, from verification and from the JWKS, :func:`retention`
  seconds after its retirement (the longest an access token signed before
  the retirement can live). A token forged with a retired private key after
  its retirement is refused.

A ``kid`` from a token is only ever a key into the set's in-memory mapping:
never a path, a query or a URL (RFC 8725 §3.10, SEC-33). :meth:`KeySet.jwks`
publishes the public halves only; HMAC keys are never published.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from keel.security.signing_key import SigningKey
from keel.settings import JwtAlgorithm, TokenSettings

__all__ = [
    "JWKS_MAX_AGE",
    "MAX_PREVIOUS_KEYS",
    "KeySet",
    "RetiredKey",
    "StagedKey",
    "retention",
]

#: A key file may name a few retired keys (hand-edited); promotion keeps what has not dropped.
MAX_PREVIOUS_KEYS: Final = 4
#: Seconds a JWKS response may be cached (its ``Cache-Control: max-age``), and so the
#: least time a staged key is published before ``keel keys promote`` lets it sign.
JWKS_MAX_AGE: Final = 300


def retention(settings: TokenSettings) -> int:
    """Seconds a retired key keeps verifying: the access-token lifetime plus the leeway."""
    return settings.access_ttl + settings.leeway


@dataclass(frozen=True, slots=True)
class StagedKey:
    """A key published and verifying since ``staged_at`` (Unix seconds) that does not sign yet."""

    key: SigningKey
    staged_at: int


@dataclass(frozen=True, slots=True)
class RetiredKey:
    """A key that stopped signing at ``retired_at`` (Unix seconds)."""

    key: SigningKey
    retired_at: int

    def accepts(self, issued_at: int, now: float, *, leeway: int, keep_for: int) -> bool:
        """Whether a token issued at ``issued_at`` and verified at ``now`` may use this key."""
        return issued_at <= self.retired_at + leeway and now < self.dropped_at(keep_for)

    def dropped_at(self, keep_for: int) -> int:
        return self.retired_at + keep_for


class KeySet:
    """The current signing key, an optional staged next key, and retired keys.

    Lookup by ``kid`` is a lookup in a fixed in-memory mapping and nothing else.
    """

    __slots__ = ("_by_kid", "_current", "_next", "_retired")

    def __init__(
        self,
        current: SigningKey,
        retired: Sequence[RetiredKey] = (),
        *,
        next: StagedKey | None = None,
    ) -> None:
        if len(retired) > MAX_PREVIOUS_KEYS:
            raise ValueError(f"at most {MAX_PREVIOUS_KEYS} previous keys")
        keys = (current, *(() if next is None else (next.key,)), *(r.key for r in retired))
        if any(key.algorithm != current.algorithm for key in keys):
            raise ValueError("every key in a key set has the same algorithm")
        by_kid = {key.kid: key for key in keys}
        if len(by_kid) != len(keys):
            raise ValueError("the same key appears twice")
        self._current = current
        self._next = next
        self._retired = tuple(retired)
        self._by_kid: Mapping[str, SigningKey] = MappingProxyType(by_kid)

    @classmethod
    def generate(cls, algorithm: JwtAlgorithm = "EdDSA") -> KeySet:
        """A key set of one new key."""
        return cls(SigningKey.generate(algorithm))

    @property
    def current(self) -> SigningKey:
        """The key that signs."""
        return self._current

    @property
    def next(self) -> StagedKey | None:
        """The staged key: published and verifying, not signing."""
        return self._next

    @property
    def retired(self) -> tuple[RetiredKey, ...]:
        return self._retired

    @property
    def previous(self) -> tuple[SigningKey, ...]:
        """The retired keys themselves, newest first."""
        return tuple(retired.key for retired in self._retired)

    @property
    def algorithm(self) -> JwtAlgorithm:
        return self._current.algorithm

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._by_kid)

    def find(self, kid: str) -> SigningKey | None:
        """The key named ``kid`` in any state, or ``None``; see :meth:`accepts` for retired keys."""
        return self._by_kid.get(kid)

    def accepts(
        self, key: SigningKey, *, issued_at: int, now: float, leeway: int, keep_for: int
    ) -> bool:
        """Whether a token signed by ``key`` and issued at ``issued_at`` verifies at ``now``.

        The current and the staged key accept any ``iat`` (the time claims are
        checked elsewhere); a retired key only tokens issued before its
        retirement plus ``leeway``, and none once ``keep_for`` seconds passed.
        """
        for retired in self._retired:
            if retired.key is key:
                return retired.accepts(issued_at, now, leeway=leeway, keep_for=keep_for)
        return self._by_kid.get(key.kid) is key

    def live(self, now: float, keep_for: int) -> KeySet:
        """This set without the retired keys dropped by ``now``."""
        kept = [r for r in self._retired if now < r.dropped_at(keep_for)]
        if len(kept) == len(self._retired):
            return self
        return KeySet(self._current, kept, next=self._next)

    def next_drop(self, keep_for: int) -> int | None:
        """When the next retired key drops (Unix seconds), or ``None``."""
        return min((r.dropped_at(keep_for) for r in self._retired), default=None)

    def __iter__(self) -> Iterator[SigningKey]:
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set (RFC 7517 §5): current, staged, retired; nothing private."""
        return {"keys": [jwk for key in self if (jwk := key.public_jwk()) is not None]}

    def __repr__(self) -> str:
        return f"KeySet(algorithm={self.algorithm!r}, kids={list(self.kids)!r})"
