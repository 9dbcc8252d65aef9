"""An application's services: built by create_app from its context, handed to routes by type."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends
from sqlalchemy import text

from keel.accounts import AccountService
from keel.api.app import create_app
from keel.api.services import service
from keel.api.state import AppContext
from keel.auth.ratelimit import RateLimiter
from keel.auth.sessions import SessionService
from keel.auth.throttle import LoginThrottle
from keel.db import Database, migrate
from keel.errors import ConfigurationError
from keel.settings import Settings

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]


@dataclass
class Counter:
    database: Database
    calls: int = 0

    async def tick(self) -> int:
        async with self.database.unit_of_work() as uow:
            one = (await uow.session.execute(text("SELECT 1"))).scalar_one()
        self.calls += one
        return self.calls


router = APIRouter()


@router.get("/count")
async def count(counter: Annotated[Counter, Depends(service(Counter))]) -> dict[str, int]:
    return {"calls": await counter.tick()}


async def test_a_route_gets_the_applications_service_by_type_on_the_shared_database(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    await asyncio.to_thread(migrate.upgrade, settings.database)
    shared = Database(settings.database)
    built: list[AppContext] = []

    def counter(context: AppContext) -> Counter:
        built.append(context)
        return Counter(context.database)

    app = create_app(settings, routers=[router], services=[counter], database=shared)
    try:
        async with serve_in_process(app) as http:
            assert (await http.get("/count")).json() == {"calls": 1}
            assert (await http.get("/count")).json() == {"calls": 2}
        assert built[0].database is shared
        assert built[0].service(Counter).calls == 2
        # The app did not dispose a database it was given: it still works.
        async with shared.unit_of_work() as uow:
            assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await shared.dispose()


def test_asking_for_a_service_that_was_not_given_names_it(
    settings_factory: SettingsFactory,
) -> None:
    context: AppContext = create_app(settings_factory()).state.keel
    with pytest.raises(LookupError, match="no service of type Counter"):
        context.service(Counter)


def test_two_services_of_one_type_are_refused(settings_factory: SettingsFactory) -> None:
    with pytest.raises(ConfigurationError, match="two services of type Counter"):
        create_app(
            settings_factory(),
            services=[lambda c: Counter(c.database), lambda c: Counter(c.database)],
        )


def test_keels_own_services_are_found_by_type_and_cannot_be_shadowed(
    settings_factory: SettingsFactory,
) -> None:
    context: AppContext = create_app(settings_factory()).state.keel
    assert isinstance(context.service(SessionService), SessionService)
    assert isinstance(context.service(LoginThrottle), LoginThrottle)
    with pytest.raises(ConfigurationError, match="keel provides its own"):
        create_app(
            settings_factory(),
            services=[lambda c: LoginThrottle(c.store, c.settings.throttle, clock=c.clock)],
        )


@pytest.mark.parametrize("kind", [SessionService, LoginThrottle, RateLimiter, AccountService])
def test_no_application_service_replaces_one_of_keels(
    settings_factory: SettingsFactory, kind: type[object]
) -> None:
    # Every service keel builds is kept by type once, built in create_app, and an application's
    # service of the same type is refused, not silently used in its place or replaced.
    settings = settings_factory()
    own: AppContext = create_app(settings).state.keel
    assert isinstance(own.service(kind), kind)
    with pytest.raises(ConfigurationError, match="keel provides its own"):
        create_app(settings, services=[lambda _: own.service(kind)])
