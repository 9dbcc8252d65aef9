"""Authenticated ``GET /users/me`` throughput vs the bare-FastAPI ceiling, every check on.

The route measured is keel's own ``GET /users/me`` in keel's own app (``keel
serve``, default factory: gunicorn + uvicorn workers, logs at WARNING) over a
SQLite file migrated by ``keel db upgrade`` and the real Redis as the cache
store. The account is made by ``keel users create-admin`` and logs in through
``POST /auth/login``; the token it gets is the one measured. Each request pays
for every check: the token's signature and claims (through
``VerifiedTokenCache``, as production wires it: a token this worker has
verified before is not re-verified), the subject state, the ``jti`` and
``sid`` deny-list entries, then the cached user view. A preflight proves the
checks are live before anything is timed: no token, a tampered signature, and
a ``jti`` revoked in Redis by another process are all refused.

Load: ``wrk --latency -t2 -c64`` (``-t1`` against one worker, so the generator
leaves it a core) if installed, else ``bench/_load.py`` (same shape, more
client CPU), alternating runs against ``bench.bare_app``'s
``/livez`` (the ceiling), keel's ``/users/me`` and keel's own ``/livez`` on the
same server (keel's stack without authentication); on 2 workers, then on 1 for
p99. ``--profile S`` serves the same app with uvicorn inside this process and
profiles the server thread with cProfile for S seconds of load on
``/users/me`` and then on ``/livez``: the difference is what ``/users/me``
costs, by library.

    python bench/users_me.py [--duration 10] [--connections 64] [--pairs 2]
                             [--workers 2 1] [--redis-url URL] [--profile 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import http.client
import json
import os
import pstats
import secrets
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
import uvloop

from bench import _harness as h
from keel._clock import SystemClock
from keel.api.app import create_app
from keel.auth import (
    SecurityState,
    SubjectRecord,
    SubjectState,
    TokenAuthenticator,
    VerifiedTokenCache,
)
from keel.cache import build_stores
from keel.db import migrate
from keel.security.keys import generate_key_file, load_key_set
from keel.security.tokens import AccessTokens, AccessTokenVerifier
from keel.settings import Settings

__all__ = ["Setup", "log_in", "main"]

PATH = "/users/me"
ISSUER = "https://keel.bench"
WARMUP_SECONDS = 2.0
DEFAULT_REDIS = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


# --------------------------------------------------------------------------- setup


@dataclass
class Setup:
    """What every server of one run shares: the key file, Redis, the account's credentials."""

    directory: Path
    key_file: Path
    redis_url: str
    email: str = field(default_factory=lambda: f"bench-{secrets.token_hex(4)}@example.com")
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    def env(self) -> tuple[tuple[str, str], ...]:
        redis = (("REDIS_URL", self.redis_url),) if self.redis_url else ()
        return (
            ("KEEL_JWT_KEY_FILE", str(self.key_file)),
            ("KEEL_JWT_ISSUER", ISSUER),
            *redis,
            # One client logs in from one address: the brute-force limits are not measured here.
            ("KEEL_THROTTLE_ENABLED", "false"),
        )

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "jwt_key_file": str(self.key_file),
            "jwt_issuer": ISSUER,
            "redis_url": self.redis_url or None,
            "database_url": f"sqlite:///{self.directory / 'profile.sqlite3'}",
            "log_level": "WARNING",
            "throttle_enabled": False,
        }
        values.update(overrides)
        return Settings(**values)

    def tokens(self) -> AccessTokens:
        settings = self.settings()
        return AccessTokens(load_key_set(settings.tokens, production=False), settings.tokens)


def keel_spec(label: str, setup: Setup, workers: int) -> h.ServerSpec:
    return h.ServerSpec(label, None, workers, "WARNING", None, True, setup.env())


