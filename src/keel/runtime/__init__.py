"""keel.runtime."""

__all__: list[str] = []
