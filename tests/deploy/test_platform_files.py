"""compose.yaml, render.yaml, Procfile and app.json: their structure, the commands they run,
and that what each platform hands keel passes ``keel check`` in production.

Every command is parsed by keel's own argument parser (an unknown command or a
wrong argument fails here, not at deploy time) and named in ``keel --help``.
Every variable is one keel reads. For each platform the environment it would
build (its database and Redis URL forms, its generated secrets, the values the
files set) gives no ``keel check`` error.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.cli import build_parser
from keel.security.checks import all_findings
from keel.settings import Settings, variables
from tests._environment import PLATFORM_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
KEEL = Path(sys.executable).parent / "keel"


def _load_yaml(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text())


def _keel_help() -> str:
    return subprocess.run(
        [str(KEEL), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def _assert_keel_command(command: str | list[str], help_text: str) -> None:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[0] == "keel", argv
    assert argv[1] in help_text, f"{argv[1]} is not a keel command"
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"keel refuses {argv}: exit {exc.code}")
    assert callable(args.handler)


def _known_variables() -> set[str]:
    return set(PLATFORM_VARIABLES) | set(variables())


pytestmark = pytest.mark.usefixtures("clean_environment")


def _errors_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return [str(f) for f in all_findings(Settings()) if f.is_error]


def _generated() -> str:
    # What Heroku's "secret" generator and Render's generateValue give: 256 random bits.
    return secrets.token_hex(32)


# --- compose -----------------------------------------------------------------------------


def test_compose_migrates_once_before_keel_starts_after_healthy_backends() -> None:
    compose = _load_yaml("compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "keel"}
    for backend in ("postgres", "redis"):
        assert services[backend]["healthcheck"]["test"][0] == "CMD"
    assert services["migrate"]["command"] == ["keel", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["keel"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    for name in ("migrate", "keel"):
        service = services[name]
        assert service["env_file"] == ".env"
        assert service["image"] == "keel:local"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert "@postgres:5432/keel" in service["environment"]["DATABASE_URL"]
    # The init script the database mounts exists and is executable.
    for volume in services["postgres"]["volumes"]:
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            assert os.access(ROOT / source, os.X_OK), source


def test_compose_commands_are_keel_commands() -> None:
    help_text = _keel_help()
    services = _load_yaml("compose.yaml")["services"]
    for name in ("migrate", "keel"):
        _assert_keel_command(services[name]["command"], help_text)


def test_compose_secrets_come_only_from_the_ignored_env_file() -> None:
    raw = (ROOT / "compose.yaml").read_text()
    example = (ROOT / ".env.example").read_text()
    for secret in ("SECRET_KEY", "KEEL_AUDIT_KEY", "KEEL_JWT_SECRET", "KEEL_SMTP_PASSWORD"):
        assert secret not in raw
        assert f"\n{secret}=\n" in example  # present, and empty: nothing to copy by mistake
    assert "/.env" in (ROOT / ".gitignore").read_text().splitlines()
    variables = [ln.split("=", 1)[0] for ln in example.splitlines() if "=" in ln]
    assert set(variables) - {"POSTGRES_PASSWORD"} <= _known_variables()


def test_compose_environment_passes_production_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"KEEL_ENV": "production"}  # the image's default
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value or _generated()
    keel = _load_yaml("compose.yaml")["services"]["keel"]
    for key, value in keel["environment"].items():
        env[key] = value.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}", "pw")
    assert _errors_for(env, monkeypatch) == []


def test_the_proxy_overlay_puts_the_shipped_nginx_site_on_keels_loopback() -> None:
    """compose.proxy.yaml: nginx with deploy/nginx/keel.conf (tested for real in
    tests/deploy/test_vm_files.py) in keel's network namespace, so the site's upstream
    127.0.0.1:8000 is keel and keel's default trusted proxies (loopback) are nginx."""
    overlay = _load_yaml("compose.proxy.yaml")["services"]
    base = _load_yaml("compose.yaml")["services"]
    assert set(overlay) == {"keel", "proxy"}
    proxy = overlay["proxy"]
    assert proxy["network_mode"] == "service:keel"
    assert proxy["depends_on"] == {"keel": {"condition": "service_healthy"}}
    sources = {v.split(":", 1)[0]: v.split(":")[-2] for v in proxy["volumes"]}
    site = next(src for src, dst in sources.items() if dst == "/etc/nginx/conf.d/default.conf")
    shipped = (ROOT / site).read_text()
    assert "server 127.0.0.1:8000;" in shipped
    certificates = next(dst for dst in sources.values() if dst.startswith("/etc/letsencrypt/"))
    assert f"ssl_certificate     {certificates}/fullchain.pem;" in shipped
    assert f"ssl_certificate_key {certificates}/privkey.pem;" in shipped
    # nginx's ports are published by the service whose network it shares.
    assert [p.rsplit(":", 1)[1] for p in overlay["keel"]["ports"]] == ["80", "443"]
    assert "KEEL_BIND" not in base["keel"]["environment"]  # the image binds 0.0.0.0:8000
    # keel believes nginx's X-Forwarded-* only because nginx connects from loopback.
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    trusted = Settings(trusted_proxies=example["KEEL_TRUSTED_PROXIES"]).http.trusted_proxies
    assert any(ipaddress.ip_address("127.0.0.1") in network for network in trusted)
    raw = (ROOT / "compose.proxy.yaml").read_text()
    for secret in ("SECRET_KEY", "KEEL_AUDIT_KEY", "KEEL_JWT_SECRET", "PASSWORD"):
        assert secret not in raw