def _request(
    port: int, method: str, path: str, *, token: str | None = None, body: Any = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(h.HOST, port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def log_in(port: int, email: str, password: str) -> str:
    """An access token from keel's own ``POST /auth/login``."""
    status, body = _request(
        port, "POST", "/auth/login", body={"email": email, "password": password}
    )
    if status != 200:
        raise h.BenchError(f"POST /auth/login gave {status}: {body[:200]!r}")
    token: str = json.loads(body)["access_token"]
    return token


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# --------------------------------------------------------------------------- load


@dataclass
class Result:
    duration: float
    connections: int
    # workers, keel /users/me, keel's own /livez (same server), bare /livez
    series: list[tuple[int, h.Series, h.Series, h.Series]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    servers: list[h.Server] = field(default_factory=list)
    loadavg: list[str] = field(default_factory=list)


def preflight(server: h.Server, setup: Setup, token: str, result: Result) -> None:
    """Prove every check is on before timing anything."""
    status, body = _request(server.port, "GET", PATH, token=token)
    if status != 200 or setup.email.encode() not in body:
        raise h.BenchError(f"{server.spec.label}: GET {PATH} with the token gave {status}")
    anonymous, _ = _request(server.port, "GET", PATH)
    tampered, _ = _request(
        server.port, "GET", PATH, token=token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    )
    revoked_token = log_in(server.port, setup.email, setup.password)
    _request(server.port, "GET", PATH, token=revoked_token)  # cached as live everywhere it went
    logout, _ = _request(server.port, "POST", "/auth/logout", token=revoked_token)
    revoked, _ = _request(server.port, "GET", PATH, token=revoked_token)
    result.checks = [
        f"no token -> {anonymous}",
        f"tampered signature -> {tampered}",
        f"logged-out session (logout {logout}) -> {revoked}",
    ]
    if (anonymous, tampered, revoked) != (401, 401, 401):
        raise h.BenchError(f"{server.spec.label}: checks failed: {result.checks}")


def run_for_workers(workers: int, setup: Setup, pairs: int, result: Result) -> None:
    specs = [keel_spec("keel", setup, workers), h.bare_spec("bare", workers=workers)]
    me, keel_livez = h.Series(f"{workers}w keel {PATH}"), h.Series(f"{workers}w keel /livez")
    bare = h.Series(f"{workers}w bare /livez")
    with h.servers(*specs) as running:
        result.servers.extend(running)
        keel, reference = running
        for server in running:
            server.wait_ready("/livez")
        h.create_admin(keel, setup.email, setup.password)
        token = log_in(keel.port, setup.email, setup.password)
        preflight(keel, setup, token, result)
        auth = (f"Authorization: Bearer {token}",)
        h.warm(reference.url + "/livez", requests=400)
        h.run_wrk(keel.url + PATH, headers=auth, duration=WARMUP_SECONDS)
        h.run_wrk(reference.url + "/livez", duration=WARMUP_SECONDS)
        result.loadavg.append(f"{workers}w start: {h.loadavg()}")
        # The load generator shares the machine's two cores. With two workers it gets
        # two threads as usual; with one, a single thread, so that it does not keep
        # taking the worker's core away (three busy threads on two cores put every
        # request behind scheduler slices: p99 of 100-150 ms for bare FastAPI too).
        threads = 2 if workers >= 2 else 1
        for _ in range(pairs):
            run = h.run_wrk(
                keel.url + PATH,
                headers=auth,
                duration=result.duration,
                connections=result.connections,
                threads=threads,
            )
            me.add(run, result.notes)
            bare.add(
                h.run_wrk(
                    reference.url + "/livez",
                    duration=result.duration,
                    connections=result.connections,
                    threads=threads,
                ),
                result.notes,
            )
            keel_livez.add(
                h.run_wrk(
                    keel.url + "/livez",
                    duration=result.duration,
                    connections=result.connections,
                    threads=threads,
                ),
                result.notes,
            )
        result.loadavg.append(f"{workers}w end: {h.loadavg()}")
    result.series.append((workers, me, keel_livez, bare))


# --------------------------------------------------------------------------- profile


_BUCKETS: tuple[tuple[str, str], ...] = (
    ("/keel/auth/", "keel.auth (state, deny-list)"),
    ("/keel/api/bearer", "keel.api bearer/principal"),
    ("/keel/api/principal", "keel.api bearer/principal"),
    ("/keel/api/accounts", "keel.api accounts route"),
    ("/keel/accounts/", "keel.accounts (profile, view)"),
    ("/keel/security/tokens", "keel token checks (header, claims)"),
    ("/keel/api/middleware/", "keel middleware"),
    ("/keel/cache/", "keel.cache"),
    ("/keel/", "keel (other)"),
    ("/jwt/", "PyJWT"),
    ("/cryptography/", "cryptography"),
    ("/redis/", "redis-py"),
    ("/fastapi/", "FastAPI"),
    ("/starlette/", "Starlette"),
    ("/pydantic", "pydantic"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
)


def _bucket(filename: str, name: str) -> str:
    if filename == "~":  # a builtin: classify by what it is
        lowered = name.lower()
        if "poll" in lowered or "select" in lowered:
            return "(idle: waiting on sockets)"
        if "ed25519" in lowered or "openssl" in lowered or "_rust" in lowered:
            return "cryptography"
        if "json" in lowered or "scanner" in lowered or "encoder" in lowered:
            return "json"
        if "socket" in lowered or "recv" in lowered or "send" in lowered:
            return "socket I/O"
        if "pydantic" in lowered or "validate" in lowered or "serializ" in lowered:
            return "pydantic"
        return "builtins (other)"
    for marker, label in _BUCKETS:
        if marker in filename:
            return label
    return "stdlib/other"


@dataclass
class Profiled:
    path: str
    rps: float
    requests: int
    buckets: dict[str, float]  # own seconds per bucket, whole run
    top: list[tuple[float, float, float, str]]  # own s, calls, cum s, where


def _profile_path(setup: Setup, path: str, seconds: float) -> Profiled:
    """Serve keel with uvicorn in this process; profile its thread while ``path`` is loaded."""
    # The profiler slows the loop several-fold: give Redis time to answer, or the store
    # would fall back to memory (cache_degraded) and the profile would lie.
    settings = setup.settings(cache_timeout=5.0)
    migrate.upgrade(settings.database)  # idempotent; the account is made once below
    app = create_app(settings)
    port = h.free_port()
    config = uvicorn.Config(
        app,
        host=h.HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    profiler = cProfile.Profile()
    loops: list[asyncio.AbstractEventLoop] = []
    measured: list[h.WrkResult] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            while not server.started:
                time.sleep(0.05)
            headers: tuple[str, ...] = ()
            if path == PATH:
                token = log_in(port, setup.email, setup.password)
                headers = (f"Authorization: Bearer {token}",)
            url = f"http://{h.HOST}:{port}{path}"
            h.run_wrk(url, headers=headers, duration=WARMUP_SECONDS)
            # cProfile follows one thread: switch it on and off from the server's own loop.
            loops[0].call_soon_threadsafe(profiler.enable)
            measured.append(h.run_wrk(url, headers=headers, duration=seconds))
            loops[0].call_soon_threadsafe(profiler.disable)
            time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
        finally:
            server.should_exit = True

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    threading.Thread(target=load, daemon=True).start()
    uvloop.run(serve())  # the loop keel's worker runs
    if failure or not measured:
        raise h.BenchError(f"profile of {path} failed: {failure!r}")
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    buckets: dict[str, float] = defaultdict(float)
    top = []
    # Requests the profiler saw: each gets one fresh request id (the load sends no X-Request-ID).
    # (Not an async function: cProfile counts every resumption of a coroutine as a call.)
    served = 0
    for (filename, _line, name), (_cc, calls, tottime, cumtime, _callers) in raw.items():
        buckets[_bucket(filename, name)] += tottime
        top.append((tottime, calls, cumtime, f"{Path(filename).name}:{name}"))
        if filename.endswith("request_context.py") and name == "new_request_id":
            served = calls
    top.sort(reverse=True)
    requests = served or measured[0].requests
    return Profiled(path, measured[0].rps, requests, dict(buckets), top[:20])


def _create_profile_account(setup: Setup) -> None:
    """The account, in the profile's own SQLite file, made by keel's CLI as for the servers."""
    settings = setup.settings()
    migrate.upgrade(settings.database)
    url = settings.database.url.get_secret_value()
    # Never started: it only lends create_admin an environment and a directory.
    holder = h.Server(h.ServerSpec("profile", database_url=url, extra_env=setup.env()))
    try:
        h.create_admin(holder, setup.email, setup.password)
    finally:
        holder.close()


def profile(setup: Setup, seconds: float) -> str:
    """Where the time goes: the server thread under cProfile, ``/users/me`` vs keel's ``/livez``.

    One uvicorn worker in this process (uvloop, httptools, as ``keel serve``
    runs it), loaded at 64 connections. cProfile roughly doubles the cost of
    Python-heavy code: read the shares and the difference, not the absolutes.
    """
    _create_profile_account(setup)
    me = _profile_path(setup, PATH, seconds)
    livez = _profile_path(setup, "/livez", seconds)

    def per_request(run: Profiled, label: str) -> float:
        return run.buckets.get(label, 0.0) / run.requests * 1e6

    labels = sorted(
        {label for run in (me, livez) for label in run.buckets if not label.startswith("(idle")},
        key=lambda label: -(per_request(me, label) - per_request(livez, label)),
    )
    busy_me = sum(per_request(me, label) for label in labels)
    busy_livez = sum(per_request(livez, label) for label in labels)
    rows = [
        [
            label,
            f"{per_request(me, label):.1f}",
            f"{per_request(livez, label):.1f}",
            f"{per_request(me, label) - per_request(livez, label):+.1f}",
        ]
        for label in labels
    ]
    rows.append(["total", f"{busy_me:.0f}", f"{busy_livez:.0f}", f"{busy_me - busy_livez:+.0f}"])
    lines = [
        f"== server-side profile: keel's app under uvicorn in-process, cProfile, "
        f"{h.load_tool()} -c64 -d{seconds:.0f}s; REDIS_URL={setup.redis_url or 'unset'} ==",
        f"under the profiler: {PATH} {me.rps:,.0f} req/s, keel /livez {livez.rps:,.0f} req/s",
        h.table(["own CPU, µs/request", PATH, "/livez", "difference"], rows),
        f"top functions for {PATH} by own time:",
    ]
    for tottime, calls, cumtime, where in me.top:
        lines.append(
            f"  {tottime / me.requests * 1e6:6.1f} µs own {cumtime / me.requests * 1e6:7.1f} cum"
            f"  {calls / me.requests:5.1f} calls/req  {where}"
        )
    return "\n".join(lines)


async def _stub_record(subject_id: str) -> SubjectRecord:
    state = SubjectState(True, datetime(2000, 1, 1, tzinfo=UTC), frozenset({"user"}))
    return SubjectRecord(1, state, b"{}")


async def _stub_session(subject_id: str, session_id: str) -> bool:
    return True


def micro(setup: Setup, rounds: int = 2000) -> str:
    """The auth steps alone, without HTTP: verify, then the whole check with each store."""
    tokens = setup.tokens()
    token = tokens.issue(subject="bench-subject", session_id="bench-session", scopes=["user"]).token
    cached = VerifiedTokenCache(tokens, clock=SystemClock())

    def per_call(verify: Callable[[str], object]) -> float:
        verify(token)
        started = time.perf_counter()
        for _ in range(rounds):
            verify(token)
        return (time.perf_counter() - started) / rounds * 1e6

    out = [
        f"AccessTokens.verify (signature + header + claims): {per_call(tokens.verify):.0f} µs",
        f"VerifiedTokenCache.verify, token seen before: {per_call(cached.verify):.1f} µs",
    ]
    verifier: AccessTokenVerifier = cached
    for label, settings in (
        ("machine-shared file", setup.settings(redis_url=None)),
        ("redis, shared tier (no near cache)", setup.settings()),
    ):

        async def measure(settings: Settings = settings) -> float:
            stores = build_stores(settings.cache, SystemClock())
            state = SecurityState(
                stores.shared,
                stores.channel,
                load_subject=_stub_record,
                load_session=_stub_session,
            )
            authenticator = TokenAuthenticator(verifier, state)
            try:
                await authenticator.authenticate(token)
                begun = time.perf_counter()
                for _ in range(rounds):
                    await authenticator.authenticate(token)
                return (time.perf_counter() - begun) / rounds * 1e6
            finally:
                await stores.general.close()
                await stores.shared.close()

        out.append(
            f"TokenAuthenticator.authenticate, warm, {label}, one at a time: "
            f"{asyncio.run(measure()):.0f} µs"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- report


def report(result: Result, store: str) -> None:
    print(
        f"== authenticated GET {PATH} (keel's app, SQLite, {store}, every check on) vs "
        f"bare FastAPI /livez and keel's own /livez on the same server: {h.load_tool()} "
        f"-c{result.connections} -d{result.duration:.0f}s, alternating, medians =="
    )
    rows = []
    for _workers, me, keel_livez, bare in result.series:
        rows += [me.row(bare), keel_livez.row(bare), bare.row(bare)]
    print(h.table(h.SERIES_HEADERS, rows))
    for workers, me, keel_livez, bare in result.series:
        share = me.rps / bare.rps if bare.rps else 0.0
        line = (
            f"{workers}w: keel {PATH} at {share * 100:.0f} % of bare /livez "
            f"({h.ratio(me.rps, keel_livez.rps)} of keel's own /livez)"
        )
        if workers >= 2:
            verdict = "met" if share >= 0.70 else f"missed by {(0.70 - share) * 100:.0f} points"
            line += f" (target >= 70 %: {verdict})"
        else:
            stalled = any(run.socket_errors for run in me.runs)
            verdict = "met" if me.p99 <= 100 and not stalled else "missed"
            line += f"; p99 {me.p99:.1f} ms, socket errors {stalled} (target <= 100 ms: {verdict})"
        print(line)
    print("preflight: " + "; ".join(result.checks))
    print("load average: " + "; ".join(result.loadavg))
    for note in result.notes:
        print(f"note: {note}")
    h.print_findings(result.servers)


def run(
    *,
    duration: float = 10.0,
    connections: int = 64,
    pairs: int = 2,
    worker_counts: tuple[int, ...] = (2, 1),
    redis_url: str = DEFAULT_REDIS,
    directory: Path,
) -> Result:
    key_file = directory / "keys.json"
    if not key_file.exists():
        generate_key_file(key_file, "EdDSA")
    setup = Setup(directory, key_file, redis_url)
    result = Result(duration, connections)
    for workers in worker_counts:
        run_for_workers(workers, setup, pairs, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS,
        help="Redis for keel's state; '' for the embedded default (the machine-shared file)",
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, help="seconds of profiled load per route (0: skip)"
    )
    args = parser.parse_args(argv)
    h.require_wrk()
    with tempfile.TemporaryDirectory(prefix="keel-bench-me-") as tmp:
        directory = Path(tmp)
        try:
            result = run(
                duration=args.duration,
                connections=args.connections,
                pairs=args.pairs,
                worker_counts=tuple(args.workers),
                redis_url=args.redis_url,
                directory=directory,
            )
        except h.BenchError as exc:
            print(f"bench users_me: {exc}", file=sys.stderr)
            return 1
        report(result, "Redis" if args.redis_url else "the machine-shared state file (no Redis)")
        setup = Setup(directory, directory / "keys.json", args.redis_url)
        print()
        print("== the auth steps alone (no HTTP) ==")
        print(micro(setup))
        if args.profile:
            print()
            print(profile(setup, args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
