"""Authenticated ``GET /users/me`` throughput vs the bare-FastAPI ceiling, every check on.

Until the accounts ``/users/me`` route lands, the route measured is this
module's own ``GET /users/me`` (factory ``bench.users_me:create``): keel's full
stack (middleware, lifespan, error mapping) with the real
``BearerAuthenticator`` in front of a handler that returns the principal. Each
request pays for every check a real one does: the token's signature and
claims (through ``VerifiedTokenCache``, as production wires it: the
signature of a token this worker has already verified is not re-computed;
``--verify-every-request`` turns that off), the subject state from the cache
store, and the two deny-list lookups (``revoked:jti``, ``revoked:sid``). The
subject-state loader stands in for the database; every call to it is counted
(the warm path must make none). A preflight proves the checks are live: no
token, a tampered signature and (with Redis) a jti revoked by another process
are all refused before anything is timed.

Servers run like production (``keel serve``, gunicorn + uvicorn workers,
logs at WARNING), with a shared key file and, by default, the real Redis
(``--store memory``: the in-process store). Measured with
``wrk --latency -t2 -c64`` in alternating runs against ``bench.bare_app``'s
``/livez`` (the ceiling) and keel's own ``/livez`` on the same server (keel's
stack without authentication), on 2 workers, then on 1 for p99.
``--profile S`` serves the app with uvicorn inside this process and profiles
the server thread with cProfile for S seconds of wrk load on ``/users/me``
and then on ``/livez``: the difference is what authentication costs, by
library. ``--gc-freeze`` is an experiment (``gc.freeze()`` in each worker).

    python bench/users_me.py [--duration 10] [--connections 64] [--pairs 2]
                             [--workers 2 1] [--store redis|memory] [--redis-url URL]
                             [--verify-every-request] [--gc-freeze] [--profile 5]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import http.client
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
import uvloop
from fastapi import APIRouter, Depends, FastAPI

from bench import _harness as h
from keel._clock import SystemClock
from keel.api.app import create_app
from keel.api.bearer import BearerAuthenticator, BearerPrincipal
from keel.api.jwks import jwks_router
from keel.api.middleware import no_store
from keel.api.principal import Principal, current_principal
from keel.auth import SubjectState, TokenAuthenticator, VerifiedTokenCache, revoke_token
from keel.cache import RedisStore, build_store
from keel.db import migrate
from keel.security.keys import generate_key_file, load_key_set
from keel.security.tokens import AccessTokens, AccessTokenVerifier
from keel.settings import Settings

__all__ = ["SUBJECT", "create", "main"]

SUBJECT = "5b0e8c8e-2f4e-4c3e-9a57-00000000be9c"
PATH = "/users/me"
LOADS_FILE_ENV = "BENCH_LOADS_FILE"
EVERY_REQUEST_ENV = "BENCH_VERIFY_EVERY_REQUEST"
GC_FREEZE_ENV = "BENCH_GC_FREEZE"
ISSUER = "https://keel.bench"
WARMUP_SECONDS = 2.0
DEFAULT_REDIS = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_STATE = SubjectState(
    active=True, tokens_valid_after=datetime(2000, 1, 1, tzinfo=UTC), scopes=frozenset({"user"})
)


# --------------------------------------------------------------------------- the app


def _loader(loads_file: str | None) -> Callable[[str], Awaitable[SubjectState | None]]:
    async def load(subject_id: str) -> SubjectState | None:
        # The stand-in for the database read; each call is one line in the loads file.
        if loads_file:
            with open(loads_file, "a") as out:  # noqa: ASYNC230 - rare, bench only
                out.write(f"{os.getpid()} {subject_id}\n")
        return _STATE if subject_id == SUBJECT else None

    return load


def create(settings: Settings) -> FastAPI:
    """keel with bearer authentication and a ``GET /users/me`` that returns the principal."""
    clock = SystemClock()
    keys = load_key_set(settings.tokens, production=settings.is_production)
    tokens = AccessTokens(keys, settings.tokens, clock=clock)
    verifier: AccessTokenVerifier = tokens
    if not os.environ.get(EVERY_REQUEST_ENV):
        verifier = VerifiedTokenCache(tokens, clock=clock)  # as production wires it
    authenticator = BearerAuthenticator(
        TokenAuthenticator(verifier, _loader(os.environ.get(LOADS_FILE_ENV)))
    )
    router = APIRouter(dependencies=[Depends(no_store)])  # SEC-58, as the real route will

    @router.get(PATH)
    async def users_me(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> dict[str, Any]:
        session = principal.session_id if isinstance(principal, BearerPrincipal) else None
        return {"id": principal.subject, "scopes": sorted(principal.scopes), "session": session}

    app = create_app(
        settings, routers=[jwks_router(keys), router], clock=clock, authenticator=authenticator
    )
    if os.environ.get(GC_FREEZE_ENV):
        # An experiment, not keel's behaviour: move everything built so far out of the
        # collector's reach, so a full collection no longer walks the whole heap (p99).
        gc.collect()
        gc.freeze()
    return app


# --------------------------------------------------------------------------- setup


@dataclass
class Setup:
    """What every server of one run shares: the key file, the store, the loads file."""

    directory: Path
    key_file: Path
    loads_file: Path
    redis_url: str | None
    verify_every_request: bool = False
    gc_freeze: bool = False

    def env(self) -> tuple[tuple[str, str], ...]:
        pairs = [
            ("KEEL_JWT_KEY_FILE", str(self.key_file)),
            ("KEEL_JWT_ISSUER", ISSUER),
            (LOADS_FILE_ENV, str(self.loads_file)),
        ]
        if self.redis_url:
            pairs.append(("REDIS_URL", self.redis_url))
        if self.verify_every_request:
            pairs.append((EVERY_REQUEST_ENV, "1"))
        if self.gc_freeze:
            pairs.append((GC_FREEZE_ENV, "1"))
        return tuple(pairs)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "jwt_key_file": str(self.key_file),
            "jwt_issuer": ISSUER,
            "redis_url": self.redis_url,
            "database_url": f"sqlite:///{self.directory / 'profile.sqlite3'}",
            "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(**values)

    def tokens(self) -> AccessTokens:
        settings = self.settings()
        keys = load_key_set(settings.tokens, production=False)
        return AccessTokens(keys, settings.tokens)

    def token(self, session: str = "bench-session") -> str:
        return self.tokens().issue(subject=SUBJECT, session_id=session, scopes=["user"]).token

    def loads(self) -> int:
        try:
            return len(self.loads_file.read_text().splitlines())
        except FileNotFoundError:
            return 0


def keel_spec(label: str, setup: Setup, workers: int) -> h.ServerSpec:
    return h.ServerSpec(label, "bench.users_me:create", workers, "WARNING", None, True, setup.env())


# --------------------------------------------------------------------------- load


def run_wrk(
    url: str, *, token: str | None, duration: float, connections: int, threads: int = 2
) -> h.WrkResult:
    """``wrk --latency`` with the bearer header (the harness's ``run_wrk`` sends none)."""
    wrk = h.require_wrk()
    seconds = max(1, round(duration))
    argv = [wrk, "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout=5s"]
    if token is not None:
        argv += ["-H", f"Authorization: Bearer {token}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise h.BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return h.parse_wrk(done.stdout)


@dataclass
class Series:
    label: str
    runs: list[h.WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return h.median([r.rps for r in self.runs])

    @property
    def p50(self) -> float:
        return h.median([r.p50_ms for r in self.runs])

    @property
    def p99(self) -> float:
        return h.median([r.p99_ms for r in self.runs])


@dataclass
class Result:
    duration: float
    connections: int
    store: str
    # workers, keel /users/me, keel's own /livez (same server), bare /livez
    series: list[tuple[int, Series, Series, Series]] = field(default_factory=list)
    loads: dict[int, int] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    servers: list[h.Server] = field(default_factory=list)


def _http(server: h.Server, token: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(h.HOST, server.port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", PATH, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def preflight(server: h.Server, setup: Setup, token: str, result: Result) -> None:
    """Prove every check is on before timing anything."""
    status, body = _http(server, token)
    if status != 200 or SUBJECT.encode() not in body:
        raise h.BenchError(f"{server.spec.label}: GET {PATH} with the token gave {status}")
    anonymous, _ = _http(server, None)
    tampered, _ = _http(server, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    checks = [f"no token -> {anonymous}", f"tampered signature -> {tampered}"]
    if setup.redis_url:
        issued = setup.tokens().issue(subject=SUBJECT, session_id="bench-revoked", scopes=[])

        async def revoke() -> None:
            store = RedisStore(setup.redis_url or "", namespace="keel:", timeout=1.0)
            try:
                await revoke_token(store, issued.jti, issued.expires_at, clock=SystemClock())
            finally:
                await store.close()

        asyncio.run(revoke())
        revoked, _ = _http(server, issued.token)
        checks.append(f"revoked jti (written to Redis by another process) -> {revoked}")
        if revoked != 401:
            raise h.BenchError("a revoked token was accepted: the deny-list is not consulted")
    if anonymous != 401 or tampered != 401:
        raise h.BenchError(f"{server.spec.label}: checks failed: {checks}")
    result.checks = checks


def _measure(
    server: h.Server, path: str, token: str | None, series: Series, result: Result
) -> None:
    run = run_wrk(
        server.url + path, token=token, duration=result.duration, connections=result.connections
    )
    series.runs.append(run)
    if run.socket_errors or run.non_2xx:
        result.notes.append(
            f"{series.label}: {run.socket_errors} socket errors, {run.non_2xx} non-2xx "
            f"in {run.requests} requests"
        )


def run_for_workers(workers: int, setup: Setup, pairs: int, result: Result) -> None:
    specs = [
        keel_spec("keel /users/me", setup, workers),
        h.bare_spec("bare /livez", workers=workers),
    ]
    keel, keel_livez = Series(f"{workers}w keel {PATH}"), Series(f"{workers}w keel /livez")
    bare = Series(f"{workers}w bare /livez")
    token = setup.token()
    with h.servers(*specs) as running:
        result.servers.extend(running)
        for server in running:
            server.wait_ready("/livez")
        preflight(running[0], setup, token, result)
        h.warm(running[1].url + "/livez", requests=400)
        run_wrk(running[0].url + PATH, token=token, duration=WARMUP_SECONDS, connections=64)
        run_wrk(running[1].url + "/livez", token=None, duration=WARMUP_SECONDS, connections=64)
        before = setup.loads()
        for _ in range(pairs):
            _measure(running[0], PATH, token, keel, result)
            _measure(running[1], "/livez", None, bare, result)
            _measure(running[0], "/livez", None, keel_livez, result)
        result.loads[workers] = setup.loads() - before
    result.series.append((workers, keel, keel_livez, bare))


# --------------------------------------------------------------------------- profile


_BUCKETS: tuple[tuple[str, str], ...] = (
    ("/keel/auth/", "keel.auth (state, deny-list)"),
    ("/keel/api/bearer", "keel.api bearer/principal"),
    ("/keel/api/principal", "keel.api bearer/principal"),
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
    """Serve the app with uvicorn in this process; profile its thread while wrk loads ``path``."""
    # The profiler slows the loop several-fold: give Redis time to answer, or the store
    # would fall back to memory (cache_degraded) and the profile would lie.
    settings = setup.settings(cache_timeout=5.0)
    migrate.upgrade(settings.database)  # the schema warm-up then has nothing to report
    if setup.verify_every_request:
        os.environ[EVERY_REQUEST_ENV] = "1"
    app = create(settings)
    token = setup.token() if path == PATH else None
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
            url = f"http://{h.HOST}:{port}{path}"
            run_wrk(url, token=token, duration=WARMUP_SECONDS, connections=64)
            # cProfile follows one thread: switch it on and off from the server's own loop.
            loops[0].call_soon_threadsafe(profiler.enable)
            measured.append(run_wrk(url, token=token, duration=seconds, connections=64))
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
    # Requests the profiler saw: each gets one fresh request id (wrk sends no X-Request-ID).
    # (Not an async function: cProfile counts every resumption of a coroutine as a call.)
    served = 0
    for (filename, _line, name), (_cc, calls, tottime, cumtime, _callers) in raw.items():
        buckets[_bucket(filename, name)] += tottime
        top.append((tottime, calls, cumtime, f"{Path(filename).name}:{name}"))
        if filename.endswith("request_context.py") and name == "new_request_id":
            served = calls
    top.sort(reverse=True)
    requests = served or measured[0].requests
    return Profiled(path, measured[0].rps, requests, dict(buckets), top[:15])


def profile(setup: Setup, seconds: float) -> str:
    """Where the time goes: the server thread under cProfile, ``/users/me`` vs keel's ``/livez``.

    One uvicorn worker in this process (uvloop, httptools, as ``keel serve``
    runs it), loaded by wrk at 64 connections. cProfile roughly doubles the cost
    of Python-heavy code: read the shares and the difference, not the absolutes.
    """
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
    mode = "signature every request" if setup.verify_every_request else "VerifiedTokenCache"
    store = "redis" if setup.redis_url else "memory"
    lines = [
        f"== server-side profile: uvicorn in-process under cProfile, wrk -c64 -d{seconds:.0f}s; "
        f"store={store}, {mode} ==",
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


def micro(setup: Setup, rounds: int = 2000) -> str:
    """The auth steps alone, without HTTP: verify, then the whole check with each store."""
    tokens = setup.tokens()
    token = setup.token()
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
    verifier: AccessTokenVerifier = tokens if setup.verify_every_request else cached
    authenticator = TokenAuthenticator(verifier, _loader(None))
    backends = [("memory", setup.settings(redis_url=None))]
    if setup.redis_url:
        backends.append(("redis", setup.settings()))
    for label, settings in backends:

        async def measure(settings: Settings = settings) -> float:
            store = build_store(settings.cache, SystemClock(), namespace="keelbench:")
            try:
                await authenticator.authenticate(token, store)
                begun = time.perf_counter()
                for _ in range(rounds):
                    await authenticator.authenticate(token, store)
                return (time.perf_counter() - begun) / rounds * 1e6
            finally:
                await store.close()

        out.append(
            f"TokenAuthenticator.authenticate, warm, {label} store, one at a time "
            f"(3 cache reads): {asyncio.run(measure()):.0f} µs"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- report


def report(result: Result) -> None:
    print(
        f"== authenticated GET {PATH} (bench.users_me factory; every check on, store="
        f"{result.store}) vs bare FastAPI /livez and keel's own /livez on the same server: "
        f"wrk --latency -t2 -c{result.connections} -d{result.duration:.0f}s, alternating, "
        "medians =="
    )
    rows = []
    for _workers, keel, keel_livez, bare in result.series:
        for series in (keel, keel_livez, bare):
            rows.append(
                [
                    series.label,
                    f"{series.rps:,.0f}",
                    f"{series.p50:.2f}",
                    f"{series.p99:.2f}",
                    h.ratio(series.rps, bare.rps),
                    h.ratio(series.rps, keel_livez.rps),
                    " / ".join(f"{r.rps:,.0f}" for r in series.runs),
                ]
            )
    headers = ["", "req/s", "p50 ms", "p99 ms", "vs bare", "vs keel /livez", "runs (req/s)"]
    print(h.table(headers, rows))
    for workers, keel, _keel_livez, bare in result.series:
        share = keel.rps / bare.rps if bare.rps else 0.0
        line = f"{workers}w: keel {PATH} at {share * 100:.0f} % of bare"
        if workers >= 2:
            verdict = "met" if share >= 0.70 else f"missed by {(0.70 - share) * 100:.0f} points"
            line += f" (target >= 70 %: {verdict})"
        else:
            verdict = "met" if keel.p99 <= 100 else "missed"
            line += f"; p99 {keel.p99:.1f} ms (target <= 100 ms: {verdict})"
        print(line)
        print(
            f"{workers}w: subject-state loads (database stand-in) during the measured runs: "
            f"{result.loads.get(workers, 0)}"
        )
    print("preflight: " + "; ".join(result.checks))
    for note in result.notes:
        print(f"note: {note}")
    h.print_findings(result.servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument(
        "--profile", type=float, default=5.0, help="seconds of profiled load per route (0: skip)"
    )
    parser.add_argument(
        "--verify-every-request",
        action="store_true",
        help="no VerifiedTokenCache: check the signature on every request",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="experiment: gc.freeze() in each worker after the app is built",
    )
    args = parser.parse_args(argv)
    h.require_wrk()
    with tempfile.TemporaryDirectory(prefix="keel-bench-me-") as tmp:
        directory = Path(tmp)
        key_file = directory / "keys.json"
        generate_key_file(key_file, "EdDSA")
        setup = Setup(
            directory,
            key_file,
            directory / f"loads-{secrets.token_hex(4)}.txt",
            args.redis_url if args.store == "redis" else None,
            args.verify_every_request,
            args.gc_freeze,
        )
        mode = "signature every request" if args.verify_every_request else "VerifiedTokenCache"
        if args.gc_freeze:
            mode += ", gc.freeze() experiment"
        result = Result(args.duration, args.connections, f"{args.store}, {mode}")
        try:
            for workers in args.workers:
                run_for_workers(workers, setup, args.pairs, result)
        except h.BenchError as exc:
            print(f"bench users_me: {exc}", file=sys.stderr)
            return 1
        report(result)
        print()
        print("== the auth steps alone (no HTTP) ==")
        print(micro(setup))
        if args.profile:
            print()
            print(profile(setup, args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
