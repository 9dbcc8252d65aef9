"""E-mail addresses: validation and the one lookup key per mailbox.

:func:`normalise_email` accepts the addresses people type (RFC 5321 dot-atom
local parts, UTF-8 local parts per RFC 6531, internationalised domains) and
refuses the rest with ``email_invalid``; quoted local parts, comments and
address literals (``user@[192.0.2.1]``) are refused on purpose: no mail
system keel sends through needs them and each is a parsing hazard.

Two forms come out:

- ``address``: what the account shows and where mail goes: NFKC, surrounding
  whitespace removed, the local part as typed, the domain lower-cased.
- ``key``: what uniqueness and login compare: the local part lower-cased, the
  domain in its IDNA ASCII form, lower-cased. ``Alice@Example.COM``,
  ``alice@example.com`` and the NFD spelling of ``jörg@bücher.example`` each
  have one key, so they are one account (DESIGN: unique, case-insensitive).

Lower-casing the local part is a policy, not RFC 5321 (which leaves it to the
receiving host): no common provider distinguishes case, and two accounts that
differ only in case are an impersonation risk.

Domains follow IDNA 2008 with the UTS 46 mapping, non-transitional (the
``idna`` package; what browsers and registries use): ``faß.de`` stays
``xn--fa-hia.de`` and is never folded into ``fass.de`` (another registrable
domain), as Python's built-in IDNA 2003 codec would; a joiner that IDNA 2008
does not allow in its place is refused rather than dropped. Every label is
then held to the LDH rule.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

import idna

from keel.errors import InvalidInput

__all__ = ["EMAIL_MAX_LENGTH", "EmailAddress", "InvalidEmail", "normalise_email"]

#: RFC 5321 §4.5.3.1.3: a forward path is at most 256 octets including "<" and ">".
EMAIL_MAX_LENGTH: Final = 254
_LOCAL_MAX_OCTETS: Final = 64  # RFC 5321 §4.5.3.1.1
_DOMAIN_MAX: Final = 253
# RFC 5322 atext, ASCII part; UTF-8 beyond ASCII is checked character by character.
_ATEXT: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class InvalidEmail(InvalidInput):
    """The e-mail address is not one keel can use."""

    code = "email_invalid"

    def __init__(self) -> None:
        # Fixed text: the message never repeats the submitted value (SEC-52).
        super().__init__("Enter a valid e-mail address.")


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """A validated address and its lookup key."""

    address: str
    key: str

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def _local_part_ok(local: str) -> bool:
    if not local or len(local.encode("utf-8", "surrogatepass")) > _LOCAL_MAX_OCTETS:
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    for char in local:
        if char == "." or char in _ATEXT:
            continue
        if ord(char) < 0x80:
            return False  # ASCII specials, spaces and controls
        if unicodedata.category(char)[0] in "CZ":
            return False  # controls, format characters, surrogates, separators
    return True


def _ascii_domain(domain: str) -> str | None:
    if not domain or domain.endswith("."):
        return None
    try:
        ascii_form = idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None
    labels = ascii_form.split(".")
    if len(ascii_form) > _DOMAIN_MAX or len(labels) < 2:
        return None
    if not all(_LDH_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # a dotted IP address, not a domain
    return ascii_form


def normalise_email(raw: str) -> EmailAddress:
    """The :class:`EmailAddress` for ``raw``; raises :class:`InvalidEmail`."""
    if len(raw) > 4 * EMAIL_MAX_LENGTH:
        raise InvalidEmail()  # before NFKC: normalising a huge string is work for nothing
    text = unicodedata.normalize("NFKC", raw).strip()
    local, at, domain = text.rpartition("@")
    if not at or not _local_part_ok(local):
        raise InvalidEmail()
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        raise InvalidEmail()
    try:
        display_domain = idna.decode(ascii_domain)
    except (idna.IDNAError, UnicodeError):
        raise InvalidEmail() from None
    address = f"{local}@{display_domain}"
    key = f"{unicodedata.normalize('NFKC', local.lower())}@{ascii_domain}"
    if len(address) > EMAIL_MAX_LENGTH or len(key) > EMAIL_MAX_LENGTH:
        raise InvalidEmail()
    return EmailAddress(address=address, key=key)
