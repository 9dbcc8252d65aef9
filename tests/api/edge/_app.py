"""A small FastAPI app behind keel's real middleware stack, and ways to drive it.

``build_app`` wires ``install_middleware`` + ``install_error_handlers`` around a
handful of routes that produce every status the edge must handle.
``call_asgi`` drives any ASGI app with a hand-made scope, for what httpx will
not send (HTTP/1.0, CR/LF in headers, both framing headers) or cannot receive
(an unfinished response).
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, field_validator
from starlette.types import ASGIApp, Message

from keel._logging import JsonFormatter
from keel.api.errors import install_error_handlers
from keel.api.middleware import install_middleware, no_store
from keel.api.problems import get_request_id
from keel.errors import (
    ClientError,
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    KeelError,
    NotFound,
)
from keel.settings import CorsSettings, HttpSettings

ALLOWED_ORIGIN = "https://app.example.com"
TRUSTED = ("127.0.0.1/32", "::1/128", "10.1.0.0/16", "fd00::/8")
UNTRUSTED_PEER = ("10.9.9.9", 1234)
TRUSTED_PEER = ("10.1.0.5", 4321)
MAX_BODY = 2048
TIMEOUT = 0.5

DOMAIN_ERRORS: dict[str, KeelError] = {
    "invalid": InvalidInput("The name is not acceptable."),
    "missing": NotFound("No such user."),
    "conflict": Conflict("The e-mail is taken."),
    "client": ClientError("Bad request, plainly."),
    "database": DatabaseUnavailable("postgres at db.internal:5432 did not answer"),
    "config": ConfigurationError("SECRET_KEY is too short"),
    "base": KeelError("something odd"),
}


def http_settings(
    *,
    origins: Sequence[str] = (ALLOWED_ORIGIN,),
    allow_credentials: bool = True,
    trusted: Sequence[str] = TRUSTED,
    trust_all: bool = False,
    max_body_bytes: int = MAX_BODY,
    timeout: float = TIMEOUT,
    hsts_max_age: int = 31_536_000,
    docs_enabled: bool = False,
) -> HttpSettings:
    return HttpSettings(
        trusted_proxies=tuple(ipaddress.ip_network(n) for n in trusted),
        trust_all_proxies=trust_all,
        max_body_bytes=max_body_bytes,
        max_auth_body_bytes=max_body_bytes,
        max_json_members=256,
        max_json_depth=32,
        request_timeout=timeout,
        hsts_max_age=hsts_max_age,
        docs_enabled=docs_enabled,
        cors=CorsSettings(origins=tuple(origins), allow_credentials=allow_credentials, max_age=600),
    )


@dataclass
class Probe:
    """What the routes saw: set by handlers, read by tests."""

    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    called: list[str] = field(default_factory=list)
    body_error: list[str] = field(default_factory=list)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    password: str
    count: int = 0


class Nick(BaseModel):
    nick: str

    @field_validator("nick")
    @classmethod
    def _nick(cls, value: str) -> str:
        if not value.isalnum():
            raise ValueError(f"nick {value!r} must be alphanumeric")
        return value


def build_app(
    http: HttpSettings | None = None,
    *,
    logger: logging.Logger | None = None,
    probe: Probe | None = None,
    docs: bool = False,
) -> FastAPI:
    """An app with keel's edge installed and routes for every interesting status."""
    http = http or http_settings()
    probe = probe or Probe()
    app = FastAPI(
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_error_handlers(app)
    install_middleware(app, http, logger=logger or logging.getLogger("keel.test.edge"))

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        probe.called.append("ok")
        return {"ok": True}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        client = request.client
        return {
            "client": client.host if client else None,
            "scheme": request.url.scheme,
            "request_id": get_request_id(request),
            "state_request_id": request.state.request_id,
        }

    @app.get("/unauthorized")
    async def unauthorized() -> None:
        raise HTTPException(401, detail="Sign in first.", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom /srv/keel/secret.py sqlalchemy password=hunter2")

    @app.get("/domain/{kind}")
    async def domain(kind: str) -> None:
        raise DOMAIN_ERRORS[kind]

    @app.post("/items")
    async def items(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @app.post("/nick")
    async def nick(body: Nick) -> dict[str, str]:
        return {"nick": body.nick}

    @app.post("/size")
    async def size(request: Request) -> dict[str, int]:
        probe.called.append("size")
        try:
            body = await request.body()
        except Exception as exc:
            probe.body_error.append(type(exc).__name__)
            raise
        return {"size": len(body)}

    @app.get("/slow")
    async def slow() -> None:
        probe.called.append("slow")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            probe.cancelled.set()
            raise

    @app.get("/slow-stream")
    async def slow_stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first chunk\n"
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                probe.cancelled.set()
                raise
            yield b"never\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/broken-stream")
    async def broken_stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first chunk\n"
            raise RuntimeError("stream broke after start")

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/fingerprint")
    async def fingerprint() -> JSONResponse:
        return JSONResponse(
            {"ok": True},
            headers={"Server": "uvicorn", "X-Powered-By": "FastAPI", "X-Frame-Options": "ALLOW"},
        )

    @app.get("/cached")
    async def cached() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"Cache-Control": "public, max-age=60"})

    @app.get("/private", dependencies=[Depends(no_store)])
    async def private() -> JSONResponse:
        return JSONResponse({"token": "x"}, headers={"Cache-Control": "public, max-age=60"})

    @app.get("/cors-greedy")
    async def cors_greedy() -> JSONResponse:
        return JSONResponse(
            {"ok": True},
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Credentials": "true",
            },
        )

    return app


