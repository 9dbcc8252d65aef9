"""The password policy (NIST SP 800-63B-4 §3.1.1.2; SEC-01..SEC-05) and the shipped blocklist.

:meth:`PasswordPolicy.check` applies these rules in order; the first that fails
raises :class:`PasswordRejected` with its stable ``code``:

1. ``password_too_long``: more than ``max_length`` code points after NFKC. The
   raw input is also capped at ``4 * max_length`` code points before it is
   normalised, so a 1 MB body costs nothing (SEC-02).
2. ``password_invalid_characters``: NUL or an unpaired surrogate. NIST asks for
   every printable character and all of Unicode, and keel accepts them (tabs and
   other controls included); these two are refused because an unpaired
   surrogate cannot be encoded as UTF-8 and NUL ends a string in C interfaces.
3. ``password_blocklisted``: the password is common (SEC-04), compared
   case-insensitively (NFKC, case-folded) so "Password1" is caught with
   "password1". It is common when the whole value is on the blocklist, or when
   it is a blocklisted value padded only with digits, punctuation, symbols or
   spaces ("password1234567"), or a blocklisted phrase with spaces removed.
   Context words count as well: the service name, and the e-mail address, its
   local part and its parts, and the words of display or user names the caller
   passes. A password is rejected when nothing but digits, punctuation,
   symbols and spaces is left after the context words are taken out of it
   ("keel2026!!!!", "alice.smith123456789"), or when what is left is itself
   common ("alicepassword1"). A passphrase that merely contains a context word
   among other words ("my keel is long and blue") is accepted. Context words
   shorter than three code points are ignored.
4. ``password_too_short``: fewer than ``min_length`` code points (never below 8)
   after NFKC. It is checked after the blocklist so that a short common password
   is told the more useful reason.

No composition rules apply (SEC-03) and nothing is trimmed or truncated (SEC-05).

The blocklist is one binary file (``data/common-passwords.bin``, built by
``scripts/build_blocklist.py``; source and licence in ``data/README.md``) read
on first use, never at import. It holds 48-bit BLAKE2b fingerprints of the
normalised entries in a static hash table: a directory of ``2**bucket_bits + 1``
offsets indexed by a fingerprint's top bits, then each bucket's remaining 32
bits, sorted. Membership is one directory read and a scan of a few entries over
a ``memoryview``: O(1), without a Python object per entry.

File layout (little-endian)::

    header     8s magic b"KEELPWB\\x01", u32 entry count, u8 bucket bits, 3 pad bytes
    directory  (2**bucket_bits + 1) * u32: bucket b holds tags[directory[b]:directory[b + 1]]
    tags       entry count * u32: the low 32 bits of each fingerprint, by bucket, sorted
"""

from __future__ import annotations

import array
import functools
import hashlib
import importlib.resources
import itertools
import re
import struct
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from keel.errors import ConfigurationError, InvalidInput
from keel.settings import PasswordSettings

__all__ = [
    "BLOCKLIST_FILE",
    "MAX_LENGTH_FLOOR",
    "MIN_LENGTH_FLOOR",
    "Blocklist",
    "PasswordPolicy",
    "PasswordRejected",
    "RejectionCode",
    "encode_blocklist",
    "hash_input",
    "normalise",
]

MIN_LENGTH_FLOOR: Final = 8  # NIST §3.1.1.2: never below 8, even with MFA
MAX_LENGTH_FLOOR: Final = 64  # NIST §3.1.1.2: at least 64 must be accepted
# The raw input may shrink under NFKC (composition), so the pre-normalisation cap
# is generous; it only has to stop a megabyte string from being normalised.
_RAW_LENGTH_FACTOR: Final = 4
_CONTEXT_TOKEN_MIN: Final = 3

BLOCKLIST_FILE: Final = "common-passwords.bin"
_MAGIC: Final = b"KEELPWB\x01"
_HEADER: Final = struct.Struct("<8sIB3x")
_PERSON: Final = b"keel-blocklist-1"  # BLAKE2b personalisation: no key, domain separation only
_TAG_MASK: Final = 0xFFFF_FFFF
_DEFAULT_BUCKET_BITS: Final = 16

_INVALID = re.compile("[\x00\ud800-\udfff]")
_SEPARATORS = re.compile(r"[\W_]+")
_LETTER_RUNS = re.compile(r"[^\W\d_]+")

RejectionCode = Literal[
    "password_too_short",
    "password_too_long",
    "password_blocklisted",
    "password_invalid_characters",
]


