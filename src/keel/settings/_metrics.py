"""What the Prometheus metrics need (``keel.metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from keel.settings._declare import env
from keel.settings._security import Secret

__all__ = ["MetricsSettings"]


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Collected unless ``KEEL_METRICS=false``; ``GET /metrics`` is served only with a token."""

    enabled: Annotated[bool, env("KEEL_METRICS")] = True
    token: Annotated[Secret, env("KEEL_METRICS_TOKEN")] = None
    #: gunicorn's multiprocess directory, emptied when the master starts; None: the
    #: runtime's default for this deployment (``keel.runtime.metrics_hooks``).
    directory: Annotated[
        Annotated[str, Field(min_length=1, max_length=4096)] | None, env("KEEL_METRICS_DIR")
    ] = None
