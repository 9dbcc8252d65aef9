"""Fixtures for the HTTP edge tests: a probe, a captured JSON log, the app behind keel's stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from tests.api.edge._app import LogCapture, Probe, build_app


@pytest.fixture
def log() -> Iterator[LogCapture]:
    capture = LogCapture()
    yield capture
    for handler in list(capture.logger.handlers):
        capture.logger.removeHandler(handler)
        handler.close()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def app(log: LogCapture, probe: Probe) -> FastAPI:
    return build_app(logger=log.logger, probe=probe)
