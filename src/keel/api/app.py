"""``create_app(settings)``: the one place a keel application is assembled.

Building the app connects to nothing and starts nothing: the engine and the
cache are lazy, and background work starts in the lifespan, owned by the
supervisor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from keel import __version__, metrics
from keel._clock import Clock, SystemClock
from keel._logging import event
from keel.accounts import load_user_snapshot, load_user_state
from keel.accounts.credentials import end_user_links
from keel.accounts.roles import Role, RoleCatalog
from keel.api.accounts import build_accounts_router, install_read_me
from keel.api.admin_users import build_admin_users_router
from keel.api.assembly import build_account_service
from keel.api.audit import build_audit_router
from keel.api.bearer import BearerAuthenticator
from keel.api.contract import install_contract
from keel.api.errors import install_error_handlers
from keel.api.health import install_health
from keel.api.housekeeping import Housekeeper
from keel.api.identity import Authenticator
from keel.api.jwks import build_jwks_router
from keel.api.metrics import install_metrics
from keel.api.metrics import sampler as metrics_sampler
from keel.api.middleware import install_middleware
from keel.api.passwords import build_passwords_router
from keel.api.services import ServiceFactory, keep_service
from keel.api.sessions import build_sessions_router
from keel.api.state import AppContext
from keel.audit import Action, AuditActions, AuditTrail
from keel.auth import (
    UNKNOWN_SUBJECT,
    SecurityState,
    SubjectRecord,
    SubjectState,
    TokenAuthenticator,
    VerifiedTokenCache,
)
from keel.auth.ratelimit import RateLimiter
from keel.auth.sessions import SessionService, session_is_live
from keel.auth.throttle import LoginThrottle
from keel.cache import Stores, build_stores
from keel.db import Database
from keel.db.revision import expected_heads, schema_is_current
from keel.runtime.lifecycle import Supervisor, Warmup
from keel.security.checks import refuse_production_errors
from keel.security.keys import KeySet, load_key_set, retention
from keel.security.tokens import AccessTokens
from keel.settings import Settings

__all__ = ["create_app"]

_log = logging.getLogger("keel.app")


def create_app(
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
    warmups: Sequence[Warmup] = (),
    clock: Clock | None = None,
    authenticator: Authenticator | None = None,
    keys: KeySet | None = None,
    accounts: bool = True,
    stores: Stores | None = None,
    database: Database | None = None,
    services: Sequence[ServiceFactory] = (),
    audit_actions: Sequence[type[AuditActions]] = (),
    roles: Sequence[Role] = (),
) -> FastAPI:
    """Build a keel application from ``settings``.

    ``routers`` are mounted after keel's own; ``warmups`` run in the background
    after start-up, each under its timeout; ``authenticator`` finds the caller
    of a request (default: bearer access tokens checked against the shared
    per-user state); ``stores`` replaces the stores the settings ask for
    and ``database`` the database (shared with code outside the app, which
    then owns and disposes it). ``services`` are factories of the
    application's own services (``keel.api.services``), ``audit_actions`` its
    declared audit actions (``keel.audit.AuditActions``), ``roles`` its roles
    and the scopes they grant (``keel.accounts.Role``). In production the app
    refuses to build while ``keel check`` reports an error.
    """
    refuse_production_errors(settings)

    clock = clock or SystemClock()
    supervisor = Supervisor(settings.lifecycle, clock=clock)
    owns_database = database is None
    database = database or Database(settings.database)
    stores = stores or build_stores(settings.cache, clock)
    store = stores.general
    keys = keys or load_key_set(settings.tokens, production=settings.is_production)
    # One AccessTokens for issuing (accounts) and verifying (bearer): the same key set.
    access_tokens = AccessTokens(keys, settings.tokens, clock=clock)

    async def subject_state(user_id: str) -> SubjectState | None:
        user = await load_user_state(database, user_id)
        if user is None:
            return None
        return SubjectState(user.active, user.tokens_valid_after, user.scopes)

    async def subject_record(user_id: str) -> SubjectRecord:
        snapshot = await load_user_snapshot(database, user_id)
        if snapshot is None:
            return UNKNOWN_SUBJECT
        user = snapshot.state
        return SubjectRecord(
            version=snapshot.version,
            state=SubjectState(user.active, user.tokens_valid_after, user.scopes),
            profile=snapshot.profile,
        )

    async def session_live(user_id: str, session_id: str) -> bool:
        return await session_is_live(database, user_id, session_id)

    catalog = RoleCatalog(roles)
    security = SecurityState(
        stores.shared, stores.channel, load_subject=subject_record, load_session=session_live
    )

    context = AppContext(
        settings=settings,
        clock=clock,
        supervisor=supervisor,
        database=database,
        store=store,
        audit=AuditTrail.from_settings(database, settings.audit, clock),
        authenticator=authenticator
        or BearerAuthenticator(
            TokenAuthenticator(VerifiedTokenCache(access_tokens, clock=clock), security),
            catalog,
        ),
        channel=stores.channel,
        audit_actions=frozenset(Action)
        | frozenset(action for group in audit_actions for action in group.members()),
        roles=catalog,
    )
    for factory in services:
        keep_service(context, factory(context), given=True)
    limiter = RateLimiter(store, settings.throttle, clock=clock)
    keep_service(context, limiter)

    if owns_database:
        supervisor.add_closer("database", database.dispose)
    supervisor.add_closer("cache", store.close)
    if stores.shared is not store:
        supervisor.add_closer("security_cache", stores.shared.close)
    supervisor.add_service("cache_invalidations", stores.channel.run)
    if settings.metrics.enabled:
        # One set of instruments per process (prometheus_client's model), not per app.
        metrics.enable()
        supervisor.add_service("metrics_sampler", metrics_sampler(database))
    else:
        metrics.disable()
    if settings.housekeeping.interval:
        housekeeper = Housekeeper(
            database,
            store,
            clock,
            retention=settings.housekeeping.ended_retention,
            budget=settings.housekeeping.budget,
            interval=settings.housekeeping.interval,
        )
        supervisor.add_service("housekeeping", housekeeper.run_forever)
    supervisor.add_warmup(Warmup("cache_connect", store.ping))
    evicts = getattr(stores.shared, "evicts", None)
    if evicts is not None:
        supervisor.add_warmup(Warmup("cache_eviction_policy", _eviction_check(evicts)))
    supervisor.add_warmup(
        Warmup("database_schema", _schema_check(database, settings.database.migration_packages))
    )
    for warmup in warmups:
        supervisor.add_warmup(warmup)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await supervisor.start()
        try:
            yield
        finally:
            await supervisor.stop()

    http = settings.http
    app = FastAPI(
        title="keel",
        version=__version__,
        debug=False,
        lifespan=lifespan,
        docs_url="/docs" if http.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if http.docs_enabled else None,
        swagger_ui_oauth2_redirect_url=None,
        # No trailing-slash redirects: Starlette builds them from the Host header, and a 307
        # resends the body (a password) there. A path with a stray slash is a plain 404.
        redirect_slashes=False,
    )
    app.state.keel = context
    install_error_handlers(app)
    install_contract(app, settings)
    install_middleware(
        app, http, logger=logging.getLogger("keel.access"), instruments=metrics.active()
    )
    # Routes are matched in order: the health probes and GET /users/me come first, straight
    # in the app's own table (keel.api.routing), the included routers after them.
    install_health(app)
    if accounts:
        sessions = SessionService(
            database=database,
            audit=context.audit,
            state=security,
            settings=settings.sessions,
            clock=clock,
            tokens=access_tokens,
            subject_state=subject_state,
            refresh_limit=limiter.refresh,
            on_revoke_user=end_user_links,
        )
        # Locks and failure counts fail closed: never the per-machine fallback, whose empty
        # counters would let a locked account's passwords be checked again (503 instead).
        throttle = LoginThrottle(stores.shared, settings.throttle, clock=clock)
        keep_service(context, throttle)
        areas = build_account_service(
            context,
            access_tokens=access_tokens,
            on_user_changed=security.subject_changed,
            outbox_observer=metrics.MailOutboxMetrics(),
            sessions=sessions,
            guard=throttle,
        ).areas
        keep_service(context, sessions)
        install_read_me(app, areas.profile)
        app.include_router(
            build_accounts_router(
                registration=areas.registration, login=areas.login, profile=areas.profile
            )
        )
        app.include_router(build_sessions_router())
        app.include_router(build_passwords_router(profile=areas.profile, recovery=areas.recovery))
        app.include_router(build_admin_users_router(areas.admin))
    # After keel's busiest routes (matched in order), before the application's own.
    install_metrics(app, settings.metrics, database)
    app.include_router(build_jwks_router(keys, keep_for=retention(settings.tokens), clock=clock))
    app.include_router(build_audit_router())
    for router in routers:
        app.include_router(router)
    return app


def _eviction_check(evicts: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[None]]:
    """A warm-up that says, in the log, when Redis may evict keel's keys to make room."""

    async def check() -> None:
        if await evicts():
            event(
                _log,
                logging.ERROR,
                "cache_may_evict",
                detail="Redis has a maxmemory with an eviction policy: rate-limit counters and "
                "locks could be evicted under memory pressure; set maxmemory-policy noeviction",
            )

    return check


def _schema_check(database: Database, packages: tuple[str, ...]) -> Callable[[], Awaitable[None]]:
    """A warm-up that says, in the log, whether the schema is at every expected head."""

    async def check() -> None:
        expected = await asyncio.to_thread(expected_heads, packages)
        query = asyncio.ensure_future(database.current_revisions())
        try:
            current = await asyncio.shield(query)
        except asyncio.CancelledError:
            # A driver's worker thread (aiosqlite) may be mid-call: let it finish, or it
            # reports into a loop that shutdown is about to close. Then give up.
            await asyncio.wait({query}, timeout=1.0)
            if query.done() and not query.cancelled():
                query.exception()  # retrieved: the outcome no longer matters
            raise
        if not await asyncio.to_thread(schema_is_current, current, packages):
            event(
                _log,
                logging.ERROR,
                "schema_outdated",
                current=",".join(sorted(current)) or None,
                head=",".join(sorted(expected)),
            )
        else:
            event(_log, logging.INFO, "schema_current", revision=",".join(sorted(current)))

    return check
