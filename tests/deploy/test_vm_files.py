"""deploy/systemd/keel.service and deploy/nginx/keel.conf, the bare-VM guide's files.

The unit is checked by ``systemd-analyze verify`` (with its ``ExecStart`` pointed
at this checkout's ``keel``) and by what it must say for keel's shutdown to be
clean. The nginx file passes ``nginx -t``, then runs for real in front of a real
``keel serve``: a request over TLS reaches keel with the client's address and
scheme as nginx saw them (SEC-16: what the client wrote in ``X-Forwarded-For``
or ``X-Request-ID`` is not believed; SEC-57: keel sends HSTS), and plain HTTP
redirects only a navigation without credentials (SEC-60). That runs on the
embedded default and on PostgreSQL with Redis.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from keel.audit.models import AuditEventRow
from keel.cli import build_parser
from keel.db import Database, migrate
from keel.settings import Settings
from tests.deploy._nginx import nginx_files, nginx_test, require_nginx, running_nginx
from tests.runtime._harness import free_port, running_server

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "keel.service"
KEEL = Path(sys.executable).parent / "keel"
PASSWORD = "correct horse battery staple 42"
CLIENT = "127.0.0.3"  # not in keel's trusted proxies (127.0.0.1/32, ::1/128)
FORGED = "203.0.113.9"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the structural test still runs)")
    text = UNIT.read_text(encoding="utf-8")
    assert text.count("/opt/keel/bin/keel") == 1
    unit = tmp_path / "keel.service"
    unit.write_text(text.replace("/opt/keel/bin/keel", str(KEEL)), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # Unknown keys and bad values are only warnings to systemd: any output is a failure here.
    assert result.returncode == 0, result.stderr
    assert str(unit) not in result.stderr + result.stdout, result.stderr


def test_the_systemd_unit_serves_keel_and_lets_it_drain() -> None:
    service = _unit()["Service"]
    command = service["ExecStart"].split()
    assert command[0].endswith("/keel")
    assert command[1:] == ["serve"]
    build_parser().parse_args(command[1:])
    # gunicorn's master (this process) notifies readiness and forwards SIGTERM to its workers.
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    # systemd must not SIGKILL before keel's own graceful timeout (30 s, the drain included).
    assert int(service["TimeoutStopSec"]) > Settings().server.graceful_timeout
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["WorkingDirectory"] in service["ReadWritePaths"].split()
    assert service["User"] != "root"


def test_nginx_accepts_the_shipped_configuration(tmp_path: Path) -> None:
    binary = require_nginx()
    files = nginx_files(tmp_path, http_port=free_port(), https_port=free_port(), upstream_port=8000)
    result = nginx_test(binary, files)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_refuses_a_broken_copy(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive in the same files is refused."""
    binary = require_nginx()
    files = nginx_files(tmp_path, http_port=free_port(), https_port=free_port(), upstream_port=8000)
    conf = files.directory / "keel.conf"
    conf.write_text(conf.read_text().replace("proxy_read_timeout", "proxy_read_timout"))
    assert nginx_test(binary, files).returncode != 0


def _directives(text: str) -> dict[str, list[str]]:
    """Each directive's values in the order they appear (comments dropped)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        statement = line.split("#", 1)[0].strip()
        if statement.endswith(";"):
            name, _, value = statement[:-1].partition(" ")
            found.setdefault(name, []).append(value.strip())
    return found


def _seconds(value: str) -> float:
    number = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    assert number is not None, value
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[number.group(2)]
    return int(number.group(1)) * scale


def _bytes(value: str) -> int:
    number = re.fullmatch(r"(\d+)([kKmM]?)", value)
    assert number is not None, value
    return int(number.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[number.group(2).lower()]


def test_the_nginx_site_sits_inside_keels_limits_and_timeouts() -> None:
    """nginx gives up or closes before keel does, and lets keel's own refusals through."""
    text = (ROOT / "deploy" / "nginx" / "keel.conf").read_text(encoding="utf-8")
    conf = _directives(text)
    settings = Settings()
    upstream = text.split("upstream keel {", 1)[1].split("}", 1)[0]
    (idle,) = _directives(upstream)["keepalive_timeout"]
    # An idle upstream connection is closed by nginx first: never reused as keel closes it.
    assert _seconds(idle) < settings.server.keepalive
    # A slow request gets keel's own 504 problem+json, not nginx's page.
    (read,) = conf["proxy_read_timeout"]
    assert _seconds(read) > settings.http.request_timeout
    # Bodies and heads just over keel's bounds reach keel, which refuses them (413, 431).
    (body,) = conf["client_max_body_size"]
    assert _bytes(body) > settings.http.max_body_bytes
    (buffers,) = conf["large_client_header_buffers"]
    assert _bytes(buffers.split()[1]) >= settings.server.max_header_bytes
    headers = {value.split()[0]: value.split()[1] for value in conf["proxy_set_header"]}
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Request-ID"] == "$request_id"
    # Only what never reached keel is retried: no request is ever sent twice.
    assert conf["proxy_next_upstream"] == ["error"]


