"""keel.security: hashing, token and header primitives (pure, no web framework)."""

from keel.security.headers import HeaderPolicy

__all__ = ["HeaderPolicy"]
