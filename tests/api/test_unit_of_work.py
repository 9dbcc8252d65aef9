"""One unit of work per request: committed before the response, rolled back on error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import APIRouter
from sqlalchemy import func, select, text

from keel.api.app import create_app
from keel.api.deps import UoW
from keel.db import KeelInstance, migrate
from keel.errors import Conflict
from keel.settings import Settings

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]


def _router() -> APIRouter:
    router = APIRouter()

    @router.post("/_t/instances")
    async def add(uow: UoW) -> dict[str, Any]:
        uow.session.add(KeelInstance(schema_note="ok", created_at=datetime.now(UTC)))
        return {"added": True}

    @router.post("/_t/instances/fail")
    async def add_then_fail(uow: UoW) -> dict[str, Any]:
        uow.session.add(KeelInstance(schema_note="doomed", created_at=datetime.now(UTC)))
        await uow.flush()
        raise Conflict("nope")

    @router.post("/_t/instances/bad-commit")
    async def add_invalid(uow: UoW) -> dict[str, Any]:
        # NOT NULL violated: nothing fails until the unit of work commits.
        uow.session.add(KeelInstance(schema_note="no timestamp"))
        return {"added": True}

    @router.get("/_t/instances")
    async def count(uow: UoW) -> dict[str, Any]:
        total = (
            await uow.session.execute(select(func.count()).select_from(KeelInstance))
        ).scalar_one()
        return {"count": total}

    return router


@pytest.fixture
def migrated(settings_factory: SettingsFactory) -> Settings:
    settings = settings_factory()
    migrate.upgrade(settings.database)
    return settings


async def test_a_2xx_means_committed_and_an_error_means_rolled_back(migrated: Settings) -> None:
    app = create_app(migrated, routers=[_router()])
    async with serve_in_process(app) as client:
        assert (await client.post("/_t/instances")).status_code == 200
        # Read through a separate connection: visible only if already committed.
        database = app.state.keel.database
        async with database.unit_of_work() as other:
            rows = (
                await other.session.execute(text("SELECT count(*) FROM keel_instance"))
            ).scalar()
        assert rows == 1
        failed = await client.post("/_t/instances/fail")
        assert failed.status_code == 409
        assert failed.json()["code"] == "conflict"
        assert (await client.get("/_t/instances")).json() == {"count": 1}


async def test_a_failing_commit_is_never_reported_as_success(migrated: Settings) -> None:
    app = create_app(migrated, routers=[_router()])
    async with serve_in_process(app) as client:
        response = await client.post("/_t/instances/bad-commit")
        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"
        assert (await client.get("/_t/instances")).json() == {"count": 0}
