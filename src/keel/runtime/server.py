"""``keel serve`` (gunicorn + uvicorn workers, configured from ``Settings``) and ``keel dev``.

The master binds, supervises and never imports the app; each worker builds its
own ``Settings()`` and calls the app factory (``preload_app`` stays off: pooled
connections must not be shared across ``fork``). gunicorn's options and hooks
are ``keel.runtime.gunicorn_config``'s, the worker class is
``keel.runtime.worker``'s, and the factory reference is checked and imported
by ``keel.runtime.factory``.

Nothing here starts or connects anything at import.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Final

import uvicorn
from gunicorn.app.base import BaseApplication

from keel._logging import configure_logging, event
from keel.errors import ConfigurationError
from keel.runtime.deferred import DeferredApp
from keel.runtime.factory import DEFAULT_FACTORY, check_factory_ref, import_factory
from keel.runtime.gunicorn_config import forwarded_allow_ips, gunicorn_options
from keel.runtime.http_head import HeadLimits, configure_head_limits
from keel.runtime.worker import (
    DEFAULT_LIFESPAN_RESERVE,
    KeelWorker,
    graceful_shutdown_timeout,
    lifespan_reserve,
    require_fast_stack,
)
from keel.security.devkeys import development_key_file, has_configured_key
from keel.security.headers import HeaderPolicy
from keel.settings import Settings

__all__ = [
    "DEV_FACTORY_ENV",
    "KeelApplication",
    "dev",
    "serve",
    "share_development_key",
]

_log = logging.getLogger("keel.server")

# ``keel dev`` hands the factory to uvicorn's reloading child through this variable.
DEV_FACTORY_ENV: Final = "KEEL_DEV_FACTORY"
# Workers build their own Settings() from the environment: this is how they find a key file.
KEY_FILE_ENV: Final = "KEEL_JWT_KEY_FILE"


def _bound_heads(settings: Settings) -> None:
    """Set this process's request-head bounds; runs before the worker accepts anything."""
    server = settings.server
    configure_head_limits(HeadLimits(server.max_header_fields, server.max_header_bytes))


class KeelApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn configured from a dict; the app is built in each worker.

    ``BaseApplication`` (unlike ``Application``) reads no ``gunicorn.conf.py``,
    no ``GUNICORN_CMD_ARGS`` and no ``sys.argv``: the options are all there is.
    """

    def __init__(
        self,
        options: Mapping[str, object],
        *,
        factory: str = DEFAULT_FACTORY,
        lifespan_reserve: int = DEFAULT_LIFESPAN_RESERVE,
        drain_seconds: float = 0.0,
    ) -> None:
        check_factory_ref(factory)
        self.options = dict(options)
        self.factory = factory
        # Read by KeelWorker (it receives this object as ``app``).
        self.lifespan_reserve = lifespan_reserve
        self.drain_seconds = drain_seconds
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> object:
        """In the worker: ``Settings()`` from the environment, and the factory's app, deferred.

        The factory is imported and called on a thread while the worker already
        answers ``/livez`` (``keel.runtime.deferred``): importing the app is most
        of a worker's boot, and liveness needs none of it.
        """
        settings = Settings()
        configure_logging(settings.server.log_level)
        _bound_heads(settings)
        reference = self.factory

        def build() -> Any:
            return import_factory(reference)(settings)

        return DeferredApp(
            build,
            policy=HeaderPolicy(hsts_max_age=settings.http.hsts_max_age),
            wait_timeout=settings.http.request_timeout,
        )


def share_development_key(settings: Settings) -> None:
    """In development without a configured signing key, give every worker the same one.

    Runs in the master before any worker exists: the development key file
    (``keel.security.devkeys``) is created or read, and named in this
    process's environment, which the workers inherit. Every worker then signs
    and accepts the same tokens, and so does the next start in the same
    directory. Production and configured keys are left alone.
    """
    if settings.is_production or has_configured_key(settings.tokens):
        return
    development = development_key_file(settings.tokens)
    os.environ[KEY_FILE_ENV] = str(development.path)
    event(
        _log,
        logging.INFO,
        "jwt_development_key_file",
        path=str(development.path),
        kid=development.keys.current.kid,
        created=development.created,
        detail="no signing key configured: every worker uses this development key file; "
        "production needs KEEL_JWT_KEY_FILE",
    )


def serve(settings: Settings, *, factory: str = DEFAULT_FACTORY) -> None:
    """Run gunicorn with keel's workers until it is told to stop (``keel serve``)."""
    require_fast_stack()
    configure_logging(settings.server.log_level)
    share_development_key(settings)
    application = KeelApplication(
        gunicorn_options(settings),
        factory=factory,
        lifespan_reserve=lifespan_reserve(settings),
        drain_seconds=settings.server.drain_seconds,
    )
    application.run()


# -- development ----------------------------------------------------------------------------


def _dev_app() -> object:
    """uvicorn's reloading child calls this (``factory=True``) to build the app."""
    settings = Settings()
    configure_logging(settings.server.log_level)
    _bound_heads(settings)
    return import_factory(os.environ.get(DEV_FACTORY_ENV, DEFAULT_FACTORY))(settings)


def dev(settings: Settings, *, factory: str = DEFAULT_FACTORY) -> None:
    """Run one uvicorn process that reloads on code changes (``keel dev``); never in production."""
    if settings.is_production:
        raise ConfigurationError("keel dev is refused when KEEL_ENV=production; use keel serve")
    require_fast_stack()
    check_factory_ref(factory)
    share_development_key(settings)
    server = settings.server
    os.environ[DEV_FACTORY_ENV] = factory
    uvicorn.run(
        f"{__name__}:_dev_app",
        factory=True,
        reload=True,
        host=server.bind,
        port=server.port,
        log_config=None,
        timeout_keep_alive=server.keepalive,
        timeout_graceful_shutdown=graceful_shutdown_timeout(
            server.graceful_timeout, lifespan_reserve(settings)
        ),
        forwarded_allow_ips=forwarded_allow_ips(server.trusted_proxies),
        **KeelWorker.CONFIG_KWARGS,
    )