class PasswordRejected(InvalidInput):
    """The password does not meet the password policy; ``code`` says which rule."""

    code = "password_rejected"

    def __init__(self, code: RejectionCode, message: str) -> None:
        # The message is fixed text per rule: it never contains the password.
        super().__init__(message, code=code)


def normalise(password: str) -> str:
    """NFKC, the form keel counts, checks and hashes (NIST §3.1.1.2)."""
    return unicodedata.normalize("NFKC", password)


def hash_input(password: str, *, max_length: int) -> bytes:
    """The bytes a hasher is given: length-capped, NFKC-normalised, UTF-8.

    Raises :class:`PasswordRejected` (``password_too_long`` or
    ``password_invalid_characters``) before any expensive work.
    """
    return _normalise_within(password, max_length).encode("utf-8")


def _normalise_within(password: str, max_length: int) -> str:
    if len(password) > _RAW_LENGTH_FACTOR * max_length:
        raise _too_long(max_length)
    normalised = normalise(password)
    if len(normalised) > max_length:
        raise _too_long(max_length)
    if _INVALID.search(normalised):
        raise PasswordRejected(
            "password_invalid_characters",
            "The password contains a character that cannot be used (NUL or an unpaired surrogate).",
        )
    return normalised


def _too_long(max_length: int) -> PasswordRejected:
    return PasswordRejected("password_too_long", f"Use at most {max_length} characters.")


