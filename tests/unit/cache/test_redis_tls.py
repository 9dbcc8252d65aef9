"""``rediss://`` with a self-signed certificate, as Heroku Redis serves it.

A private ``redis-server`` listens with TLS on a certificate ``openssl`` made
for this test. keel verifies certificates unless ``KEEL_REDIS_TLS_VERIFY`` is
false: then the connection is still encrypted, but the certificate is not checked.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster, SSLConnection

from keel._clock import SystemClock
from keel.cache import RedisStore
from keel.cache._redis_client import new_client, subscriber_connection
from keel.cache.factory import build_stores
from keel.errors import CacheUnavailable
from keel.settings import Settings
from tests.unit.cache._servers import RedisServer, free_port, require_programs


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A private Redis answering TLS on a self-signed certificate; yields its rediss:// URL."""
    require_programs("redis-server", "openssl")
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=redis.invalid"
    subprocess.run(
        [*openssl.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tls_port = free_port()
    server = RedisServer(
        free_port(),
        tmp_path,
        extra_args=[
            *("--tls-port", str(tls_port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert)),
        ],
    )
    server.start()
    try:
        yield f"rediss://127.0.0.1:{tls_port}/0"
    finally:
        server.kill()


def _chain(exc: BaseException | None) -> str:
    """Every message along the ``__cause__`` / ``__context__`` chain."""
    seen: list[str] = []
    while exc is not None and len(seen) < 20:
        seen.append(repr(exc))
        exc = exc.__cause__ or exc.__context__
    return " | ".join(seen)


def test_tls_verification_is_on_by_default_and_off_only_when_asked() -> None:
    url = "rediss://:pw@cache.example:6380/0"
    verified = new_client(url, cluster=False, timeout=0.5, max_connections=2)
    unverified = new_client(url, cluster=False, timeout=0.5, max_connections=2, tls_verify=False)
    assert isinstance(verified, Redis)
    assert isinstance(unverified, Redis)
    on = verified.connection_pool.connection_kwargs
    off = unverified.connection_pool.connection_kwargs
    assert verified.connection_pool.connection_class is SSLConnection
    assert on.get("ssl_cert_reqs", "required") == "required"
    assert on.get("ssl_check_hostname", True) is not False
    assert (off["ssl_cert_reqs"], off["ssl_check_hostname"]) == ("none", False)

    conn = subscriber_connection(url, timeout=0.5, tls_verify=False)
    assert isinstance(conn, SSLConnection)
    context = conn.ssl_context
    assert (context.cert_reqs, context.check_hostname) == (ssl.CERT_NONE, False)
    strict = subscriber_connection(url, timeout=0.5)
    assert isinstance(strict, SSLConnection)
    assert strict.ssl_context.cert_reqs == ssl.CERT_REQUIRED


def test_a_cluster_client_takes_the_same_tls_choice() -> None:
    cluster = new_client(
        "rediss://node-1.cache:7000", cluster=True, timeout=0.5, max_connections=2, tls_verify=False
    )
    assert isinstance(cluster, RedisCluster)
    kwargs = cluster.nodes_manager.connection_kwargs
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == ("none", False)


def test_plain_redis_urls_are_untouched_by_the_tls_setting() -> None:
    client = new_client(
        "redis://127.0.0.1:6379/0", cluster=False, timeout=0.5, max_connections=2, tls_verify=False
    )
    assert isinstance(client, Redis)
    assert "ssl_cert_reqs" not in client.connection_pool.connection_kwargs


async def test_a_self_signed_redis_is_refused_while_verification_is_on(tls_redis: str) -> None:
    store = RedisStore(tls_redis, timeout=2.0)
    try:
        with pytest.raises(CacheUnavailable) as caught:
            await store.ping()
        assert "CERTIFICATE_VERIFY_FAILED" in _chain(caught.value)
    finally:
        await store.close()


async def test_a_self_signed_redis_serves_keel_when_verification_is_off(
    tls_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", tls_redis)
    monkeypatch.setenv("KEEL_REDIS_TLS_VERIFY", "false")
    monkeypatch.setenv("KEEL_CACHE_TIMEOUT", "2")
    stores = build_stores(Settings().cache, SystemClock())
    try:
        await stores.shared.set("tls-probe", b"sealed", ttl=30)
        assert await stores.shared.get("tls-probe") == b"sealed"
        assert await stores.general.incr("tls-counter", ttl=30) == 1
    finally:
        await stores.shared.close()
        await stores.general.close()

    # The subscriber's own connection goes over the same TLS, unverified.
    conn = subscriber_connection(tls_redis, timeout=2.0, tls_verify=False)
    await conn.connect()  # type: ignore[no-untyped-call]
    try:
        await conn.send_command("PING")
        assert await conn.read_response() == b"PONG"
    finally:
        await conn.disconnect()
