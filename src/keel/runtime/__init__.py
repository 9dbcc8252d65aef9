"""keel.runtime."""
