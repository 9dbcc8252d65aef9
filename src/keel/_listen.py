"""The rules for where keel listens: ``KEEL_BIND`` (an address) and ``PORT`` (a number).

gunicorn takes ``host:port`` and would accept ``KEEL_BIND=127.0.0.1:8000`` only
to fail later trying to bind host ``127.0.0.1:8000``; uvicorn cannot bind a
bracketed ``[::1]``. So both values are checked here, once, when ``Settings``
is built: ``KEEL_BIND`` becomes a bare IP address (IPv6 without brackets) or a
host name, ``PORT`` an integer from 1 to 65535. Anything else raises
:class:`ListenSettingError`, which carries a stable finding id and a hint
saying what to write instead (``keel check`` prints both).

keel listens on TCP only: a unix socket (``unix:/path``) is refused, since
the runtime, its health checks and its logs all speak of a host and a port.
Neither value is a secret, so a hint may repeat what was given.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_PORT",
    "ListenSettingError",
    "parse_bind",
    "parse_port",
]

DEFAULT_BIND: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
MAX_PORT: Final = 65535

# RFC 1123 §2.1 labels; a name whose last label is all digits is refused (RFC 3696 §2),
# which is what tells a mistyped IPv4 address (256.1.1.1) from a host name.
_LABEL: Final = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_BRACKETED: Final = re.compile(r"^\[(?P<host>[^\]]*)\](?::(?P<port>.*))?$")

_ADDRESS_HINT: Final = (
    "write an IP address or a host name and nothing else: KEEL_BIND=127.0.0.1 (this "
    "machine only), KEEL_BIND=0.0.0.0 (every IPv4 interface) or KEEL_BIND=:: (every IPv6 "
    "interface); the port goes in PORT"
)


class ListenSettingError(ValueError):
    """``KEEL_BIND`` or ``PORT`` cannot be listened on: ``finding_id``, ``message``, ``hint``."""

    def __init__(self, finding_id: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.finding_id = finding_id
        self.message = message
        self.hint = hint


def _not_an_address(
    message: str = "KEEL_BIND is not an IP address or a host name", hint: str = _ADDRESS_HINT
) -> ListenSettingError:
    return ListenSettingError("E023", message, hint)


def _has_port(host: str, port: str) -> ListenSettingError:
    number = int(port) if port.isdigit() and len(port) <= 5 else 0
    written = str(number) if 1 <= number <= MAX_PORT else "<a number from 1 to 65535>"
    return ListenSettingError(
        "E022",
        "KEEL_BIND includes a port",
        f"put the port in PORT: KEEL_BIND={host} PORT={written}",
    )


def _url_hint(url: str) -> str:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return _ADDRESS_HINT
    if host is None or not (_ip(host) or _is_host_name(host)):
        return _ADDRESS_HINT
    return f"write the address alone: KEEL_BIND={_ip(host) or host}" + (
        f" PORT={port}" if port else ""
    )


def _ip(text: str) -> str | None:
    """``text`` as a canonical IP address, or ``None``; zoned IPv6 (``%eth0``) is refused."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # gunicorn recognises IPv6 with inet_pton, which does not take a zone.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    return str(address)


def _is_host_name(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )


def parse_bind(value: str) -> str:
    """The address in ``value``: an IP address (IPv6 unbracketed) or a host name.

    Blank means unset (``127.0.0.1``). ``[::1]`` and ``::1`` both give ``::1``.
    Raises :class:`ListenSettingError`: E022 when a port is attached
    (``127.0.0.1:8000``, ``[::1]:8000``), E023 for anything that is not an
    address (``256.1.1.1``, ``exa mple``, ``unix:/run/keel.sock``, a URL).
    """
    text = value.strip()
    if not text:
        return DEFAULT_BIND
    if text.startswith(("unix:", "/", "fd://")):
        raise _not_an_address(
            "KEEL_BIND names a unix socket or a file descriptor; keel listens on TCP only",
            "listen on loopback and point the proxy there: KEEL_BIND=127.0.0.1 PORT=8000",
        )
    if "://" in text:
        raise _not_an_address("KEEL_BIND is a URL, not an address", _url_hint(text))
    bracketed = _BRACKETED.match(text)
    if bracketed is not None:
        inner = _ip(bracketed["host"]) if ":" in bracketed["host"] else None
        if inner is None:
            raise _not_an_address("KEEL_BIND has brackets around something that is not IPv6")
        if bracketed["port"] is not None:
            raise _has_port(inner, bracketed["port"])
        return inner
    address = _ip(text)
    if address is not None:
        return address
    host, sep, port = text.rpartition(":")
    if sep and not host and port.isdigit():  # gunicorn's ":8000", every interface
        raise _has_port("0.0.0.0", port)  # noqa: S104 - what ":8000" means
    if sep and ":" not in host and port.isdigit() and (_ip(host) or _is_host_name(host)):
        raise _has_port(host, port)
    if not _is_host_name(text):
        raise _not_an_address()
    return text


def parse_port(value: object) -> int:
    """``PORT`` as an integer from 1 to 65535; blank means unset (8000).

    Raises :class:`ListenSettingError` (E024) for anything else.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return DEFAULT_PORT
        number = int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else 0
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = 0
    if not 1 <= number <= MAX_PORT:
        raise ListenSettingError(
            "E024",
            "PORT is not a TCP port number",
            f"set PORT to a whole number from 1 to {MAX_PORT}, e.g. PORT={DEFAULT_PORT} "
            "(or unset it)",
        )
    return number