def _access_lines(logs: str, path: str) -> list[dict[str, object]]:
    lines = []
    for line in logs.splitlines():
        if '"http_request"' in line and f'"{path}"' in line:
            record = json.loads(line)
            if record.get("path") == path:
                lines.append(record)
    return lines


def _ready(client: httpx.Client, deadline: float = 30.0) -> None:
    """Poll ``/readyz`` through nginx, as a load balancer would, until keel says ``ok``
    (with Redis, a worker's first connect can time out on a loaded machine: degraded)."""
    end = time.monotonic() + deadline
    while True:
        response = client.get("/readyz")
        ok = response.status_code == 200 and response.json()["status"] == "ok"
        if ok or time.monotonic() > end:
            assert ok, response.text
            return
        time.sleep(0.1)


async def _login_rows(url: str) -> list[tuple[str | None, str | None]]:
    """The source address and request id of every successful login's audit event."""
    database = Database(Settings(database_url=url).database)
    try:
        async with database.unit_of_work() as uow:
            query = select(AuditEventRow.source_ip, AuditEventRow.request_id).where(
                AuditEventRow.action == "authn_login_success"
            )
            return [(row.source_ip, row.request_id) for row in await uow.session.execute(query)]
    finally:
        await database.dispose()


@pytest.mark.runtime
def test_sec_16_sec_57_sec_60_keel_behind_the_shipped_nginx(
    tmp_path: Path, request: pytest.FixtureRequest, database_url: str
) -> None:
    binary = require_nginx()
    asyncio.run(asyncio.to_thread(migrate.upgrade, Settings(database_url=database_url).database))
    env = {
        "WEB_CONCURRENCY": "2",
        "KEEL_REQUIRE_VERIFIED_EMAIL": "false",
        "DATABASE_URL": database_url,
    }
    if not database_url.startswith("sqlite"):
        # The production shape: PostgreSQL and Redis.
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        env["KEEL_CACHE_NAMESPACE"] = request.getfixturevalue("redis_namespace")
    with running_server(tmp_path / "keel", "keel.api.app:create_app", env=env) as keel:
        files = nginx_files(
            tmp_path / "nginx",
            http_port=free_port(),
            https_port=free_port(),
            upstream_port=keel.port,
        )
        context = ssl.create_default_context(cafile=str(files.certificate))
        transport = httpx.HTTPTransport(local_address=CLIENT, verify=context)
        base = f"https://127.0.0.1:{files.https_port}"
        with (
            running_nginx(binary, files),
            httpx.Client(transport=transport, base_url=base, timeout=15.0) as client,
        ):
            _ready(client)

            forged = {"X-Forwarded-For": FORGED, "X-Request-ID": "chosen-by-client"}
            creds = {"email": "ann@example.com", "password": PASSWORD}
            assert client.post("/auth/register", json=creds, headers=forged).status_code == 202
            login = client.post("/auth/login", json=creds, headers=forged)
            assert login.status_code == 200, login.text
            assert login.json()["access_token"]
            # X-Forwarded-Proto: https reached keel: it sends HSTS only on HTTPS requests.
            assert "max-age=" in login.headers["strict-transport-security"]
            # nginx's own request id was kept (a trusted proxy's), the client's was not.
            request_id = login.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id

            # Plain HTTP: a navigation is redirected; a credential is refused, never redirected.
            plain = f"http://127.0.0.1:{files.http_port}"
            redirect = httpx.get(f"{plain}/readyz", timeout=5)
            assert redirect.status_code == 308
            assert redirect.headers["location"].startswith("https://")
            assert httpx.post(f"{plain}/auth/login", json=creds, timeout=5).status_code == 403
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert httpx.get(f"{plain}/users/me", headers=bearer, timeout=5).status_code == 403

        (line,) = _access_lines(keel.logs(), "/auth/login")
        assert line["client_ip"] == CLIENT, line
        assert line["request_id"] == request_id
    assert asyncio.run(_login_rows(database_url)) == [(CLIENT, request_id)]
