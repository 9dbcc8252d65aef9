"""What one app instance owns: settings, clock, supervisor, database and cache store."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from keel._clock import Clock
from keel.cache import Store
from keel.db import Database
from keel.runtime.lifecycle import Supervisor
from keel.settings import Settings

__all__ = ["AppContext", "get_context"]


@dataclass(frozen=True, slots=True)
class AppContext:
    """The services of one app, built by ``create_app`` and closed by its lifespan."""

    settings: Settings
    clock: Clock
    supervisor: Supervisor
    database: Database
    store: Store


def get_context(connection: HTTPConnection) -> AppContext:
    """The ``AppContext`` of the app serving ``connection``."""
    context = connection.app.state.keel
    if not isinstance(context, AppContext):  # pragma: no cover - wiring error
        raise RuntimeError("keel context missing: build the app with create_app()")
    return context
