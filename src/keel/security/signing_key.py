"""One signing key: its private material, its ``kid`` and its JWK form.

- Ed25519 (``EdDSA``) by default; P-256 (``ES256``) and ``HS256`` with ≥ 32
  random bytes (RFC 7518 §3.2) are selectable. A ``kid`` is the RFC 7638 JWK
  thumbprint for asymmetric keys; for HMAC keys it is derived from the secret
  with HMAC, so the published header never carries a plain hash of the secret.
- A configured HS256 secret that is short, well known, a placeholder or of low
  entropy is refused (SEC-34).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from keel._secrets import weakness
from keel.settings import JwtAlgorithm

__all__ = [
    "ALGORITHMS",
    "MIN_HMAC_SECRET_BYTES",
    "PrivateMaterial",
    "PublicMaterial",
    "SigningKey",
    "weak_secret_reason",
]

ALGORITHMS: Final[tuple[JwtAlgorithm, ...]] = ("EdDSA", "ES256", "HS256")
#: RFC 7518 §3.2: an HS256 key is at least as long as the hash output.
MIN_HMAC_SECRET_BYTES: Final = 32

PrivateMaterial: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | bytes
PublicMaterial: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey | bytes

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
        reason = weak_secret_reason(secret)
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


# --- secrets ---------------------------------------------------------------------------------


def weak_secret_reason(secret: str) -> str | None:
    """Why ``secret`` is unfit to sign tokens, or ``None`` (SEC-34)."""
    if len(secret.encode("utf-8")) < MIN_HMAC_SECRET_BYTES:
        return f"is shorter than {MIN_HMAC_SECRET_BYTES} bytes"
    return weakness(secret)
