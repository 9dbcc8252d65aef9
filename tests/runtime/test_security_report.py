"""``keel security-report --url`` against a real ``keel serve`` (two workers).

On PostgreSQL + Redis, a production-like healthy setup passes every claim
and exits 0. On the embedded default (SQLite, the machine's state file), a
development server with its docs on and a tampered audit row fails exactly
those two claims and exits 1. Either way both files are written, a line per
claim, and nothing the command could not check is a pass.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from keel.cli import main
from keel.db import Database
from keel.db.migrate import upgrade
from keel.report import claims_in_markdown
from keel.settings import Settings
from tests.audit._support import as_superuser
from tests.runtime._harness import running_server

pytestmark = pytest.mark.runtime

#: The claims that may be "not checked" on a healthy setup, and why.
OPTIONAL = {"deps.vulnerabilities"}  # pip-audit is not a dependency of keel


def _prepare(tmp_path: Path, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrate, then make, rotate and promote a signing key (audited) as an operator does."""
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    upgrade(Settings().database)
    key_file = env["KEEL_JWT_KEY_FILE"]
    assert main(["keys", "generate", "--file", key_file]) == 0
    assert main(["keys", "rotate", "--file", key_file]) == 0
    assert main(["keys", "promote", "--force", "--file", key_file]) == 0


def _report(server_url: str, out: Path) -> tuple[int, dict[str, dict[str, Any]], str]:
    status = main(["security-report", "--url", server_url, "--out", str(out)])
    document = json.loads((out / "security-summary.json").read_text(encoding="utf-8"))
    markdown = (out / "SECURITY_SUMMARY.md").read_text(encoding="utf-8")
    claims = {claim["id"]: claim for claim in document["claims"]}
    # The Markdown file states the same claims, in the same order, as the JSON one.
    assert claims_in_markdown(markdown) == [(c["id"], c["claim"]) for c in document["claims"]]
    for claim in document["claims"]:
        assert claim["checked_at"].endswith("Z")
        assert f"| {claim['checked_at']} | **{claim['result']}**" in markdown
    return status, claims, markdown


def _common(tmp_path: Path) -> dict[str, str]:
    return {
        "KEEL_AUDIT_KEY": secrets.token_urlsafe(48),
        "KEEL_JWT_KEY_FILE": str(tmp_path / "signing-keys.json"),
        "KEEL_MAIL_BACKEND": "file",
        "KEEL_MAIL_FILE": str(tmp_path / "mail.jsonl"),
        "KEEL_LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": "2",
    }


@pytest.mark.postgres
@pytest.mark.redis
def test_sec_53_sec_56_sec_63_sec_68_a_healthy_production_instance_passes_every_claim(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    redis_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **_common(tmp_path),
        "KEEL_ENV": "production",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "KEEL_CACHE_NAMESPACE": redis_namespace,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "KEEL_PUBLIC_URL": "https://keel.example",
        "KEEL_DRAIN_SECONDS": "0",
    }
    _prepare(tmp_path, env, monkeypatch)
    with running_server(tmp_path / "server", factory="keel.api.app:create_app", env=env) as server:
        status, claims, markdown = _report(server.base_url, tmp_path / "out")
    assert status == 0, markdown
    results = {name: claim["result"] for name, claim in claims.items()}
    assert {name for name, result in results.items() if result != "pass"} <= OPTIONAL, markdown
    assert all(results[name] in {"pass", "not checked"} for name in OPTIONAL)
    assert "KEEL_ENV=production: no error" in claims["config.findings"]["evidence"]
    assert claims["audit.chain"]["evidence"].startswith("OK 3 events, head 3:")
    assert "signs since" in claims["keys.age"]["evidence"]
    assert len(claims) == 18


def test_sec_53_sec_68_docs_on_and_a_tampered_audit_row_fail_on_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = f"sqlite:///{tmp_path / 'server' / 'keel.sqlite3'}"
    (tmp_path / "server").mkdir()
    env = {**_common(tmp_path), "DATABASE_URL": database_url}  # development: docs on
    _prepare(tmp_path, env, monkeypatch)

    async def tamper() -> None:
        database = Database(Settings().database)
        try:
            await as_superuser(database, "UPDATE audit_events SET actor_id = 'x' WHERE seq = 2")
        finally:
            await database.dispose()

    asyncio.run(tamper())
    with running_server(tmp_path / "server", factory="keel.api.app:create_app", env=env) as server:
        status, claims, markdown = _report(server.base_url, tmp_path / "out")
    assert status == 1
    failed = {name: c["evidence"] for name, c in claims.items() if c["result"] == "fail"}
    assert set(failed) == {"audit.chain", "docs.hidden"}, markdown
    assert failed["audit.chain"].startswith("BROKEN at seq 2: hash mismatch")
    assert "/docs answered 200" in failed["docs.hidden"]
    assert "/openapi.json answered 200" in failed["docs.hidden"]
    unchecked = {name for name, claim in claims.items() if claim["result"] == "not checked"}
    assert unchecked <= OPTIONAL, markdown
    assert "| **fail**: BROKEN at seq 2" in markdown
