"""keel.audit (layer L3): the append-only, hash-chained audit trail."""

__all__: list[str] = []
