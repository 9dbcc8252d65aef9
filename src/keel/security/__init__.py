"""keel.security."""
