"""POST /auth/register and /auth/verify-email: NIST passwords (SEC-01..05), no enumeration (SEC-12),
strict bodies (SEC-48, SEC-51, SEC-52), single-use expiring verification links."""

from __future__ import annotations

import secrets
import string
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from keel._clock import FrozenClock
from keel.accounts import VERIFICATION_TTL
from keel.api.accounts import REGISTER_ACCEPTED
from keel.settings import Settings

from ._accounts_app import STRONG, AccountsApp, build_accounts_app, running, user_row

SettingsFactory = Callable[..., Settings]
PUBLIC_URL = "https://app.keel.example"


@pytest.fixture
def accounts(
    settings_factory: SettingsFactory, database_url: str, tmp_path: Path, clock: FrozenClock
) -> AccountsApp:
    settings = settings_factory(database_url=database_url, public_url=PUBLIC_URL)
    return build_accounts_app(settings, tmp_path / "mail.jsonl", clock=clock)


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        yield client


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


async def _register(
    http: httpx.AsyncClient, email: str, password: str, **extra: str
) -> httpx.Response:
    return await http.post("/auth/register", json={"email": email, "password": password, **extra})


async def _login(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/auth/login", json={"email": email, "password": password})


# --- SEC-01..05: the password policy through the API ------------------------------------------


async def test_sec_01_minimum_length_15(http: httpx.AsyncClient) -> None:
    alphabet = string.ascii_letters + string.digits
    short = await _register(http, "short@keel.example", _random(alphabet, 14))
    assert short.status_code == 422
    assert short.json()["code"] == "password_too_short"
    ok = await _register(http, "long@keel.example", _random(alphabet, 15))
    assert ok.status_code == 202
    assert ok.json() == REGISTER_ACCEPTED


async def test_sec_02_unicode_passphrase_and_nfd_login(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    passphrase = "pässwörd 🔑 the quick brown fox jumps over the lazy dog, twice!!!"
    assert len(passphrase) >= 64
    email = "unicode@keel.example"
    assert (await _register(http, email, passphrase)).status_code == 202
    await http.post("/auth/verify-email", json={"token": await accounts.last_token()})
    nfd = unicodedata.normalize("NFD", passphrase)
    assert nfd != passphrase
    login = await _login(http, unicodedata.normalize("NFD", email), nfd)
    assert login.status_code == 200, login.text


async def test_sec_02_huge_and_over_long_passwords_refused_fast(http: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    huge = await _register(http, "huge@keel.example", "a" * 1_000_000)
    elapsed = time.perf_counter() - started
    assert huge.status_code in {413, 422}
    assert elapsed < 1.0
    over = await _register(http, "over@keel.example", _random(string.ascii_letters, 1025))
    assert over.status_code == 422
    assert over.json()["code"] == "password_too_long"


async def test_sec_03_no_composition_rules_no_expiry(
    http: httpx.AsyncClient, accounts: AccountsApp, clock: FrozenClock
) -> None:
    password = _random(string.ascii_lowercase, 16)
    email = "lower@keel.example"
    assert (await _register(http, email, password)).status_code == 202
    await http.post("/auth/verify-email", json={"token": await accounts.last_token()})
    clock.advance(400 * 86400)
    login = await _login(http, email, password)
    assert login.status_code == 200
    assert set(login.json()) == {"access_token", "token_type", "expires_in"}


@pytest.mark.parametrize(
    ("password", "extra"),
    [
        ("password1234567", {}),
        ("keel2026!!!!!!!!", {}),  # the service name
        ("alice.smith123456789", {}),  # the e-mail local part
        ("Wonderland 123456789", {"display_name": "Alice Wonderland"}),
    ],
)
async def test_sec_04_blocklist_and_context_words(
    http: httpx.AsyncClient, password: str, extra: dict[str, str]
) -> None:
    response = await _register(http, "alice.smith@keel.example", password, **extra)
    assert response.status_code == 422
    assert response.json()["code"] == "password_blocklisted"
    assert password not in response.text


async def test_sec_05_verified_exactly_as_received(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    password = _random(string.ascii_lowercase + string.digits, 100)
    password = "q" + password[1:]
    email = "exact@keel.example"
    await accounts.verified_user(http, email, password)
    assert (await _login(http, email, password[:72])).status_code == 401
    assert (await _login(http, email, "Q" + password[1:])).status_code == 401
    assert (await _login(http, email, password + " ")).status_code == 401
    assert (await _login(http, email, password)).status_code == 200


# --- SEC-12: registration never reveals an account ---------------------------------------------


async def test_sec_12_taken_address_answers_like_a_new_one(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    owner = "owner@keel.example"
    await accounts.verified_user(http, owner)
    before = len(await accounts.mail())

    taken = await _register(http, "Owner@KEEL.example", "a different long passphrase 77")
    new = await _register(http, "newcomer@keel.example", "a different long passphrase 77")
    assert taken.status_code == new.status_code == 202
    assert taken.content == new.content
    assert taken.headers.keys() - {"x-request-id", "content-length"} == new.headers.keys() - {
        "x-request-id",
        "content-length",
    }

    sent = (await accounts.mail())[before:]
    to_owner = [m for m in sent if m["to"] == owner]
    assert [m["kind"] for m in to_owner] == ["registration_attempt"]
    assert "#token=" not in to_owner[0]["body"]
    assert [m["kind"] for m in sent if m["to"] == "newcomer@keel.example"] == ["verify_email"]
    # The attempt changed nothing: the owner's password still works, the other one does not.
    assert (await _login(http, owner, STRONG)).status_code == 200
    assert (await _login(http, owner, "a different long passphrase 77")).status_code == 401


async def test_sec_12_unverified_owner_gets_a_fresh_link(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    email = "slow@keel.example"
    assert (await _register(http, email, STRONG)).status_code == 202
    first = await accounts.last_token(to=email)
    assert (await _register(http, email, "someone else entirely 12345")).status_code == 202
    second = await accounts.last_token(to=email)
    assert second != first
    # The newer link replaces the older one.
    assert (await http.post("/auth/verify-email", json={"token": first})).status_code == 400
    assert (await http.post("/auth/verify-email", json={"token": second})).status_code == 200
    # The newer registration's password is the account's; the unverified first one is gone.
    assert (await _login(http, email, "someone else entirely 12345")).status_code == 200
    assert (await _login(http, email, STRONG)).status_code == 401


async def test_link_uses_the_public_url_never_the_host(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await http.post(
        "/auth/register",
        json={"email": "host@keel.example", "password": STRONG},
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    [message] = await accounts.mail()
    links = [line for line in message["body"].splitlines() if "#token=" in line]
    assert links
    assert links[0].startswith(f"{PUBLIC_URL}/verify-email#token=")
    assert "evil.example" not in message["body"]


# --- strict bodies -----------------------------------------------------------------------------


async def test_sec_48_register_cannot_set_privileges(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    for extra in ({"is_admin": True}, {"roles": ["admin"]}, {"email_verified": True}):
        response = await http.post(
            "/auth/register", json={"email": "sneaky@keel.example", "password": STRONG, **extra}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["type"] == "extra_forbidden"
    assert await user_row(accounts.database, "sneaky@keel.example") is None
    assert await accounts.mail() == []


async def test_sec_51_strict_types_and_media_type(http: httpx.AsyncClient) -> None:
    wrong_type = await http.post(
        "/auth/register", json={"email": "types@keel.example", "password": 123456789012345678}
    )
    assert wrong_type.status_code == 422
    text_plain = await http.post(
        "/auth/register",
        content=b'{"email": "plain@keel.example", "password": "x"}',
        headers={"content-type": "text/plain"},
    )
    assert text_plain.status_code == 415
    invalid = await _register(http, "not-an-address", STRONG)
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "email_invalid"


async def test_sec_52_invalid_body_never_echoes_the_password(http: httpx.AsyncClient) -> None:
    canary = "Canary-9f3b-" + secrets.token_hex(8)
    missing = await http.post("/auth/register", json={"password": canary})
    assert missing.status_code == 422
    assert canary not in missing.text
    extra = await http.post(
        "/auth/register", json={"email": "x@keel.example", "password": canary, "pwd": canary}
    )
    assert extra.status_code == 422
    assert canary not in extra.text
    login = await http.post("/auth/login", json={"password": canary, "email": 5})
    assert login.status_code == 422
    assert canary not in login.text


# --- verification links ------------------------------------------------------------------------


async def test_verification_is_single_use(http: httpx.AsyncClient, accounts: AccountsApp) -> None:
    email = "once@keel.example"
    await _register(http, email, STRONG)
    assert (await _login(http, email, STRONG)).status_code == 401  # unverified
    token = await accounts.last_token()
    first = await http.post("/auth/verify-email", json={"token": token})
    assert first.status_code == 200
    assert first.json() == {"status": "verified"}
    again = await http.post("/auth/verify-email", json={"token": token})
    assert again.status_code == 400
    assert again.json()["code"] == "verification_token_invalid"
    assert (await _login(http, email, STRONG)).status_code == 200


async def test_verification_expires_after_24_hours(
    http: httpx.AsyncClient, accounts: AccountsApp, clock: FrozenClock
) -> None:
    await _register(http, "late@keel.example", STRONG)
    token = await accounts.last_token()
    clock.advance(VERIFICATION_TTL)
    expired = await http.post("/auth/verify-email", json={"token": token})
    assert expired.status_code == 400
    assert expired.json()["code"] == "verification_token_invalid"
    row = await user_row(accounts.database, "late@keel.example")
    assert row is not None
    assert row.email_verified_at is None


async def test_verification_tokens_are_stored_hashed(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    from ._accounts_app import table_dump

    await _register(http, "hashed@keel.example", STRONG)
    token = await accounts.last_token()
    assert len(token) >= 22  # ≥ 128 bits of base64url
    dump = await table_dump(accounts.database, "email_verification_tokens")
    assert token not in dump
    assert "hashed@keel.example" in dump


@pytest.mark.parametrize("token", ["", "x" * 129, "not a token", "A" * 43])
async def test_verification_rejects_junk(http: httpx.AsyncClient, token: str) -> None:
    response = await http.post("/auth/verify-email", json={"token": token})
    assert response.status_code in {400, 422}
