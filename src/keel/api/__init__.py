"""keel.api."""

__all__: list[str] = []
