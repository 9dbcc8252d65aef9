"""The last line: an exception escaping the application becomes a generic 500 (SEC-53).

The body is a problem (``internal_error``) with the request id and nothing
else: no traceback, no exception text. The exception is logged once, with its
traceback, as the ``unhandled_error`` event; it is not re-raised, so neither
Starlette's ``ServerErrorMiddleware`` nor the server logs it again. If the
response had already started, the response is left unfinished and the server
drops the connection (the client sees a truncated response, never a
complete-looking one).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.api.problems import send_problem

__all__ = ["UnhandledErrorMiddleware"]


class UnhandledErrorMiddleware:
    """Turn any exception escaping ``app`` into a logged, generic 500."""

    def __init__(self, app: ASGIApp, *, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:  # the catch-all, by design
            self.logger.error(
                "unhandled_error",
                exc_info=exc,
                extra={
                    "fields": {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "response_started": started,
                    }
                },
            )
            if not started:
                await send_problem(send, scope, 500, "internal_error")
