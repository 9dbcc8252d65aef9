"""``keel security-report`` without a healthy instance: what cannot run is "not checked",
what is wrong fails, and the exit status says so. (The real-server runs are in
tests/runtime/test_security_report.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keel.cli import main
from keel.db.migrate import upgrade
from keel.settings import Settings
from tests.runtime._harness import free_port

LIVE = (
    "headers.",
    "cors.",
    "http.",
    "framing.",
    "errors.",
    "docs.",
)


def _environment(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEEL_LOG_LEVEL", "WARNING")
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _claims(out: Path) -> dict[str, dict[str, Any]]:
    document = json.loads((out / "security-summary.json").read_text(encoding="utf-8"))
    return {claim["id"]: claim for claim in document["claims"]}


def test_a_weak_secret_in_production_fails_and_nothing_unprobed_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(
        monkeypatch,
        KEEL_ENV="production",
        DATABASE_URL=f"sqlite:///{tmp_path}/keel.sqlite3",
        SECRET_KEY="changeme-changeme-changeme-changeme",
    )
    status = main(["security-report", "--out", str(tmp_path / "out")])
    stdout = capsys.readouterr().out
    claims = _claims(tmp_path / "out")
    assert status == 1
    assert claims["config.findings"]["result"] == "fail"
    assert "keel.E003 SECRET_KEY looks like a placeholder" in claims["config.findings"]["evidence"]
    assert "FAIL        config.findings: The configuration has no `keel check` error" in stdout
    live = [claim for name, claim in claims.items() if name.startswith(LIVE)]
    assert len(live) == 12
    assert {claim["result"] for claim in live} == {"not checked"}
    assert {claim["evidence"] for claim in live} == {"no running instance to probe (give --url)"}
    # The secret itself is in neither file.
    for name in ("SECURITY_SUMMARY.md", "security-summary.json"):
        assert "changeme-changeme" not in (tmp_path / "out" / name).read_text(encoding="utf-8")


def test_an_instance_or_database_that_does_not_answer_is_not_checked_never_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _environment(
        monkeypatch,
        DATABASE_URL=f"postgresql://keel@127.0.0.1:{free_port()}/keel",
        KEEL_DB_CONNECT_TIMEOUT="1",
    )
    url = f"http://127.0.0.1:{free_port()}"
    status = main(["security-report", "--url", url, "--out", str(tmp_path)])
    strict = main(["security-report", "--url", url, "--out", str(tmp_path), "--strict"])
    capsys.readouterr()
    claims = _claims(tmp_path)
    assert (status, strict) == (0, 1)
    assert claims["audit.chain"]["result"] == "not checked"
    assert claims["audit.chain"]["evidence"] == (
        "the database is unavailable [database_unavailable]"
    )
    assert claims["db.migrations"]["result"] == "not checked"
    live = [claim for name, claim in claims.items() if name.startswith(LIVE)]
    assert {claim["result"] for claim in live} == {"not checked"}
    assert all(
        claim["evidence"].startswith(f"the instance did not answer: cannot connect to {url}")
        for claim in live
    )
    assert "pass" not in {claims[name]["result"] for name in ("audit.chain", "db.migrations")}


def test_the_json_document_goes_to_stdout_with_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/keel.sqlite3"
    _environment(monkeypatch, DATABASE_URL=url)
    upgrade(Settings(database_url=url).database)
    status = main(["security-report", "--json", "--out", str(tmp_path / "out")])
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "out" / "security-summary.json").read_text(encoding="utf-8"))
    assert status == 0
    assert printed == written
    assert written["totals"]["fail"] == 0
    assert {c["id"]: c["result"] for c in written["claims"]}["db.migrations"] == "pass"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "http://127.0.0.1:8000/api"])
def test_a_url_that_is_not_an_instance_root_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["security-report", "--url", url])
    assert exited.value.code == 2
    assert "the URL must" in capsys.readouterr().err
