"""The app factory reference (``module:callable``) that ``keel serve`` and ``keel dev`` build from.

Checked where it is given (a malformed reference is a ``ConfigurationError``),
imported in each worker (a missing one is gunicorn's ``AppImportError``).
Nothing is imported at import.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Final

from gunicorn.errors import AppImportError

from keel.errors import ConfigurationError
from keel.settings import Settings

__all__ = ["DEFAULT_FACTORY", "AppFactory", "check_factory_ref", "import_factory"]

DEFAULT_FACTORY: Final = "keel.api.app:create_app"

AppFactory = Callable[[Settings], object]

_FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def check_factory_ref(ref: str) -> None:
    """Raise ``ConfigurationError`` unless ``ref`` looks like ``package.module:callable``."""
    if not _FACTORY_REF.match(ref):
        raise ConfigurationError(
            f"app factory must look like 'package.module:callable', got {ref!r}"
        )


def import_factory(ref: str) -> AppFactory:
    """Import ``module:callable``; ``AppImportError`` (gunicorn exits 4, no boot loop) if absent."""
    check_factory_ref(ref)
    module_name, _, attribute = ref.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise AppImportError(f"cannot import the app factory {ref!r}: {exc}") from exc
    if not callable(target):
        raise AppImportError(f"the app factory {ref!r} is not callable")
    factory: AppFactory = target
    return factory
