"""Loopback network helpers shared by the tests."""

from __future__ import annotations

import socket

__all__ = ["closed_port"]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port
