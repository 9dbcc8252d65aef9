"""keel.accounts.email: which addresses are accepted, and one key per mailbox."""

from __future__ import annotations

import unicodedata

import pytest

from keel.accounts.email import EMAIL_MAX_LENGTH, InvalidEmail, normalise_email


@pytest.mark.parametrize(
    ("raw", "address", "key"),
    [
        ("alice@example.com", "alice@example.com", "alice@example.com"),
        ("Alice@Example.COM", "Alice@example.com", "alice@example.com"),
        ("  bob@example.com\t", "bob@example.com", "bob@example.com"),
        (
            "first.last+tag@sub.example.org",
            "first.last+tag@sub.example.org",
            "first.last+tag@sub.example.org",
        ),
        ("jörg@bücher.example", "jörg@bücher.example", "jörg@xn--bcher-kva.example"),
        ("JÖRG@BÜCHER.example", "JÖRG@bücher.example", "jörg@xn--bcher-kva.example"),
        ("x@xn--bcher-kva.example", "x@bücher.example", "x@xn--bcher-kva.example"),
        (
            "\uff46\uff55\uff4c\uff4c@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
            "full@example.com",
            "full@example.com",
        ),
        ("o'brien@example.ie", "o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_accepted(raw: str, address: str, key: str) -> None:
    email = normalise_email(raw)
    assert (email.address, email.key) == (address, key)


def test_nfd_and_nfc_spellings_share_a_key() -> None:
    nfc = "jörg@bücher.example"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert normalise_email(nfd) == normalise_email(nfc)


def test_parts() -> None:
    email = normalise_email("Alice@Example.COM")
    assert (email.local_part, email.domain) == ("Alice", "example.com")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "admin",
        "root",
        "@example.com",
        "alice@",
        "alice@localhost",
        "alice@example",
        "alice@@example.com",
        "al ice@example.com",
        '"quoted"@example.com',
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a(b)@example.com",
        "a@[192.0.2.1]",
        "a@192.0.2.1",
        "a@example.com.",
        "a@-example.com",
        "a@exa_mple.com",
        "a@example..com",
        "a\r\nb@example.com",
        "a\u202eb@example.com",
        "a\x00@example.com",
        "a@xn--zz.example",
        "x" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
        "a@" + ".".join(["b" * 60] * 5) + ".com",
        "x" * 5000,
        "' OR 1=1 --@example.com",
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        normalise_email(raw)
    assert caught.value.code == "email_invalid"
    assert raw not in caught.value.message or not raw


def test_length_limit() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 60, "c" * 60, "d" * 60]) + ".co"
    assert len(f"{local}@{domain}") == EMAIL_MAX_LENGTH - 4
    assert normalise_email(f"{local}@{domain}").key == f"{local}@{domain}"
    with pytest.raises(InvalidEmail):
        normalise_email(f"{local}@{domain}uk.xyz")


# IDNA 2008 (UTS 46, non-transitional): the deviation characters keep their own domain; IDNA
# 2003 (Python's "idna" codec) mapped them onto another registrable domain (faß.de -> fass.de).
@pytest.mark.parametrize(
    ("raw", "address", "key", "idna_2003_key"),
    [
        ("a@faß.de", "a@faß.de", "a@xn--fa-hia.de", "a@fass.de"),
        ("a@FAß.DE", "a@faß.de", "a@xn--fa-hia.de", "a@fass.de"),
        ("a@βόλος.gr", "a@βόλος.gr", "a@xn--nxasmm1c.gr", "a@xn--nxasmq6b.gr"),
        ("a@xn--fa-hia.de", "a@faß.de", "a@xn--fa-hia.de", None),
        (
            "a@\u0646\u0627\u0645\u0647\u200c\u0627\u06cc.ir",
            "a@\u0646\u0627\u0645\u0647\u200c\u0627\u06cc.ir",
            "a@xn--mgba3gch31f060k.ir",
            "a@xn--mgba3gch31f.ir",
        ),
    ],
)
def test_idna_2008_keeps_deviation_characters(
    raw: str, address: str, key: str, idna_2003_key: str | None
) -> None:
    email = normalise_email(raw)
    assert (email.address, email.key) == (address, key)
    assert email.key != idna_2003_key


def test_sharp_s_and_ss_domains_are_different_mailboxes() -> None:
    assert normalise_email("a@faß.de").key != normalise_email("a@fass.de").key


@pytest.mark.parametrize("raw", ["a@ab\u200ccd.example", "a@a\u200db.example"])
def test_a_joiner_idna_2008_does_not_allow_is_refused(raw: str) -> None:
    # IDNA 2003 dropped these silently (ab\u200ccd.example became abcd.example).
    with pytest.raises(InvalidEmail) as caught:
        normalise_email(raw)
    assert caught.value.code == "email_invalid"
