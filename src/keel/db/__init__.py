"""keel.db."""
