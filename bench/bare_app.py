"""The reference app: bare FastAPI, one JSON route, nothing else.

Served exactly like keel (``keel serve --factory bench.bare_app:create``: same
gunicorn master, same worker class, same worker count), so the difference in
every figure is keel's own stack (middleware, lifespan, imports), not the server.
"""

from __future__ import annotations

from fastapi import FastAPI

from keel.settings import Settings

__all__ = ["create"]


def create(settings: Settings) -> FastAPI:
    """Build the bare app; ``settings`` is accepted for the factory signature only."""
    del settings
    app = FastAPI()

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    return app
