"""``keel serve`` (gunicorn + uvicorn workers) and ``keel dev`` (uvicorn with reload)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from keel._logging import configure_logging
from keel.cli._output import err, out, settings_or_exit
from keel.security.checks import ProductionRefused, refuse_production_errors

__all__ = ["register"]

DEFAULT_FACTORY = "keel.api.app:create_app"


def register(commands: Any) -> None:
    for name, handler, text in (
        ("serve", run_serve, "serve with gunicorn and uvicorn workers"),
        ("dev", run_dev, "serve with auto-reload (development only)"),
    ):
        parser: argparse.ArgumentParser = commands.add_parser(name, help=text)
        parser.add_argument(
            "--factory",
            default=DEFAULT_FACTORY,
            help="module:callable taking Settings and returning the ASGI app "
            f"(default {DEFAULT_FACTORY})",
        )
        parser.set_defaults(handler=handler)


def _refuse_on_errors() -> Any:
    settings = settings_or_exit()
    try:
        refuse_production_errors(settings)
    except ProductionRefused as refused:
        for finding in refused.findings:
            err(str(finding))
        err("keel: refusing to start in production while `keel check` reports errors")
        raise SystemExit(1) from None
    return settings


def run_serve(args: argparse.Namespace) -> int:
    settings = _refuse_on_errors()
    configure_logging(settings.server.log_level)
    out(f"keel: serving on http://{_host(settings.server.bind)}:{settings.server.port}")
    _server().serve(settings, factory=args.factory)
    return 0


def run_dev(args: argparse.Namespace) -> int:
    settings = _refuse_on_errors()
    if settings.is_production:
        err("keel: `keel dev` is refused when KEEL_ENV=production; use `keel serve`")
        return 1
    configure_logging(settings.server.log_level)
    out(f"keel: development server on http://{_host(settings.server.bind)}:{settings.server.port}")
    _server().dev(settings, factory=args.factory)
    return 0


def _server() -> Any:
    """``keel.runtime.server``, imported only by the commands that serve.

    gunicorn reads ``WEB_CONCURRENCY`` with ``int()`` when imported, so a blank
    value (which keel treats as unset) is removed first.
    """
    if not os.environ.get("WEB_CONCURRENCY", "x").strip():
        del os.environ["WEB_CONCURRENCY"]
    from keel.runtime import server

    return server


def _host(bind: str) -> str:
    return f"[{bind}]" if ":" in bind else bind
