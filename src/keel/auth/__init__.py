"""keel.auth (layer L4): not built yet."""

__all__: list[str] = []
