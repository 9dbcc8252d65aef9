"""What one app instance owns: settings, clock, supervisor, database and cache store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from keel._clock import Clock
from keel.audit import AuditTrail
from keel.cache import Invalidations, LocalInvalidations, Store
from keel.db import Database
from keel.runtime.lifecycle import Supervisor
from keel.settings import Settings

if TYPE_CHECKING:
    from keel.api.principal import Authenticator

__all__ = ["AppContext", "get_context"]


@dataclass(frozen=True, slots=True)
class AppContext:
    """The services of one app, built by ``create_app`` and closed by its lifespan."""

    settings: Settings
    clock: Clock
    supervisor: Supervisor
    database: Database
    store: Store
    audit: AuditTrail
    authenticator: Authenticator
    #: The security cache's invalidation channel (its ``usable`` shows on /readyz).
    channel: Invalidations = field(default_factory=LocalInvalidations)


def get_context(connection: HTTPConnection) -> AppContext:
    """The ``AppContext`` of the app serving ``connection``."""
    context = connection.app.state.keel
    if not isinstance(context, AppContext):  # pragma: no cover - wiring error
        raise RuntimeError("keel context missing: build the app with create_app()")
    return context
