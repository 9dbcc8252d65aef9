"""How a setting is declared: one annotated field of a section, named by its variable.

A section is a frozen dataclass. Each of its settings is one field whose
annotation carries ``env("KEEL_NAME", <bounds>)``: the environment variable,
and pydantic's constraints, written once. ``Settings`` validates every section
when it is built; a section constructed directly (tests, tools) is taken as
given. A field computed from other settings is ``derived(...)``: it has no
variable of its own.

The flat keyword of a setting is its variable without ``KEEL_``, in lower case
(``KEEL_SESSION_IDLE_TTL`` → ``session_idle_ttl``, ``DATABASE_URL`` →
``database_url``): ``Settings(session_idle_ttl=60)`` keeps working.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

__all__ = [
    "EnvSource",
    "declared",
    "derived",
    "env",
    "flat_name",
    "is_section",
    "split_csv",
    "walk",
]

_DERIVED = "keel_derived"


def env(name: str, **constraints: Any) -> Any:
    """The variable a setting is read from, with its bounds (``ge=``, ``pattern=``, ...)."""
    return Field(validation_alias=name, **constraints)


def derived(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field computed from other settings when ``Settings`` is built; no variable of its own."""
    return dataclasses.field(default=default, metadata={_DERIVED: True}, **kwargs)


def flat_name(env_name: str) -> str:
    """``KEEL_SESSION_IDLE_TTL`` → ``session_idle_ttl``; ``PORT`` → ``port``."""
    return env_name.removeprefix("KEEL_").lower()


def split_csv(value: object) -> object:
    """``"a, b,,c"`` → ``("a", "b", "c")``; anything else unchanged."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def is_section(annotation: object) -> bool:
    """A section is a dataclass (its fields are settings, derived values or sections)."""
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _alias(metadata: tuple[object, ...]) -> str | None:
    for item in metadata:
        if isinstance(item, FieldInfo) and isinstance(item.validation_alias, str):
            return item.validation_alias
    return None


def walk(section: type, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str | None]]:
    """Every field under ``section``: (attribute path, variable), the variable ``None`` if derived.

    Nested sections are walked; a field that is neither a setting nor
    ``derived`` raises ``TypeError`` (an undeclared field is a mistake).
    """
    hints = typing.get_type_hints(section, include_extras=True)
    for item in dataclasses.fields(section):
        hint = hints[item.name]
        if is_section(hint):
            yield from walk(hint, (*path, item.name))
            continue
        name = _alias(getattr(hint, "__metadata__", ()))
        if name is None and not item.metadata.get(_DERIVED):
            raise TypeError(f"{section.__name__}.{item.name} is neither env(...) nor derived()")
        yield (*path, item.name), name


def declared(settings_cls: type[BaseSettings]) -> dict[str, tuple[str, ...]]:
    """Variable → where its value goes: ``("sessions", "KEEL_SESSION_IDLE_TTL")``.

    The last part is the key the section validates (its alias); the parts
    before it name the section (and a nested section) on ``Settings``.
    """
    routes: dict[str, tuple[str, ...]] = {}
    for name, info in settings_cls.model_fields.items():
        annotation = info.annotation
        if is_section(annotation):
            assert isinstance(annotation, type)
            for path, variable in walk(annotation, (name,)):
                if variable is not None:
                    if variable in routes:
                        raise TypeError(f"{variable} is declared twice")
                    routes[variable] = (*path[:-1], variable)
        elif isinstance(info.validation_alias, str):
            if info.validation_alias in routes:
                raise TypeError(f"{info.validation_alias} is declared twice")
            routes[info.validation_alias] = (info.validation_alias,)
        else:
            raise TypeError(f"Settings.{name} is neither a section nor env(...)")
    return routes


class EnvSource(PydanticBaseSettingsSource):
    """The declared variables present in the environment, by flat keyword.

    Names are matched without regard to case, as keel always did. Values stay
    strings: the field's type and validators parse them (lists are
    comma-separated, never JSON).
    """

    def __init__(self, settings_cls: type[BaseSettings], variables: frozenset[str]) -> None:
        super().__init__(settings_cls)
        self._variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in os.environ.items():
            upper = key.upper()
            if upper in self._variables:
                found[flat_name(upper)] = value
        return found
