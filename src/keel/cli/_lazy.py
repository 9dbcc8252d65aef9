"""Command handlers imported only when their command runs, so ``keel --help`` stays quick."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

__all__ = ["lazy_handler"]


def lazy_handler(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``module`` and calls its ``name`` on first use."""

    def handler(args: argparse.Namespace) -> int:
        status: int = getattr(importlib.import_module(module), name)(args)
        return status

    handler.__name__ = name
    return handler