@asynccontextmanager
async def client(
    app: ASGIApp,
    *,
    peer: tuple[str, int] = ("127.0.0.1", 50000),
    base_url: str = "http://testserver",
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=peer)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


@dataclass
class Exchange:
    """The messages an ASGI app sent for one hand-made request."""

    messages: list[Message]

    @property
    def start(self) -> Message:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.messages
        return starts[0]

    @property
    def status(self) -> int:
        return int(self.start["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode("latin-1") for k, v in self.start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    @property
    def complete(self) -> bool:
        bodies = [m for m in self.messages if m["type"] == "http.response.body"]
        return bool(bodies) and not bodies[-1].get("more_body", False)

    def json(self) -> Any:
        return json.loads(self.body)


def make_scope(
    *,
    method: str = "GET",
    path: str = "/ok",
    headers: Iterable[tuple[str, str]] = (),
    http_version: str = "1.1",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    scheme: str = "http",
    query_string: bytes = b"",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client,
        "server": ("testserver", 80),
        "state": {},
    }


async def call_asgi(
    app: ASGIApp,
    scope: dict[str, Any] | None = None,
    *,
    body: Sequence[bytes] = (),
    sink: list[Message] | None = None,
    **scope_kwargs: Any,
) -> Exchange:
    """Run ``app`` on one request; the body arrives in ``body`` chunks, then disconnect.

    ``sink``, when given, receives the messages as they are sent (to watch a
    response that completes before the application call returns).
    """
    scope = scope if scope is not None else make_scope(**scope_kwargs)
    chunks = list(body) or [b""]
    messages: list[Message] = sink if sink is not None else []
    index = 0

    async def receive() -> Message:
        nonlocal index
        if index < len(chunks):
            chunk = chunks[index]
            index += 1
            return {"type": "http.request", "body": chunk, "more_body": index < len(chunks)}
        await asyncio.sleep(3600)  # a real server waits for the disconnect
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return Exchange(messages)


class LogCapture:
    """A private logger whose records are formatted by keel's JSON formatter."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"keel.test.{uuid.uuid4().hex}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(JsonFormatter())
        self.logger.addHandler(handler)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines]
        return [e for e in parsed if name is None or e["event"] == name]
