"""keel.cache."""
