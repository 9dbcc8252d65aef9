"""GET /metrics and what the app counts, in process (one process: values in memory).

Counters are process-wide (one ``prometheus_client`` store per process), so the
tests compare values before and after what they do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel import metrics
from keel._clock import FrozenClock
from keel.accounts import AccountService
from keel.api.app import create_app
from keel.db import migrate
from keel.settings import Settings

from ._accounts_app import STRONG, AccountsApp, audit_rows, build_accounts_app, running
from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]
TOKEN = "Mt-4vQ9zX2kLw7Rp3Yn8Bc1Hd6Fs0GaUeJi"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def value(text: str, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and wanted <= set(sample.labels.items())
    )


async def scrape(http: httpx.AsyncClient) -> str:
    response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["cache-control"] == "no-store"
    return response.text


@pytest.fixture(params=["sqlite", pytest.param("postgresql+redis", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, settings_factory: SettingsFactory) -> Settings:
    if request.param == "sqlite":
        return settings_factory(metrics_token=TOKEN)
    return settings_factory(
        metrics_token=TOKEN,
        database_url=request.getfixturevalue("postgres_url"),
        redis_url=request.getfixturevalue("redis_url"),
        cache_namespace=request.getfixturevalue("redis_namespace"),
    )


@pytest.fixture
def accounts(settings: Settings, tmp_path: Path) -> AccountsApp:
    return build_accounts_app(settings, tmp_path / "mail.jsonl", clock=FrozenClock())


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        yield client


async def test_metrics_is_a_404_without_a_token(settings_factory: SettingsFactory) -> None:
    app = create_app(settings_factory())
    async with serve_in_process(app) as http:
        assert (await http.get("/metrics", headers=AUTH)).status_code == 404
        assert (await http.get("/metrics")).status_code == 404


async def test_metrics_is_a_404_when_collection_is_off(settings_factory: SettingsFactory) -> None:
    app = create_app(settings_factory(metrics=False, metrics_token=TOKEN))
    try:
        assert metrics.active() is None
        async with serve_in_process(app) as http:
            assert (await http.get("/metrics", headers=AUTH)).status_code == 404
    finally:
        metrics.enable()


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"],
)
async def test_a_missing_or_wrong_token_is_a_401_problem(
    settings_factory: SettingsFactory, authorization: str | None
) -> None:
    app = create_app(settings_factory(metrics_token=TOKEN))
    headers = {} if authorization is None else {"Authorization": authorization}
    async with serve_in_process(app) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert response.json()["code"] == "metrics_unauthorized"
    assert "keel_" not in response.text


async def test_the_scheme_is_case_insensitive_and_only_get_is_served(
    settings_factory: SettingsFactory,
) -> None:
    app = create_app(settings_factory(metrics_token=TOKEN))
    async with serve_in_process(app) as http:
        ok = await http.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
        assert ok.status_code == 200
        assert "keel_http_requests_total" in ok.text
        assert (await http.post("/metrics", headers=AUTH)).status_code == 405
        schema = (await http.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


async def test_logins_and_audit_appends_are_counted_and_a_scrape_is_never_audited(
    accounts: AccountsApp, http: httpx.AsyncClient
) -> None:
    await accounts.verified_user(http, "ada@keel.example")
    before = await scrape(http)
    rows_before = len(await audit_rows(accounts.database))

    login = {"email": "ada@keel.example", "password": STRONG}
    assert (await http.post("/auth/login", json=login)).status_code == 200
    wrong = {"email": "ada@keel.example", "password": STRONG + "!"}
    assert (await http.post("/auth/login", json=wrong)).status_code == 401
    unknown = {"email": "nobody@keel.example", "password": STRONG}
    assert (await http.post("/auth/login", json=unknown)).status_code == 401

    after = await scrape(http)
    await scrape(http)
    rows_after = len(await audit_rows(accounts.database))
    await scrape(http)
    assert len(await audit_rows(accounts.database)) == rows_after  # scrapes write nothing

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("keel_logins_total", outcome="success") == 1
    assert delta("keel_logins_total", outcome="bad_credentials") == 2
    assert delta("keel_audit_appends_total") == rows_after - rows_before
    assert delta("keel_audit_chain_lock_wait_seconds_count") >= 1
    assert delta("keel_hash_wait_seconds_count") == 3  # two verifications and one dummy
    assert value(after, "keel_hash_queue_depth") == 0
    routes = {"route": "/auth/login", "method": "POST"}
    assert delta("keel_http_requests_total", status="200", **routes) == 1
    assert delta("keel_http_requests_total", status="401", **routes) == 2
    # The scraping process samples its own memory and its database pool.
    assert value(after, "keel_process_resident_memory_bytes") > 10 * 1024 * 1024
    assert "keel_db_pool_in_use " in after
    assert "keel_db_pool_overflow " in after


async def test_lockouts_and_rate_limit_refusals_are_counted(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory(
        metrics_token=TOKEN,
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
        lockout_threshold=3,
        rate_limit_ip=6,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, clock=FrozenClock())
    wrong = {"email": "bob@keel.example", "password": STRONG + "?"}
    async with serve_in_process(app, client=("203.0.113.9", 40000)) as http:
        registered = await http.post(
            "/auth/register", json={"email": "bob@keel.example", "password": STRONG}
        )
        assert registered.status_code == 202
        before = await scrape(http)
        statuses = [(await http.post("/auth/login", json=wrong)).status_code for _ in range(8)]
        after = await scrape(http)
        await app.state.keel.service(AccountService).outbox.drain()
    assert statuses[:3] == [401, 401, 401]
    assert statuses[-1] == 429

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("keel_lockouts_total") == 1
    assert delta("keel_logins_total", outcome="bad_credentials") == 3
    # Refused before any password check: the account's lock, then the address's limit.
    assert delta("keel_logins_total", outcome="locked") >= 1
    assert delta("keel_rate_limit_refusals_total", family="login") >= 1
    assert delta("keel_logins_total", outcome="locked") + delta(
        "keel_rate_limit_refusals_total", family="login"
    ) == statuses.count(429)
