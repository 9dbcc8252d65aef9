"""An application's own services, built with keel's and handed to its routes by type.

``create_app(settings, services=[factory, ...])`` calls each factory with the
app's :class:`~keel.api.state.AppContext` (database, store, audit trail,
clock, supervisor) once the context exists, and keeps what it returns under
its type. A route asks for it by type, without string keys::

    def notes_factory(context: AppContext) -> NotesService:
        return NotesService(context.database, context.audit)

    @router.get("/notes")
    async def list_notes(notes: Annotated[NotesService, Depends(service(NotesService))]): ...

A factory that owns something to close registers it on
``context.supervisor.add_closer``; start-up work goes in ``create_app(warmups=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request

from keel.api.state import AppContext, get_context
from keel.errors import ConfigurationError

__all__ = ["ServiceFactory", "keep_service", "service"]

_T = TypeVar("_T")

ServiceFactory = Callable[[AppContext], object]


def keep_service(context: AppContext, built: object, *, given: bool = False) -> None:
    """Keep ``built`` among the app's services under its type: one service per type.

    ``given`` says it is one of the application's own (``create_app(services=...)``);
    otherwise it is one of keel's (sessions, the login throttle). A second service
    of a type already kept is refused, saying which of the two cases it is.
    """
    kind = type(built)
    if kind in context.services:
        name = kind.__qualname__
        raise ConfigurationError(
            f"two services of type {name} were given"
            if given
            else f"a service of type {name} was given, but keel provides its own"
        )
    context.services[kind] = built


def service(kind: type[_T]) -> Callable[[Request], _T]:
    """A dependency that answers the app's service of type ``kind``."""

    def dependency(request: Request) -> _T:
        return get_context(request).service(kind)

    dependency.__name__ = f"service_{kind.__name__}"
    return dependency
