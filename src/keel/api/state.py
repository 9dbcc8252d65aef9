"""What one app instance owns: settings, clock, supervisor, database and cache store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from starlette.requests import HTTPConnection

from keel._clock import Clock
from keel.accounts.roles import RoleCatalog
from keel.api.identity import Authenticator
from keel.audit import AuditTrail
from keel.cache import Invalidations, LocalInvalidations, Store
from keel.db import Database
from keel.runtime.lifecycle import Supervisor
from keel.settings import Settings

__all__ = ["AppContext", "app_context", "get_context"]

_T = TypeVar("_T")


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
    #: The application's own services by type (``create_app(services=...)``), and
    #: keel's ``AccountService`` once the accounts are installed.
    services: dict[type[Any], Any] = field(default_factory=dict)
    #: Every audit action ``GET /admin/audit`` may filter by: keel's and the application's.
    audit_actions: frozenset[str] = frozenset()
    #: keel's roles and the application's, and the scopes each grants.
    roles: RoleCatalog = field(default_factory=RoleCatalog)

    def service(self, kind: type[_T]) -> _T:
        """The application's service of type ``kind``; ``LookupError`` when none was given."""
        try:
            return cast(_T, self.services[kind])
        except KeyError:
            raise LookupError(
                f"no service of type {kind.__qualname__}: pass a factory to "
                "create_app(services=...)"
            ) from None


def get_context(connection: HTTPConnection) -> AppContext:
    """The ``AppContext`` of the app serving ``connection``."""
    return app_context(connection.app)


def app_context(app: Any) -> AppContext:
    """The ``AppContext`` ``create_app`` gave ``app``."""
    context = getattr(app.state, "keel", None)
    if not isinstance(context, AppContext):  # pragma: no cover - wiring error
        raise RuntimeError("keel context missing: build the app with create_app()")
    return context
