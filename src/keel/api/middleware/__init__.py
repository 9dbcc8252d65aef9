"""keel.api.middleware."""