def _key(text: str) -> str:
    """The case-insensitive comparison form: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _fingerprint(key: str) -> int:
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, person=_PERSON
    ).digest()
    return int.from_bytes(digest, "big")


def _is_letter(char: str) -> bool:
    return unicodedata.category(char)[0] in "LM"


def _strip_padding(key: str) -> str:
    """``key`` without the leading and trailing digits, punctuation, symbols and spaces."""
    start = 0
    end = len(key)
    while start < end and not _is_letter(key[start]):
        start += 1
    while end > start and not _is_letter(key[end - 1]):
        end -= 1
    return key[start:end]


def _context_tokens(value: str) -> set[str]:
    """The words a password must not be built from, taken from one context value."""
    whole = _key(value).strip()
    local = whole.rpartition("@")[0] if "@" in whole else whole  # e-mail: the local part
    parts = [part for part in _SEPARATORS.split(local) if part]
    tokens = {whole, local, "".join(parts), *parts, *_LETTER_RUNS.findall(local)}
    return {token for token in tokens if len(token) >= _CONTEXT_TOKEN_MIN}


def encode_blocklist(
    entries: Iterable[str], *, limit: int | None = None, bucket_bits: int = _DEFAULT_BUCKET_BITS
) -> bytes:
    """The blocklist file for ``entries``, most common first.

    Entries are normalised (NFKC, case-folded) and duplicates collapse; with
    ``limit``, only the first ``limit`` distinct normalised entries are kept.
    """
    if not 8 <= bucket_bits <= 24:
        raise ValueError("bucket_bits must be between 8 and 24")
    keys = dict.fromkeys(_key(entry) for entry in entries)  # keeps first-seen order
    selected = itertools.islice(keys, limit)
    shift = 64 - bucket_bits
    pairs = sorted({(fp >> shift, fp & _TAG_MASK) for fp in map(_fingerprint, selected)})
    directory = [0] * ((1 << bucket_bits) + 1)
    for bucket, _tag in pairs:
        directory[bucket + 1] += 1
    directory = list(itertools.accumulate(directory))
    return b"".join(
        (
            _HEADER.pack(_MAGIC, len(pairs), bucket_bits),
            struct.pack(f"<{len(directory)}I", *directory),
            struct.pack(f"<{len(pairs)}I", *(tag for _bucket, tag in pairs)),
        )
    )


def _u32_array(data: memoryview) -> Sequence[int]:
    """``data`` as little-endian u32 words: a zero-copy view on little-endian machines."""
    if sys.byteorder == "little":
        return data.cast("I")
    words = array.array("I")
    words.frombytes(data)
    words.byteswap()
    return words


class Blocklist:
    """A static set of common passwords held as fingerprints in one bytes buffer."""

    __slots__ = ("_data", "_directory", "_shift", "_tags", "entries")

    def __init__(self, data: bytes) -> None:
        """Wrap a file made by :func:`encode_blocklist`; raises ``ValueError`` if it is damaged."""
        if len(data) < _HEADER.size:
            raise ValueError("blocklist data is truncated")
        magic, entries, bucket_bits = _HEADER.unpack_from(data)
        if magic != _MAGIC or not 8 <= bucket_bits <= 24:
            raise ValueError("not a keel blocklist file")
        slots = (1 << bucket_bits) + 1
        if len(data) != _HEADER.size + 4 * (slots + entries):
            raise ValueError("blocklist data has the wrong size")
        view = memoryview(data)
        directory = _u32_array(view[_HEADER.size : _HEADER.size + 4 * slots])
        if directory[0] != 0 or directory[-1] != entries:
            raise ValueError("blocklist directory is damaged")
        if any(a > b for a, b in itertools.pairwise(directory)):
            raise ValueError("blocklist directory is damaged")
        self._data = data
        self._directory = directory
        self._tags = _u32_array(view[_HEADER.size + 4 * slots :])
        self._shift = 64 - bucket_bits
        self.entries: int = entries

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> Blocklist:
        """A blocklist of ``entries`` built in memory (tests, custom lists)."""
        return cls(encode_blocklist(entries))

    @classmethod
    def shipped(cls) -> Blocklist:
        """The list shipped with keel, read on the first call and shared after."""
        return _shipped()

    def __len__(self) -> int:
        return self.entries

    def __contains__(self, password: object) -> bool:
        return isinstance(password, str) and self.has_key(_key(password))

    def has_key(self, key: str) -> bool:
        """Whether the already-normalised ``key`` (NFKC, case-folded) is listed."""
        fingerprint = _fingerprint(key)
        bucket = fingerprint >> self._shift
        tag = fingerprint & _TAG_MASK
        tags = self._tags
        return any(
            tags[i] == tag for i in range(self._directory[bucket], self._directory[bucket + 1])
        )


@functools.cache
def _shipped() -> Blocklist:
    resource = importlib.resources.files("keel.security").joinpath("data", BLOCKLIST_FILE)
    return Blocklist(resource.read_bytes())


class PasswordPolicy:
    """Decides whether a new password may be set (NIST SP 800-63B-4; SEC-01..SEC-05)."""

    def __init__(self, settings: PasswordSettings, *, blocklist: Blocklist | None = None) -> None:
        self.min_length: Final = max(MIN_LENGTH_FLOOR, settings.min_length)
        self.max_length: Final = settings.max_length
        if self.max_length < max(MAX_LENGTH_FLOOR, self.min_length):
            raise ConfigurationError(
                f"the password maximum length must be at least {MAX_LENGTH_FLOOR} "
                "and at least the minimum length"
            )
        self._blocklist = blocklist
        self._service_tokens = frozenset(_context_tokens(settings.service_name))

    @property
    def blocklist(self) -> Blocklist:
        """The blocklist in use (the shipped one unless another was given); loaded on first use."""
        if self._blocklist is None:
            self._blocklist = Blocklist.shipped()
        return self._blocklist

    def check(self, password: str, *, context: Iterable[str] = ()) -> None:
        """Raise :class:`PasswordRejected` unless ``password`` may be set.

        ``context`` holds the account's own words: its e-mail address, user name
        and display name. The service name comes from the settings.
        """
        normalised = _normalise_within(password, self.max_length)
        key = _key(normalised)
        if self._is_common(key):
            raise PasswordRejected(
                "password_blocklisted",
                "This password is on a list of common or breached passwords; choose another.",
            )
        tokens = set(self._service_tokens)
        for value in context:
            tokens |= _context_tokens(value)
        if self._is_built_from(key, tokens):
            raise PasswordRejected(
                "password_blocklisted",
                "This password is built from the service name or from your name or e-mail "
                "address; choose another.",
            )
        if len(normalised) < self.min_length:
            raise PasswordRejected(
                "password_too_short", f"Use at least {self.min_length} characters."
            )

    def _is_common(self, key: str) -> bool:
        candidates = {key, _strip_padding(key)}
        candidates |= {"".join(candidate.split()) for candidate in candidates}
        candidates.discard("")
        blocklist = self.blocklist
        return any(blocklist.has_key(candidate) for candidate in candidates)

    def _is_built_from(self, key: str, tokens: Iterable[str]) -> bool:
        remainder = key
        for token in sorted(tokens, key=lambda token: (-len(token), token)):
            remainder = remainder.replace(token, "")
        if remainder == key:
            return False
        return not any(_is_letter(char) for char in remainder) or self._is_common(remainder)