# --- Render ------------------------------------------------------------------------------


def test_render_blueprint_has_the_web_service_database_and_key_value() -> None:
    blueprint = _load_yaml("render.yaml")
    (web,) = [s for s in blueprint["services"] if s["type"] == "web"]
    (cache,) = [s for s in blueprint["services"] if s["type"] == "keyvalue"]
    (database,) = blueprint["databases"]
    assert web["runtime"] == "docker"
    assert (ROOT / web["dockerfilePath"]).is_file()
    assert web["healthCheckPath"] == "/readyz"
    assert web["preDeployCommand"] == "keel db upgrade"
    _assert_keel_command(web["preDeployCommand"], _keel_help())
    assert (cache["ipAllowList"], database["ipAllowList"]) == ([], [])  # private only

    variables = {v["key"]: v for v in web["envVars"]}
    assert set(variables) <= _known_variables()
    assert variables["DATABASE_URL"]["fromDatabase"] == {
        "name": database["name"],
        "property": "connectionString",
    }
    assert variables["REDIS_URL"]["fromService"] == {
        "type": "keyvalue",
        "name": cache["name"],
        "property": "connectionString",
    }
    for secret in ("SECRET_KEY", "KEEL_AUDIT_KEY", "KEEL_JWT_SECRET"):
        assert variables[secret] == {"key": secret, "generateValue": True}
    for entry in variables.values():
        # Every value is set, generated, linked, or asked for (never a secret in the file).
        assert {"value", "generateValue", "fromDatabase", "fromService", "sync"} & set(entry)
        if "sync" in entry:
            assert entry["sync"] is False
    assert variables["KEEL_SMTP_PASSWORD"]["sync"] is False


def test_render_environment_passes_production_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    (web,) = [s for s in _load_yaml("render.yaml")["services"] if s["type"] == "web"]
    env = {
        "KEEL_ENV": "production",  # the image's default
        "PORT": "10000",  # Render's
        # What Render links: its internal URL forms.
        "DATABASE_URL": "postgresql://keel:pw@dpg-abc123-a/keel",
        "REDIS_URL": "redis://red-abc123:6379",
        "KEEL_PUBLIC_URL": "https://keel.onrender.com",
        "KEEL_MAIL_FROM": "keel@example.com",
        "KEEL_SMTP_HOST": "smtp.example.com",
    }
    for entry in web["envVars"]:
        if "value" in entry:
            env[entry["key"]] = entry["value"]
        elif entry.get("generateValue"):
            env[entry["key"]] = _generated()
    assert _errors_for(env, monkeypatch) == []


# --- Heroku ------------------------------------------------------------------------------


def test_procfile_releases_with_migrations_and_serves() -> None:
    entries = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert {k: v.strip() for k, v in entries.items()} == {
        "release": "keel db upgrade",
        "web": "keel serve",
    }
    help_text = _keel_help()
    for command in entries.values():
        _assert_keel_command(command.strip(), help_text)


def test_app_json_declares_addons_and_generates_every_secret() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert {addon["plan"] for addon in app["addons"]} == {"heroku-postgresql", "heroku-redis"}
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    env = app["env"]
    assert set(env) <= _known_variables()
    for secret in ("SECRET_KEY", "KEEL_AUDIT_KEY", "KEEL_JWT_SECRET"):
        assert env[secret]["generator"] == "secret"
    for entry in env.values():
        assert "value" in entry or "generator" in entry or "required" in entry
    assert env["KEEL_PUBLIC_URL"]["required"] is True


def test_heroku_environment_passes_production_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        # What Heroku's add-ons and dynos set.
        "DATABASE_URL": "postgres://u1:p2@ec2-3-4-5-6.compute-1.amazonaws.com:5432/d7",
        "REDIS_URL": "rediss://:p3@ec2-7-8-9-10.compute-1.amazonaws.com:12345",
        "PORT": "43117",
        "WEB_CONCURRENCY": "2",
        "KEEL_PUBLIC_URL": "https://keel.herokuapp.com",
        "KEEL_MAIL_FROM": "keel@example.com",
        "KEEL_SMTP_HOST": "smtp.example.com",
    }
    for key, entry in json.loads((ROOT / "app.json").read_text())["env"].items():
        if "value" in entry:
            env[key] = entry["value"]
        elif entry.get("generator") == "secret":
            env[key] = _generated()
    assert _errors_for(env, monkeypatch) == []
    settings = Settings()
    assert (settings.server.port, settings.server.workers) == (43117, 2)
    assert settings.database.url.get_secret_value().startswith("postgresql+asyncpg://")
    assert settings.database.query["sslmode"] == "require"
    assert settings.cache.tls_verify is False
